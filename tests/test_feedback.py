"""Labels back from people: `POST /feedback`, `textclf feedback import`, and the live
accuracy report (textclf.monitoring.live) with its intervals and verdicts."""

from __future__ import annotations

import datetime as dt
import json
import re

import httpx
import numpy as np
import pytest

from serve_harness import build_model_folder, thread_server
from textclf import feedback as command
from textclf.errors import UserError
from textclf.metrics import macro_f1
from textclf.monitoring.answers import join, logged_requests, read_feedback
from textclf.monitoring.live import (NO_DROP, TOO_FEW, WORSE, bootstrap_macro_f1, live_summary,
                                     wilson_interval)
from textclf.serving.feedback import (MAX_ITEMS, AnsweredRequests, FeedbackItem, FeedbackLog,
                                      checked_feedback, feedback_lines)
from textclf.serving.log import PredictionLog, log_lines
from textclf.serving.protocol import ServeError

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
CLASSES = ["neg", "pos"]


def answer(label: str) -> dict:
    p = 0.9 if label == "pos" else 0.1
    return {"label": label, "probability": max(p, 1 - p),
            "probabilities": {"neg": round(1 - p, 6), "pos": p}}


def log_request(log_dir, request_id, predicted, when=T0, version="v1", texts=None):
    texts = texts or [f"{request_id} text {i}" for i in range(len(predicted))]
    PredictionLog(log_dir).append(when, log_lines(when, request_id, version, texts,
                                                  [answer(label) for label in predicted]))


def give(log_dir, labels, when=T0 + dt.timedelta(hours=1), source="api"):
    items = [FeedbackItem(request_id=r, index=i, label=label) for r, i, label in labels]
    FeedbackLog(log_dir).append(when, feedback_lines(when, items, source))


def labelled_log(log_dir, right: int, wrong: int, version="v1"):
    """A log of `right + wrong` one-text requests, each labelled `pos`."""
    predicted = ["pos"] * right + ["neg"] * wrong
    for i, label in enumerate(predicted):
        log_request(log_dir, f"{version}-r{i}", [label], version=version)
    give(log_dir, [(f"{version}-r{i}", 0, "pos") for i in range(len(predicted))])


# intervals ------------------------------------------------------------------------------

def test_wilson_interval_known_answers():
    # 8/10: centre (0.8 + z²/20) / (1 + z²/10), by hand 0.4902 to 0.9433
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=5e-4)
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(10, 10)[1] == 1
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_brackets_the_macro_f1():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.7, true, rng.integers(0, 3, 200))
    first = bootstrap_macro_f1(true, pred, 3, seed=7, resamples=300)
    assert first == bootstrap_macro_f1(true, pred, 3, seed=7, resamples=300)
    assert first != bootstrap_macro_f1(true, pred, 3, seed=8, resamples=300)
    point = macro_f1(true.tolist(), pred.tolist(), [0, 1, 2])
    assert first[0] < point < first[1] and first[1] - first[0] < 0.2
    assert bootstrap_macro_f1(true, true, 3, seed=0, resamples=50) == (1.0, 1.0)


# the join and the verdicts --------------------------------------------------------------

def test_last_label_wins_and_unmatched_labels_are_counted(tmp_path):
    log_request(tmp_path, "a", ["pos", "neg"])
    give(tmp_path, [("a", 0, "neg"), ("a", 1, "neg"), ("a", 0, "pos"),      # a correction
                    ("gone", 0, "pos"), ("a", 2, "pos"), ("a", 1, "maybe")])
    feedback = read_feedback(tmp_path)
    joined = join(feedback, logged_requests(tmp_path, {f.request_id for f in feedback}))
    assert [(i.prediction.index, i.prediction.predicted, i.label) for i in joined.labelled] \
        == [(1, "neg", "neg"), (0, "pos", "pos")]
    assert joined.received == 6 and joined.replaced == 1
    assert joined.unmatched == {"request not in the prediction log": 1,
                                "index out of range": 1, "label unknown to the model": 1}


