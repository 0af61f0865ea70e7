"""Reading the serve logs when a write was cut short: every reader (drift's, the live
accuracy's, the server's at start-up, `feedback import`'s) skips and counts a damaged line,
keeps the texts after it at their index, and refuses it, naming file and line, when strict."""

from __future__ import annotations

import datetime as dt

import pytest

from textclf.errors import UserError
from textclf.monitoring.inputs import read_prediction_logs
from textclf.monitoring.answers import join, logged_requests, read_feedback, scan_predictions
from textclf.monitoring.live import live_summary
from textclf.monitoring.log_reading import (CUT, GLUED, DamagedLines, LogLine, json_record,
                                            log_lines)
from textclf.serving.feedback import AnsweredRequests, FeedbackItem, FeedbackLog, feedback_lines
from textclf.serving.label_files import LabelRow, matched_feedback
from textclf.serving.log import log_file_name, log_lines as request_lines

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
LOG = log_file_name(T0.date(), 0)


def answer(label: str) -> dict:
    return {"label": label, "probability": 0.8,
            "probabilities": {"neg": 0.2, "pos": 0.8} if label == "pos" else
            {"neg": 0.8, "pos": 0.2}}


def request(request_id: str, texts: list[str], when: dt.datetime = T0) -> bytes:
    return request_lines(when, request_id, "v1", texts, [answer("pos")] * len(texts))


def damaged_log(folder) -> None:
    """`first` answered whole; `cut`'s write stopped halfway through its second line (a
    crash); a writer that did not look (before textclf serve did) glued `after` on."""
    cut = request("cut", ["three", "four", "five"], T0 + dt.timedelta(seconds=1))
    (folder / LOG).write_bytes(
        request("first", ["one", "two"]) + cut[:cut.index(b"\n") + 1 + 40]
        + request("after", ["six", "seven", "eight"], T0 + dt.timedelta(seconds=2)))


# one line ------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, problem", [
    (request("r", ["ok"])[:-1], None),
    (request("r", ["ok"])[:30], CUT),
    (request("r", ["ok"])[:30] + request("s", ["ok"])[:-1], GLUED),
    (b"\0\0\0" + request("s", ["ok"])[:-1], GLUED),           # a block the disk never wrote
    (b'{"time": 1, "text": "caf\xe9"}', "byte 25 is not valid UTF-8"),
    (b'{"text": "a", ', "not valid JSON"),
    (b"[1, 2]", "a JSON list, not an object"),
])
def test_a_line_is_one_json_object_or_damaged(tmp_path, line, problem):
    damaged, where = DamagedLines(), LogLine(tmp_path / LOG, 7)
    record = json_record(line, where, damaged)
    assert (record is None) == (problem is not None)
    if problem:
        assert damaged.count == 1 and damaged.lines == {where.path: {7}}
        with pytest.raises(UserError) as refused:
            json_record(line, where, DamagedLines(strict=True))
        assert str(refused.value).startswith(f"{tmp_path / LOG}, line 7: damaged line, ")
        assert problem in str(refused.value) and "--strict" in str(refused.value)


def test_lines_end_with_a_newline_and_a_count_names_files_and_first_lines(tmp_path):
    (tmp_path / LOG).write_bytes(b'{"a": 1}\n\n  \n{"b": 2}\n{"c": ')
    damaged = DamagedLines()
    assert [(where.number, line) for where, line in log_lines(tmp_path / LOG, damaged, True)
            ] == [(1, b'{"a": 1}'), (4, b'{"b": 2}')]   # the last may be a write under way
    assert damaged.count == 0
    assert len(list(log_lines(tmp_path / LOG, damaged, newest=False))) == 2
    assert damaged.lines == {tmp_path / LOG: {5}}         # a later file exists: cut short
    damaged = DamagedLines()
    for path, number, problem in ((tmp_path / "b.jsonl", 9, CUT), (tmp_path / LOG, 5, GLUED),
                                  (tmp_path / LOG, 3, CUT), (tmp_path / LOG, 5, GLUED)):
        damaged.skip(LogLine(path, number), problem)
    assert damaged.count == 3                               # line 5 was read twice
    message = damaged.message()
    assert message.startswith("Skipped 3 damaged log lines")
    assert f"{tmp_path / 'b.jsonl'} (1, the first at line 9)" in message
    assert f"{tmp_path / LOG} (2, the first at line 3)" in message
    assert "1 of them held a whole record glued to a cut one, lost with it" in message
    assert DamagedLines().message() == ""


