"""The drift report: its statistics, its verdict on unchanged and changed data, the command."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, SST5, toy_reviews
from textclf import drift
from textclf.errors import UserError
from textclf.monitoring.inputs import Predictions, read_prediction_logs
from textclf.monitoring.log_reading import DamagedLines
from textclf.monitoring.page import render
from textclf.monitoring.report import Sources, compare
from textclf.monitoring.stats import (MIN_AUC, chi_squared, confidence_shift, domain_classifier,
                                      label_shift, permutation_auc_threshold, psi, text_profile,
                                      vocabulary_of)
from textclf.serving.log import log_file_name, log_lines

SOURCES = Sources("ref", "cur", "test", "v1")

# --- statistics ---------------------------------------------------------------------------


def test_psi_is_zero_for_identical_distributions_whatever_the_sizes():
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    assert psi([10, 20, 30], [100, 200, 300]) == pytest.approx(0.0, abs=1e-12)


def test_psi_matches_the_formula_is_symmetric_and_finite_for_an_empty_bin():
    # (0.9 - 0.5) ln(0.9/0.5) + (0.1 - 0.5) ln(0.1/0.5)
    expected = 0.4 * math.log(1.8) - 0.4 * math.log(0.2)
    assert psi([50, 50], [90, 10]) == pytest.approx(expected)
    assert psi([90, 10], [50, 50]) == pytest.approx(expected)
    assert math.isfinite(psi([50, 50, 0], [40, 40, 20])) and psi([50, 50, 0], [40, 40, 20]) > 1
    with pytest.raises(ValueError):
        psi([0, 0], [1, 2])


def test_chi_squared_sees_a_shift_and_ignores_labels_absent_on_both_sides():
    assert chi_squared([30, 30, 30], [30, 30, 30]) == (0.0, 1.0)
    assert chi_squared([30, 30, 30, 0], [30, 30, 30, 0]) == (0.0, 1.0)
    assert chi_squared([50, 0], [50, 0]) == (0.0, 1.0)     # one label only: nothing to test
    _, p = chi_squared([100, 100, 100], [10, 10, 280])
    assert p < 1e-10


def test_label_shift_needs_both_significance_and_size():
    labels = ["a", "b"]
    big = label_shift(["a"] * 500 + ["b"] * 500, ["a"] * 900 + ["b"] * 100, labels)
    assert big.drifted and big.psi > 0.25
    # 10,000 a side: a 2-point move is significant but too small to matter (PSI < 0.1).
    small = label_shift(["a"] * 5000 + ["b"] * 5000, ["a"] * 5200 + ["b"] * 4800, labels)
    assert small.p_value < small.alpha and not small.drifted
    unknown = label_shift(["a", "b"] * 20, ["a", "c"] * 20, labels)
    assert unknown.labels == ("a", "b", "c") and unknown.current_counts == (20, 0, 20)


def test_permutation_threshold_matches_the_mann_whitney_null():
    rng = np.random.default_rng(0)
    scores, sides = rng.random(400), np.r_[np.zeros(200, int), np.ones(200, int)]
    # Normal approximation of the AUC under H0: sd = sqrt((n1 + n0 + 1) / (12 n1 n0)).
    expected = 0.5 + 1.96 * math.sqrt(401 / (12 * 200 * 200))
    assert permutation_auc_threshold(scores, sides, alpha=0.025) == pytest.approx(expected,
                                                                                 abs=0.01)


def test_text_profile_counts_words_and_unseen_words():
    vocabulary = vocabulary_of(["the battery is good", "the screen"])
    profile = text_profile(["The battery died", "a new screen protector"], vocabulary)
    # Words of 2+ letters, lowercased: "a" is not a word token.
    assert (profile.rows, profile.mean_words, profile.median_words) == (2, 3.0, 3.0)
    assert profile.oov_rate == pytest.approx(3 / 6)      # died, new, protector


def test_confidence_shift_histograms_are_shares():
    shift = confidence_shift([0.9] * 10, [0.55] * 5 + [0.95] * 5)
    assert shift.shift == pytest.approx(-0.15)
    assert sum(shift.current_histogram) == pytest.approx(1.0)
    assert shift.current_histogram[5] == 0.5 and shift.expected_histogram[9] == 1.0


def test_domain_classifier_finds_the_words_and_texts_that_differ():
    reference = [f"the phone battery lasts {i} hours" for i in range(60)]
    current = [f"the film plot drags for {i} minutes" for i in range(60)]
    result = domain_classifier(reference, current)
    assert result.auc > 0.95 and result.drifted
    assert {"film", "plot"} & {w for w, _ in result.words_current[:4]}
    assert {"phone", "battery"} & {w for w, _ in result.words_reference[:4]}
    assert all("film" in t for t in result.examples_current)
    assert all("phone" in t for t in result.examples_reference)


# --- validation (issue 11, item 3) ---------------------------------------------------------


def _perfect_model(frame: pd.DataFrame) -> Predictions:
    """The gold labels stand in for a model's predictions; the verdict's rule is what is
    under test, and any fixed model's predictions of random halves are as exchangeable."""
    return Predictions(tuple(frame.text), tuple(frame.label), tuple([0.9] * len(frame)))