def test_a_reused_request_id_means_the_request_answered_last_before_the_label(tmp_path):
    log_request(tmp_path, "same", ["pos"], when=T0)
    give(tmp_path, [("same", 0, "pos")], when=T0 + dt.timedelta(minutes=1))
    log_request(tmp_path, "same", ["neg", "neg"], when=T0 + dt.timedelta(minutes=2))
    give(tmp_path, [("same", 1, "pos")], when=T0 + dt.timedelta(minutes=3))
    summary = live_summary(tmp_path, 0.5, min_labels=1)
    assert summary.current.labelled == 2 and summary.current.accuracy == 0.5


@pytest.mark.parametrize("right, wrong, verdict", [(20, 20, WORSE), (38, 2, NO_DROP),
                                                    (5, 5, TOO_FEW)])
def test_verdicts(tmp_path, right, wrong, verdict):
    labelled_log(tmp_path, right, wrong)
    summary = live_summary(tmp_path, test_accuracy=0.9, min_labels=30)
    assert summary.verdict == verdict and summary.worse == (verdict == WORSE)
    low, high = summary.current.accuracy_interval
    assert summary.current.accuracy == right / (right + wrong)
    assert low == pytest.approx(wilson_interval(right, right + wrong)[0])
    metrics = summary.metrics()
    assert metrics["worse_than_test"] == int(verdict == WORSE)
    assert metrics["current"]["labelled"] == right + wrong
    assert metrics["current"]["recall"] == {"pos": round(right / (right + wrong), 4)}


def test_versions_are_scored_apart_and_the_latest_decides(tmp_path):
    labelled_log(tmp_path, 10, 30, version="old")
    for i in range(40):
        log_request(tmp_path, f"new-{i}", ["pos"], when=T0 + dt.timedelta(days=1), version="new")
    give(tmp_path, [(f"new-{i}", 0, "pos") for i in range(40)], when=T0 + dt.timedelta(days=2))
    summary = live_summary(tmp_path, test_accuracy=0.8)
    assert [(v.model_version, v.verdict) for v in summary.versions] == [("new", NO_DROP),
                                                                        ("old", WORSE)]
    assert summary.verdict == NO_DROP and set(summary.metrics()["versions"]) == {"new", "old"}


def test_a_new_version_without_labels_yet_is_the_current_one(tmp_path):
    labelled_log(tmp_path, 10, 30, version="old")            # worse than test
    for i in range(5):       # the fix, answering now: nobody has labelled its answers yet
        log_request(tmp_path, f"fix-{i}", ["pos"], when=T0 + dt.timedelta(days=1),
                    version="v3-fix")
    summary = live_summary(tmp_path, test_accuracy=0.8)
    assert summary.answering == "v3-fix" and summary.current is None
    assert summary.verdict == TOO_FEW and not summary.worse
    assert [v.model_version for v in summary.versions] == ["old"]     # still shown
    assert "model v3-fix answers now and none of its answers has a label yet" in \
        summary.to_markdown()
    assert summary.metrics()["worse_than_test"] == 0


def test_no_labels_yet_is_too_few(tmp_path):
    log_request(tmp_path, "a", ["pos"])
    summary = live_summary(tmp_path, 0.9)
    assert summary.verdict == TOO_FEW and summary.current is None
    assert "no label matches" in summary.to_markdown()


def test_markdown_escapes_texts_and_labels(tmp_path):
    texts = ["<script>alert(1)</script> | *bold*", "<img src=x onerror=alert(1)>",
             "a|b", "one\ntwo"]
    log_request(tmp_path, "<b>x</b>", ["pos"] * len(texts), texts=texts,
                version="<img src=y onerror=alert(2)>|v")
    give(tmp_path, [("<b>x</b>", i, "neg") for i in range(len(texts))])
    page = live_summary(tmp_path, 0.9, min_labels=1).to_markdown(level=2)
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\| \\*bold\\*" in page
    assert "| one<br>two |" in page
    assert page.startswith("## Live accuracy: worse than test")
    for table in (b.splitlines() for b in page.split("\n\n") if b.startswith("|")):
        widths = {len(re.split(r"(?<!\\)\|", line.strip())) for line in table}
        assert len(widths) == 1, table                    # no cell broke out of its row
    disagreements = page.split("## Latest disagreements")[1]
    assert disagreements.count("\n| &lt;b&gt;x&lt;/b&gt; |") == len(texts)


# POST /feedback bodies --------------------------------------------------------------------

@pytest.fixture
def answered():
    index = AnsweredRequests(window=3)
    index.add("req-1", 2)
    return index