# the drift report's reader -------------------------------------------------------------------

def test_drift_reads_around_damaged_lines_and_counts_them(tmp_path):
    damaged_log(tmp_path)
    with open(tmp_path / LOG, "ab") as log:
        log.write(b'{"time": "2026-11-28T12:00:03+00:00", "text": "caf\xe9"}\n[1]\n')
    counted = DamagedLines()
    window = read_prediction_logs(tmp_path, damaged=counted)
    # the glued line holds the cut record and the first of `after`: both are lost
    assert window.predictions.texts == ("one", "two", "three", "seven", "eight")
    assert counted.count == 3 and counted.lines == {tmp_path / LOG: {4, 7, 8}}
    assert len(counted.glued) == 1
    with pytest.raises(UserError, match=rf"{LOG}, line 4: damaged line, a record cut short, "
                                        rf"with the next record glued to it"):
        read_prediction_logs(tmp_path, damaged=DamagedLines(strict=True))


def test_a_log_of_damaged_lines_only_says_so(tmp_path):
    (tmp_path / LOG).write_bytes(b"\0\0\0\n")
    with pytest.raises(UserError, match=r"hold no predictions \(1 damaged lines skipped\)"):
        read_prediction_logs(tmp_path)


def test_a_foreign_record_is_still_refused_not_skipped(tmp_path):
    (tmp_path / LOG).write_text('{"time": "2026-11-28", "text": "a", "label": "x", '
                                '"probability": 2}\n')
    with pytest.raises(UserError, match=r"line 1: field 'probability' must be a number"):
        read_prediction_logs(tmp_path)


# the live accuracy's reader, and the server's --------------------------------------------

def test_texts_after_a_glued_line_keep_their_index(tmp_path):
    damaged_log(tmp_path)
    counted = DamagedLines()
    scanned = [(request_id, index) for request_id, index, _, _ in
               scan_predictions([tmp_path / LOG], counted)]
    assert scanned == [("first", 0), ("first", 1), ("cut", 0), ("after", 0), ("after", 1),
                       ("after", 2)]
    assert counted.lines == {tmp_path / LOG: {4}}
    # the server's index of answered requests, read back at start-up
    answered = AnsweredRequests.from_log(tmp_path)
    assert (answered.texts("first"), answered.texts("after")) == (2, 3)

    requests = logged_requests(tmp_path, {"after"})
    texts = requests["after"][0]
    assert [(t.index, t.text, t.damaged) for t in texts] == [
        (0, "", True), (1, "seven", False), (2, "eight", False)]
    assert texts[0].time == T0 + dt.timedelta(seconds=2)


def test_a_label_for_a_lost_text_is_unmatched_and_the_others_join(tmp_path):
    damaged_log(tmp_path)
    items = [FeedbackItem(request_id="after", index=i, label="pos") for i in range(3)]
    later = T0 + dt.timedelta(hours=1)
    FeedbackLog(tmp_path).append(later, feedback_lines(later, items, "api"))
    with open(next((tmp_path / "feedback").iterdir()), "ab") as log:
        log.write(b'{"time": "2026-11-28T13:00:00.000+00:00", "request_id": "aft\n')
    feedback = read_feedback(tmp_path)
    joined = join(feedback, logged_requests(tmp_path, {"after"}))
    assert [(i.prediction.index, i.prediction.text) for i in joined.labelled] == [
        (1, "seven"), (2, "eight")]
    assert joined.unmatched == {"text's log line damaged": 1}

    summary = live_summary(tmp_path, 0.9, min_labels=1)
    assert summary.damaged_lines == 2                      # one in each log
    assert summary.metrics()["damaged_log_lines"] == 2
    assert "2 damaged log lines skipped" in summary.to_markdown()
    with pytest.raises(UserError, match=r"feedback-2026-11-28.jsonl, line 4: damaged line"):
        live_summary(tmp_path, 0.9, damaged=DamagedLines(strict=True))


def test_feedback_import_reads_around_a_damaged_line(tmp_path):
    damaged_log(tmp_path)
    rows = [LabelRow("labels.csv, row 1", "pos", request_id="after", index=2),
            LabelRow("labels.csv, row 2", "pos", text="seven")]
    items, errors = matched_feedback(rows, tmp_path, T0 + dt.timedelta(hours=1))
    assert errors == []
    assert [(i.request_id, i.index) for i in items] == [("after", 2), ("after", 1)]