def _report_on_random_split(data: pd.DataFrame, seed: int):
    """Split unchanged data into test 20% / reference 40% / current 40%: should not drift."""
    rows = data.iloc[np.random.default_rng(seed).permutation(len(data))]
    cut1, cut2 = len(rows) // 5, len(rows) * 3 // 5
    test, reference, current = rows.iloc[:cut1], rows.iloc[cut1:cut2], rows.iloc[cut2:]
    return compare(list(reference.text), _perfect_model(test), _perfect_model(current),
                   sorted(data.label.unique()), SOURCES, seed=seed)


def test_random_halves_of_the_same_data_are_not_flagged():
    data = pd.read_csv(REPO / "data" / "reviews.csv")
    reports = [_report_on_random_split(data, seed) for seed in range(20)]
    alarms = sum(report.drifted for report in reports)
    # The rule's design rate is <= 5% (two tests at 2.5%); 20 splits estimate it coarsely,
    # so allow binomial noise (P(>= 3 of 20) < 8% at a 5% rate); the benchmark runs 200.
    assert alarms <= 2, f"{alarms} false alarms in 20 random splits"
    # Sharper: the classifier learns nothing; its AUC centres on 0.5 (sd of the mean ~0.005).
    assert abs(np.mean([r.domain.auc for r in reports]) - 0.5) < 0.02


@pytest.mark.sst5
@pytest.mark.skipif(not (SST5 / "dev.csv").is_file(), reason="needs ../shared/data/sst5")
def test_movie_sentences_against_product_reviews_are_flagged():
    reviews = pd.read_csv(REPO / "data" / "reviews.csv")
    movies = pd.read_csv(SST5 / "dev.csv").sample(300, random_state=0)
    result = domain_classifier(list(reviews.text), list(movies.text))
    assert result.drifted and result.auc > 0.9


def test_novel_texts_alone_mark_the_estimate_unreliable_on_page_markdown_and_metrics():
    """The domain classifier sees nothing (random splits of one data set) but the texts'
    novelty says they lie far from the training texts: the estimate is unreliable, and
    the reason names novelty, not the domain classifier."""
    from textclf.monitoring.novelty import NoveltyResult

    data = pd.read_csv(REPO / "data" / "reviews.csv")
    rows = data.iloc[np.random.default_rng(0).permutation(len(data))]
    test, reference, current = rows.iloc[:100], rows.iloc[100:400], rows.iloc[400:500]
    novelty = NoveltyResult(auc=0.8, novel_share=0.42, layer=3, reference_rows=300,
                            validation_rows=188, current_rows=100)
    report = compare(list(reference.text), _perfect_model(test), _perfect_model(current),
                     sorted(data.label.unique()), SOURCES, novelty=novelty)
    assert report.domain.auc <= 0.54 and not report.performance.reliable
    found = report.metrics()["performance"]
    assert (found["unreliable_domain"], found["unreliable_novelty"]) == (0, 1)
    assert (found["novelty_auc"], found["novel_share"]) == (0.8, 0.42)
    page, summary = render(report)
    for text in (page, summary):
        assert "unreliable here" in text and "novelty AUC 0.800" in text
        assert "the domain classifier tells" not in text
        assert "42.0% beyond 95% of validation" in text            # the measures row
    without = compare(list(reference.text), _perfect_model(test), _perfect_model(current),
                      sorted(data.label.unique()), SOURCES)
    assert without.performance.reliable
    assert "novelty_auc" not in without.metrics()["performance"]
    assert "novelty AUC:" not in render(without)[1]


# --- the command ---------------------------------------------------------------------------