def check(body, answered):
    return checked_feedback(json.dumps(body).encode() if not isinstance(body, bytes) else body,
                            answered, tuple(CLASSES))


@pytest.mark.parametrize("body, status, names", [
    (b'{"request_id": "req-1", ', 400, "malformed JSON"),
    ({"request_id": "nope", "index": 0, "label": "pos"}, 404, "'nope'"),
    ({"request_id": "req-1", "index": 2, "label": "pos"}, 422,
     "index: 2 is out of range; request 'req-1' had 2 texts (index 0 to 1)"),
    ({"request_id": "req-1", "index": 0, "label": "great"}, 422,
     "label: unknown label 'great'; expected one of the labels of the model that answered "
     "it: neg, pos"),
    ({"request_id": "req-1", "index": "0", "label": "pos"}, 422, "index: "),
    ({"request_id": "req-1", "index": True, "label": "pos"}, 422, "index: "),
    ({"request_id": 1, "index": 0, "label": "pos"}, 422, "request_id: "),
    ({"request_id": "req-1", "index": 0}, 422, "label: Field required"),
    ({"request_id": "req-1", "index": 0, "label": "pos", "lable": "x"}, 422,
     "lable: unknown field"),
    ([{"request_id": "req-1", "index": 0, "label": "pos"}, "pos"], 422,
     "[1]: expected an object"),
    ([{"request_id": "req-1", "index": 0, "label": "pos"},
      {"request_id": "req-1", "index": -1, "label": "pos"}], 422, "[1].index: -1 is out"),
    ([], 422, "request body: expected one label"),
    ("pos", 422, "request body: expected one label"),
    ([{"request_id": "req-1", "index": 0, "label": "pos"}] * (MAX_ITEMS + 1), 413, "split"),
])
def test_bad_feedback_is_refused_naming_the_field(answered, body, status, names):
    with pytest.raises(ServeError) as refused:
        check(body, answered)
    assert refused.value.status == status and names in refused.value.message


def test_good_feedback_one_or_many(answered):
    assert check({"request_id": "req-1", "index": 1, "label": " pos "}, answered) == [
        FeedbackItem(request_id="req-1", index=1, label="pos")]
    assert len(check([{"request_id": "req-1", "index": i, "label": "neg"} for i in (0, 1, 0)],
                     answered)) == 3


def test_a_label_is_checked_against_the_model_that_answered_the_request(tmp_path):
    """A new version with other classes is loaded: labels for texts the old one answered
    are its classes (the report matches them); new requests take the new ones."""
    index = AnsweredRequests(window=5)
    index.add("old", 1, ("neg", "pos"))
    index.add("new", 1, ("LABEL_0", "LABEL_1", "LABEL_2"))
    served_now = ("LABEL_0", "LABEL_1", "LABEL_2")
    body = [{"request_id": "old", "index": 0, "label": "pos"},
            {"request_id": "new", "index": 0, "label": "LABEL_2"}]

    assert [i.label for i in checked_feedback(json.dumps(body).encode(), index, served_now)] \
        == ["pos", "LABEL_2"]
    with pytest.raises(ServeError, match=r"\[0\].label: unknown label 'LABEL_1'; expected one "
                                         r"of the labels of the model that answered it: neg, "
                                         r"pos"):
        checked_feedback(json.dumps([{"request_id": "old", "index": 0, "label": "LABEL_1"}]
                                    ).encode(), index, served_now)
    log_request(tmp_path, "x", ["pos", "neg"])            # read back from the log
    assert AnsweredRequests.from_log(tmp_path).classes("x") == tuple(CLASSES)


def test_answered_requests_are_bounded_and_read_back_from_the_log(tmp_path):
    index = AnsweredRequests(window=2)
    for name in "abc":
        index.add(name, 1)
    assert index.texts("a") is None and index.texts("c") == 1 and len(index) == 2
    log_request(tmp_path, "x", ["pos", "neg", "pos"])
    log_request(tmp_path, "y", ["pos"], when=T0 + dt.timedelta(days=1))
    log_request(tmp_path, "x", ["pos"], when=T0 + dt.timedelta(days=1, seconds=1))
    with open(tmp_path / "predictions-2026-11-29.jsonl", "ab") as cut:
        cut.write(b'{"time": "2026-11-29T13:00:00.000+00:00", "request_id": "z", "te')
    back = AnsweredRequests.from_log(tmp_path, window=10)
    assert (back.texts("x"), back.texts("y"), back.texts("z")) == (1, 1, None)
    assert AnsweredRequests.from_log(tmp_path, window=1).texts("y") is None


def test_the_feedback_log_never_holds_a_partial_line(tmp_path):
    log = FeedbackLog(tmp_path, max_bytes=300)
    for i in range(40):
        items = [FeedbackItem(request_id=f"r{i}", index=j, label="pos") for j in range(i % 3 + 1)]
        log.append(T0 + dt.timedelta(hours=i), feedback_lines(T0, items, "api"))
    files = sorted((tmp_path / "feedback").iterdir())
    assert len(files) > 3
    lines = []
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n")
        lines += [json.loads(line) for line in data.decode().splitlines()]
    assert len(lines) == sum(i % 3 + 1 for i in range(40)) == len(read_feedback(tmp_path))
    assert set(lines[0]) == {"time", "request_id", "index", "label", "source"}


# textclf feedback import -----------------------------------------------------------------

def test_import_by_id_by_text_and_from_label_studio(tmp_path, capsys):
    log_request(tmp_path, "a", ["pos", "neg"], texts=["Great  phone", "bad case"])
    log_request(tmp_path, "b", ["neg"], texts=["great phone"])
    (tmp_path / "ids.csv").write_text("request_id,index,label\na,1,pos\n")
    (tmp_path / "texts.jsonl").write_text('{"text": "great\\u00a0phone", "label": "pos"}\n')
    studio = [{"id": 1, "data": {"text": "bad case"},
               "annotations": [{"result": [{"type": "choices", "from_name": "sentiment",
                                            "to_name": "text",
                                            "value": {"choices": ["neg"]}}]},
                               {"was_cancelled": True, "result": []}]},
              {"id": 2, "data": {"text": "Great  phone"}, "annotations": []},
              # no text: request_id and index say which (docs/feedback.md); a
              # was_cancelled that is not true does not cancel
              {"id": 3, "data": {"request_id": "a", "index": 0},
               "annotations": [{"was_cancelled": "no", "result": [
                   {"type": "choices", "value": {"choices": ["pos"]}}]}]}]
    (tmp_path / "export.json").write_text(json.dumps(studio))
    (tmp_path / "checked.csv").write_text("request_id,index,text,label\na,1,bad  case,neg\n")
    for name in ("ids.csv", "texts.jsonl", "export.json", "checked.csv"):
        command.main(["import", str(tmp_path / name), "--log-dir", str(tmp_path)])
    assert "1 tasks without an annotation skipped" in capsys.readouterr().err
    assert [(f.request_id, f.index, f.label, f.source) for f in read_feedback(tmp_path)] == [
        ("a", 1, "pos", "import:ids.csv"), ("b", 0, "pos", "import:texts.jsonl"),
        ("a", 1, "neg", "import:export.json"), ("a", 0, "pos", "import:export.json"),
        ("a", 1, "neg", "import:checked.csv")]