@pytest.fixture
def splits(tmp_path) -> dict[str, Path]:
    data = toy_reviews(per_class=8)
    paths = {"reference": tmp_path / "train.parquet", "test": tmp_path / "test.parquet"}
    data.to_parquet(paths["reference"], index=False)
    data.iloc[::2].to_parquet(paths["test"], index=False)
    return paths


def _run(tiny_model_dir, splits, tmp_path, *extra: str) -> dict:
    drift.main(["--reference", str(splits["reference"]), "--test", str(splits["test"]),
                "--model", str(tiny_model_dir), "--out-dir", str(tmp_path / "reports"),
                "--metrics", str(tmp_path / "drift.json"), *extra])
    return json.loads((tmp_path / "drift.json").read_text())


def _news(n: int) -> list[str]:
    return [f"breaking news {i}: the senate voted on the budget bill today" for i in range(n)]


def test_drift_on_a_csv_writes_page_markdown_and_metrics(tiny_model_dir, splits, tmp_path):
    texts = [f"<script>x()</script> {text}" for text in _news(40)]
    pd.DataFrame({"review": texts}).to_csv(tmp_path / "new.csv", index=False)
    metrics = _run(tiny_model_dir, splits, tmp_path, "--current", str(tmp_path / "new.csv"),
                   "--text-column", "review")
    assert metrics["drift_detected"] == 1 and metrics["text_drift"]["auc"] > MIN_AUC
    assert metrics["rows"] == {"reference": 40, "current": 40, "test": 20}
    page = (tmp_path / "reports" / "drift.html").read_text()
    summary = (tmp_path / "reports" / "drift.md").read_text()
    assert summary.startswith("# Drift report: drift detected")
    assert "sha256:" in summary and "senate" in summary         # version; a telling word
    assert page.count("<svg") == 2 and "senate" in page
    assert "<script>" not in page and "&lt;script&gt;" in page       # texts are escaped


def test_drift_on_serve_logs_uses_the_logged_predictions(tiny_model_dir, splits, tmp_path,
                                                        capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    texts = list(toy_reviews(per_class=4).text)
    answers = [{"label": "LABEL_0", "probability": 0.7,
                "probabilities": {"LABEL_0": 0.7, "LABEL_1": 0.2, "LABEL_2": 0.1}}] * len(texts)
    day = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)
    log = logs / log_file_name(day.date(), 0)
    log.write_bytes(
        log_lines(day, "r1", "v1", texts[:10], answers[:10])
        + b'{"time": "2026-11-28T00:00:00.000+00:00", "request_id": "lost", "te'  # cut short,
        + log_lines(day, "r2", "v2", texts[10:], answers[10:])    # and the next glued on
        + log_lines(day, "r3", "v2", ["one more"], answers[:1])
        + b'{"text": "cut sh')                # the newest file's end: maybe a write under way
    metrics = _run(tiny_model_dir, splits, tmp_path, "--current", str(logs))
    assert metrics["rows"]["current"] == 20 and metrics["damaged_log_lines"] == 1
    assert metrics["confidence"]["current_mean"] == pytest.approx(0.7)
    summary = (tmp_path / "reports" / "drift.md").read_text()
    assert "Model: v1, v2 (as logged" in summary and "2 model versions" in summary
    assert "answered 2026-11-28 00:00 to 2026-11-28 00:00 UTC" in summary
    skipped = "Skipped 1 damaged log line (not one whole JSON record"
    assert f"> {skipped}" in summary and "(1, the first at line 11)" in summary
    page = (tmp_path / "reports" / "drift.html").read_text()
    assert skipped in page and "(1, the first at line 11)" in page
    err = capsys.readouterr().err
    assert f"drift: {skipped}" in err and f"{log} (1, the first at line 11)" in err

    with pytest.raises(SystemExit) as refused:
        _run(tiny_model_dir, splits, tmp_path / "strict", "--current", str(logs), "--strict")
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {log}, line 11: damaged line, a record cut short, with "
                          f"the next record glued to it")


def test_since_keeps_the_logged_texts_of_the_window(tmp_path):
    answer = {"label": "a", "probability": 0.6, "probabilities": {"a": 0.6, "b": 0.4}}
    for day, version in ((27, "v1"), (28, "v2")):
        time = dt.datetime(2026, 11, day, 12, tzinfo=dt.timezone.utc)
        (tmp_path / log_file_name(time.date(), 0)).write_bytes(
            log_lines(time, "r", version, [f"text {day}"] * 3, [answer] * 3))
    window = read_prediction_logs(tmp_path, dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc))
    assert window.predictions.texts == ("text 28",) * 3 and window.model_versions == ("v2",)
    assert read_prediction_logs(tmp_path).first.day == 27
    with pytest.raises(UserError, match="hold no predictions answered since 2026-12-01"):
        read_prediction_logs(tmp_path, dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))