def test_every_bad_import_row_is_listed_at_once_in_file_order(tmp_path, capsys):
    log_request(tmp_path, "a", ["pos", "neg"])
    (tmp_path / "rows.csv").write_text("request_id,index,label\nzz,0,pos\na,x,pos\n"
                                       "a,0,meh\na,0,pos\n")
    with pytest.raises(SystemExit):
        command.main(["import", str(tmp_path / "rows.csv"), "--log-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "3 bad rows, nothing imported" in err
    assert [line.split(",")[1].strip() for line in err.splitlines()[1:]] == [
        "row 1", "row 2", "row 3"]                 # unknown id, bad index, unknown label
    assert not (tmp_path / "feedback").exists()


def test_import_refuses_a_file_where_the_feedback_folder_goes(tmp_path, capsys):
    log_request(tmp_path, "a", ["pos"])
    (tmp_path / "feedback").write_text("not a folder")
    (tmp_path / "ids.csv").write_text("request_id,index,label\na,0,pos\n")
    with pytest.raises(SystemExit) as exited:
        command.main(["import", str(tmp_path / "ids.csv"), "--log-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "feedback is a file; expected the folder" in err, err
    assert (tmp_path / "feedback").read_text() == "not a folder"


@pytest.mark.parametrize("name, content, names", [
    ("rows.csv", "request_id,index,label\na,x,pos\n", "rows.csv, row 1, field 'index'"),
    ("rows.csv", "request_id,index,label\na,\u00b2,pos\n", "rows.csv, row 1, field 'index'"),
    ("ls.json", json.dumps([{"data": {"text": "a text 0", "request_id": "a", "index": "\u00b2"},
                             "annotations": [{"result": [{"type": "choices", "value": {
                                 "choices": ["pos"]}}]}]}]), "ls.json, task 1, field 'data.index'"),
    ("rows.csv", "request_id,index,label\nzz,0,pos\n", "rows.csv, row 1, field 'request_id'"),
    ("rows.csv", "request_id,index,label\na,0,pos\na,5,pos\n", "rows.csv, row 2, field 'index'"),
    ("rows.csv", "request_id,index,label\na,0,meh\n",
     "rows.csv, row 1, field 'label': unknown label 'meh'; expected one of the model's "
     "labels: neg, pos"),
    ("rows.tsv", "text\tlabel\nnever logged\tpos\n", "rows.tsv, row 1, field 'text'"),
    ("rows.jsonl", '{"text": "a text 0", "label": ""}\n', "rows.jsonl, row 1, field 'label'"),
    ("rows.jsonl", '{"text": "a text 0", "label": "pos"}\n{"text": 3', "rows.jsonl, line 2"),
    ("rows.csv", "words,label\nhi,pos\n", "expected columns request_id, index, label or text"),
    ("ls.json", json.dumps([{"id": 9, "data": {"text": "a text 0"},
                             "annotations": [{"result": [{"type": "choices", "value": {}}]}]}]),
     "ls.json, task 1 (id 9), field 'annotations[0].result[].value.choices': expected a list "
     "of one label, found None"),
    ("ls.json", json.dumps([{"data": {"text": "a text 0"},
                             "annotations": [{"result": [{"value": {"choices": []}}]}]}]),
     "ls.json, task 1, field 'annotations[0].result': expected one choices result holding "
     "the chosen label, found 0"),
    ("ls.json", json.dumps([{"annotations": []}]), "ls.json, task 1, field 'data'"),
    ("ls.json", json.dumps({"tasks": []}), "expected a Label Studio JSON export"),
    ("ls.json", "[{", "not a Label Studio JSON export"),
    ("ls.json", "[" * 100_000, "not a Label Studio JSON export (nested too deeply"),
    ("rows.csv", "request_id,index,text,label\na,1,a text 0,pos\n",
     "rows.csv, row 1, field 'text': 'a text 0' is not text 1 of request 'a', which was "
     "'a text 1'"),
    ("rows.csv", "request_id,index,label\ntwice,0,pos\n",
     "rows.csv, row 1, field 'request_id': 'twice' was answered 2 times with different "
     "texts at index 0"),
])
def test_bad_import_rows_are_one_line_errors_and_nothing_is_written(tmp_path, capsys, name,
                                                                    content, names):
    log_request(tmp_path, "a", ["pos", "neg"])
    log_request(tmp_path, "twice", ["pos"], texts=["first text"])     # clients may reuse ids
    log_request(tmp_path, "twice", ["pos"], when=T0 + dt.timedelta(minutes=1),
                texts=["second text"])
    (tmp_path / name).write_text(content)
    with pytest.raises(SystemExit) as exited:
        command.main(["import", str(tmp_path / name), "--log-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and names in err, err
    assert not (tmp_path / "feedback").exists()


# the command and the server, end to end ----------------------------------------------------

def test_report_command_writes_markdown_and_metrics_and_fails_on_worse(tmp_path):
    labelled_log(tmp_path / "logs", 20, 20)
    (tmp_path / "test.json").write_text('{"accuracy": 0.9}')
    argv = ["report", "--log-dir", str(tmp_path / "logs"), "--test-metrics",
            str(tmp_path / "test.json"), "--out", str(tmp_path / "live.md"),
            "--metrics", str(tmp_path / "live.json")]
    command.main(argv)
    assert json.loads((tmp_path / "live.json").read_text())["worse_than_test"] == 1
    assert (tmp_path / "live.md").read_text().startswith("# Live accuracy: worse than test")
    with pytest.raises(SystemExit) as exited:
        command.main([*argv, "--fail-on-worse"])
    assert exited.value.code == 1
    (tmp_path / "test.json").write_text('{"f1_macro": 0.9}')
    with pytest.raises(UserError, match="field 'accuracy'"):
        command.read_test_accuracy(tmp_path / "test.json")


@pytest.mark.parametrize("case, message", [
    ("no logs in the folder", "no prediction logs (predictions-YYYY-MM-DD[-N].jsonl) in it"),
    ("metrics over the test metrics", "--metrics"),
    ("a file where the report's folder goes", "is a file, not a folder"),
    ("the report over the prediction log", "is the --log-dir file"),
    ("the metrics over the feedback log", "is the --log-dir file"),
])
def test_report_command_refuses_before_writing_anything(tmp_path, capsys, case, message):
    labelled_log(tmp_path / "logs", 20, 20)
    (tmp_path / "empty").mkdir()
    (tmp_path / "test.json").write_text('{"accuracy": 0.9}')
    argv = {"no logs in the folder": ["--log-dir", tmp_path / "empty"],
            "metrics over the test metrics": ["--metrics", tmp_path / "test.json"],
            "a file where the report's folder goes": ["--out", tmp_path / "test.json" / "a.md"],
            "the report over the prediction log": [
                "--out", next((tmp_path / "logs").glob("predictions-*.jsonl"))],
            "the metrics over the feedback log": [
                "--metrics", next((tmp_path / "logs" / "feedback").glob("feedback-*.jsonl"))],
            }[case]
    logs_before = {p: p.read_bytes() for p in (tmp_path / "logs").rglob("*.jsonl")}
    defaults = ["--log-dir", tmp_path / "logs", "--test-metrics", tmp_path / "test.json",
                "--out", tmp_path / "live.md", "--metrics", tmp_path / "live.json"]
    with pytest.raises(SystemExit) as exited:
        command.main(["report", *map(str, defaults + argv)])    # the last flag wins
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "live.md").exists() and not (tmp_path / "live.json").exists()
    assert (tmp_path / "test.json").read_text() == '{"accuracy": 0.9}'
    assert {p: p.read_bytes() for p in (tmp_path / "logs").rglob("*.jsonl")} == logs_before


def test_report_command_skips_damaged_lines_and_names_them_or_refuses_with_strict(
        tmp_path, capsys):
    logs = tmp_path / "logs"
    labelled_log(logs, 20, 0)
    log = next(logs.glob("predictions-*.jsonl"))
    with open(log, "ab") as cut:            # a crash; the server goes on in the next file
        cut.write(b'{"time": "2026-11-28T12:00:00.000+00:00", "req')
    log_request(logs, "late", ["pos"])
    assert len(list(logs.glob("predictions-*.jsonl"))) == 2
    argv = ["report", "--log-dir", str(logs), "--test-metrics", str(tmp_path / "test.json"),
            "--out", str(tmp_path / "live.md"), "--metrics", str(tmp_path / "live.json")]
    (tmp_path / "test.json").write_text('{"accuracy": 0.5}')
    command.main(argv)
    err = capsys.readouterr().err
    assert "Skipped 1 damaged log line" in err and f"{log} (1, the first at line 21)" in err
    assert json.loads((tmp_path / "live.json").read_text())["damaged_log_lines"] == 1
    assert json.loads((tmp_path / "live.json").read_text())["current"]["labelled"] == 20
    with pytest.raises(SystemExit) as refused:
        command.main([*argv, "--strict"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {log}, line 21: damaged line, a record cut short")


@pytest.fixture(scope="module")
def model_folder(tiny_model_dir, tmp_path_factory):
    return build_model_folder(tiny_model_dir, tmp_path_factory.mktemp("served") / "clf")


def test_serve_label_restart_and_report(model_folder, tmp_path):
    logs = tmp_path / "logs"
    argv = ["--model", str(model_folder), "--log-dir", str(logs), "--threads", "1",
            "--precision", "fp32"]
    texts = ["the food was awful dreadful", "a poor weak film", "okay average room",
             "good nice phone", "superb brilliant book"]
    with thread_server(argv) as (url, _):
        first = httpx.post(f"{url}/predict", json={"texts": texts[:3]}).json()
        second = httpx.post(f"{url}/v2/models/clf/infer", json={"id": "mine", "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [2], "data": texts[3:]}]}).json()
        labels = [{"request_id": first["id"], "index": 0, "label": "very negative"},
                  {"request_id": first["id"], "index": 2, "label": "positive"}]
        ok = httpx.post(f"{url}/feedback", json=labels)
        assert (ok.status_code, ok.json()) == (200, {"accepted": 2})
        fix = httpx.post(f"{url}/feedback", json={"request_id": first["id"], "index": 2,
                                                  "label": "neutral"})     # a correction
        assert fix.status_code == 200
        for body, status, names in [
                ({"request_id": "unknown", "index": 0, "label": "neutral"}, 404, "'unknown'"),
                ({"request_id": "mine", "index": 2, "label": "neutral"}, 422, "index: 2"),
                ({"request_id": "mine", "index": 0, "label": "fine"}, 422, "very positive")]:
            refused = httpx.post(f"{url}/feedback", json=body)
            assert refused.status_code == status and names in refused.json()["error"]
        bad = httpx.post(f"{url}/feedback", content=b"{not json")
        assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
    with thread_server(argv) as (url, _):          # a restart still knows "mine"
        late = httpx.post(f"{url}/feedback", json={"request_id": "mine", "index": 1,
                                                   "label": "very positive"})
        assert late.status_code == 200, late.text
    # live accuracy by hand, from the prediction log
    logged = [json.loads(line) for path in sorted(logs.glob("predictions-*.jsonl"))
              for line in path.read_text().splitlines()]
    predicted = {(r["request_id"], i): r["label"] for rid in (first["id"], "mine")
                 for i, r in enumerate(x for x in logged if x["request_id"] == rid)}
    truth = {(first["id"], 0): "very negative", (first["id"], 2): "neutral",
             ("mine", 1): "very positive"}
    by_hand = sum(predicted[key] == label for key, label in truth.items()) / len(truth)
    assert second["model_version"] == first["model_version"]
    (tmp_path / "test.json").write_text('{"accuracy": 0.5}')
    command.main(["report", "--log-dir", str(logs), "--test-metrics",
                  str(tmp_path / "test.json"), "--out", str(tmp_path / "live.md"),
                  "--metrics", str(tmp_path / "live.json"), "--min-labels", "1"])
    metrics = json.loads((tmp_path / "live.json").read_text())
    assert metrics["current"]["labelled"] == 3 and metrics["labels"]["replaced"] == 1
    assert metrics["current"]["accuracy"] == round(by_hand, 4)
    for path in (logs / "feedback").iterdir():
        assert path.read_bytes().endswith(b"\n")


def test_no_log_turns_feedback_off(model_folder, tmp_path):
    with thread_server(["--model", str(model_folder), "--log-dir", str(tmp_path / "logs"),
                        "--no-log", "--threads", "1"]) as (url, _):
        answer_id = httpx.post(f"{url}/predict", json={"texts": ["good"]}).json()["id"]
        off = httpx.post(f"{url}/feedback", json={"request_id": answer_id, "index": 0,
                                                  "label": "positive"})
    assert off.status_code == 409 and "--no-log" in off.json()["error"]
    assert not (tmp_path / "logs").exists()


def test_a_label_for_a_text_whose_log_line_is_damaged_is_refused_saying_so(tmp_path, capsys):
    log_request(tmp_path, "a", ["pos", "neg", "pos"])
    log = next(tmp_path.glob("predictions-*.jsonl"))
    lines = log.read_bytes().splitlines(keepends=True)
    # A write cut short (a full disk, before this version's writer cut such writes back):
    # text 0 whole, text 1 cut after its request id, text 2 never written.
    log.write_bytes(lines[0] + lines[1][:80] + b"\n")
    log_request(tmp_path, "b", ["neg"])
    (tmp_path / "ids.csv").write_text("request_id,index,label\na,1,pos\n")
    with pytest.raises(SystemExit) as exited:
        command.main(["import", str(tmp_path / "ids.csv"), "--log-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "ids.csv, row 1: the prediction log line of text 1 of request 'a' is damaged" in err
    (tmp_path / "ids.csv").write_text("request_id,index,label\na,0,pos\nb,0,pos\n")
    command.main(["import", str(tmp_path / "ids.csv"), "--log-dir", str(tmp_path)])
    assert [(f.request_id, f.index) for f in read_feedback(tmp_path)] == [("a", 0), ("b", 0)]