def test_logs_of_raw_probabilities_or_of_another_model_are_not_trusted(tmp_path):
    mine, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    answer = {"label": "a", "probability": 0.6, "probabilities": {"a": 0.6, "b": 0.4}}
    time = dt.datetime(2026, 12, 5, tzinfo=dt.timezone.utc)

    def window(versions, calibrated):
        """The logged window of one request per (model_version, calibrated)."""
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        (folder / log_file_name(time.date(), 0)).write_bytes(b"".join(
            log_lines(time, f"r{i}", version, ["a text"], [answer], said)
            for i, (version, said) in enumerate(zip(versions, calibrated))))
        return read_prediction_logs(folder)

    assert drift.logged_untrusted(window([mine], [True]), mine, True) == []
    assert drift.logged_untrusted(window([mine], [None]), mine, True) == []   # older logs
    assert drift.logged_untrusted(window([mine], [False]), mine, True) == [
        "the logged probabilities are raw (serve --raw-probabilities, or a folder without a "
        "temperature) and this report compares calibrated ones (without --raw-probabilities)"]
    assert "are calibrated and this report compares raw ones (with --raw-probabilities)" in \
        drift.logged_untrusted(window([mine], [True]), mine, False)[0]
    assert drift.logged_untrusted(window([mine, mine], [True, False]), mine, True) == [
        "the logs mix calibrated and raw probabilities"]
    found = drift.logged_untrusted(window([other], [True]), mine, True)
    assert len(found) == 1 and f"answers of {other}, not of the model in --model" in found[0]
    assert drift.logged_untrusted(window(["prod-7"], [True]), mine, True) == []  # free name


def test_served_versions_that_differ_from_the_model_are_noted():
    mine, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert drift.served_notes((f"{mine}+git:abc",), mine, "models/classifier") == []
    assert drift.served_notes(("prod-7",), mine, "m") == []      # a free name: cannot tell
    notes = drift.served_notes((mine, other), mine, "m")
    assert "2 model versions" in notes[0] and other in notes[1] and mine not in notes[1][:70]
    assert drift.short_hashes(f"served {other}+git:abc") == "served sha256:bbbbbbbbbbbb+git:abc"


def test_fail_on_drift_exits_1(tiny_model_dir, splits, tmp_path):
    pd.DataFrame({"text": _news(40)}).to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(SystemExit) as exit_:
        _run(tiny_model_dir, splits, tmp_path, "--current", str(tmp_path / "new.csv"),
             "--fail-on-drift")
    assert exit_.value.code == 1


def _csv(folder: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(folder / "x.csv", index=False)
    return folder / "x.csv"


def _log_folder(folder: Path, content: str | None) -> Path:
    (folder / "logs").mkdir()
    if content is not None:
        (folder / "logs" / "predictions-2026-11-28.jsonl").write_text(content)
    return folder / "logs"


BAD_INPUTS = {   # name: (writes --current into a folder, extra flags, part of the message)
    "no rows": (lambda d: _csv(d, pd.DataFrame({"text": []})), [], "no rows"),
    "no text column": (lambda d: _csv(d, pd.DataFrame({"body": ["hi"]})), [],
                       "x.csv: no column 'text'"),
    "too few texts": (lambda d: _csv(d, pd.DataFrame({"text": ["ok"] * 3})), [],
                      "3 text(s); expected at least 10"),
    "no logs": (lambda d: _log_folder(d, None), [], "no prediction logs (predictions-YYYY-MM-DD[-N].jsonl) in it"),
    "no such folder": (lambda d: d / "logs" / "predictions", [], "no such file or folder"),
    "bad probability": (lambda d: _log_folder(
        d, '{"time": "2026-11-28", "text": "a", "label": "x", "probability": 2}\n'), [],
        "field 'probability' must be a number from 0 to 1"),
    "label not among its probabilities": (lambda d: _log_folder(
        d, '{"time": "2026-11-28", "text": "a", "label": "zzz", "probability": 0.5, '
           '"probabilities": {"neg": 0.5, "pos": 0.5}}\n'), [],
        "line 1: field 'label' 'zzz' is none of the labels of the line's own probabilities "
        "(neg, pos)"),
    "bad time": (lambda d: _log_folder(
        d, '{"time": "yesterday", "text": "a", "label": "x", "probability": 0.5}\n'), [],
        "line 1: field 'time' must be an ISO-8601 time"),
    "since on a file": (lambda d: _csv(d, pd.DataFrame({"text": _news(20)})),
                        ["--since", "2026-11-01"], "--since works on a folder"),
}


@pytest.mark.parametrize("make, flags, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_clear_error(tiny_model_dir, splits, tmp_path, capsys, make, flags,
                                      message):
    current = make(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        _run(tiny_model_dir, splits, tmp_path, "--current", str(current), *flags)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert str(current) in err                        # names the file or folder
    assert not (tmp_path / "drift.json").exists() and not (tmp_path / "reports").exists()


def test_missing_model_folder_is_named(splits, tmp_path, capsys):
    pd.DataFrame({"text": _news(20)}).to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(SystemExit):
        _run(tmp_path / "no-model", splits, tmp_path, "--current", str(tmp_path / "new.csv"))
    assert "--model" in capsys.readouterr().err


def test_a_log_line_that_is_not_json_is_skipped_or_refused_naming_file_and_line(tmp_path):
    (tmp_path / "predictions-2026-11-28.jsonl").write_text(
        '{"time": "2026-11-28", "text": "fine", "label": "a", "probability": 0.5}\nnot json\n')
    damaged = DamagedLines()
    assert read_prediction_logs(tmp_path, damaged=damaged).predictions.texts == ("fine",)
    assert damaged.lines == {tmp_path / "predictions-2026-11-28.jsonl": {2}}
    with pytest.raises(UserError, match=r"predictions-2026-11-28.jsonl, line 2: damaged line, "
                                        r"not valid JSON"):
        read_prediction_logs(tmp_path, damaged=DamagedLines(strict=True))


HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a|b", "one\ntwo"]


def test_a_huge_logged_text_is_clipped_on_both_pages():
    """A word is whatever has no space in it: logged texts of 20,000 letters are telling
    words and typical texts, and were copied whole into both pages."""
    texts = tuple(f"{i} " + "x" * 20_000 + f"{i}" for i in range(40))
    current = Predictions(texts, ("pos",) * 40, (0.6,) * 40)
    reference = [f"plain review {i} of a phone" for i in range(40)]
    test = Predictions(tuple(reference), ("pos",) * 40, (0.9,) * 40)
    report = compare(reference, test, current, ["neg", "pos"],
                     Sources("ref.csv", "cur.csv", "test.csv", "v1"))
    for page in render(report):
        assert len(page) < 40_000 and "x" * 38 + "…" in page


def test_markdown_shows_texts_labels_and_paths_as_text_not_html():
    texts = [f"{HOSTILE[i % 4]} {i} zebra" for i in range(40)]
    labels = [HOSTILE[i % 4] for i in range(40)]
    current = Predictions(tuple(texts), tuple(labels), (0.6,) * 40)
    reference = [f"plain review {i} of a phone" for i in range(40)]
    test = Predictions(tuple(reference), ("a|b",) * 40, (0.9,) * 40)
    sources = Sources("ref<img src=r onerror=alert(3)>.csv", "cur|rent\n.csv", "**t**.csv",
                      "<script>v</script>")
    report = compare(reference, test, current, HOSTILE, sources,
                     notes=["served <img src=n onerror=alert(4)> **n**"])
    page, summary = render(report)
    assert "<script" not in summary and "<img" not in summary
    assert "<script" not in page and "<img" not in page
    # a path's or a note's stars are shown, not made bold, on both pages
    assert "<b>t</b>" not in page and "**t**.csv" in page and "<b>n</b>" not in page
    assert "\\*\\*t\\*\\*.csv" in summary
    tables = [b.splitlines() for b in summary.split("\n\n") if b.startswith("|")]
    assert len(tables) >= 4
    for table in tables:
        widths = {len(re.split(r"(?<!\\)\|", line.strip())) for line in table}
        assert len(widths) == 1, table                    # no cell broke out of its row
    labels_table = next(t for t in tables if t[0].startswith("| predicted label |"))
    assert len(labels_table) == 2 + len(HOSTILE)
    assert "| a\\|b |" in "\n".join(labels_table) and "one<br>two" in summary
    examples = next(t for t in tables if t[0].startswith("| side |"))
    assert any("&lt;img src=x onerror=alert(1)&gt; " in row for row in examples)
