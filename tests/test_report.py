"""The report's pure core: experiment records in, one offline HTML page and Markdown out."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

import pytest

from textclf.errors import UserError
from textclf.report import (Experiment, build_report, display_names, finished_rows, fmt,
                            made_up_by_dvc)

LABELS = ["neg", "neu", "pos"]
BASE_PARAMS = {"data.class_ratio": None, "model.name": "tiny", "train.batch_size": 32,
               "train.lr": 1e-4, "evaluate.batch_size": 64}


def experiment(rev: str, name: str, f1: float, named: bool = False, baseline: str = "base",
               epochs: int = 2, **params) -> Experiment:
    per_class = {label: round(f1 + d, 4) for label, d in zip(LABELS, (-0.1, 0.0, 0.1))}
    return Experiment(
        rev=rev * 40 if len(rev) == 1 else rev, name=name, named=named or rev == baseline,
        baseline=baseline * 40 if len(baseline) == 1 else baseline,
        params={**BASE_PARAMS, **{k.replace("__", "."): v for k, v in params.items()}},
        metrics={"f1_macro": f1, "accuracy": f1 + 0.05, "best.val_f1_macro": f1 - 0.01,
                 "best_epoch": float(epochs), "train.loss": 1.0 - f1},
        per_class_f1=per_class,
        curves={"loss": [1.5 - 0.3 * e for e in range(epochs)],
                "val_accuracy": [f1 * (e + 1) / epochs for e in range(epochs)],
                "val_f1_macro": [f1 * (e + 1) / epochs for e in range(epochs)]},
        confusion=[(a, a) for a in LABELS] * 3 + [("neg", "pos"), ("pos", "neu")])


def grid() -> list[Experiment]:
    return [experiment("b", "main", 0.50, baseline="b"),
            experiment("1", "bally-kent", 0.55, baseline="b", train__batch_size=16,
                       data__class_ratio=[2, 1, 1]),
            experiment("2", "dusky-pins", 0.70, baseline="b", data__class_ratio=[1, 1, 1]),
            experiment("3", "small-lr", 0.60, named=True, baseline="b", train__lr=1e-5)]


def svgs(page: str) -> list[ET.Element]:
    """Every inline SVG, parsed as XML (so bad escaping fails here)."""
    return [ET.fromstring(s) for s in re.findall(r"<svg .*?</svg>", page, flags=re.S)]


def svg_text(svg: ET.Element) -> str:
    return " ".join("".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text"))


def md_leaderboard(summary: str) -> list[str]:
    """Lines of the Markdown leaderboard: header, separator, rows."""
    return next(b for b in summary.split("\n\n") if b.startswith("| # |")).splitlines()


def md_rows(summary: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")]
            for line in md_leaderboard(summary)[2:]]


def test_values_are_shown_the_way_people_write_them():
    assert fmt([2.0, 1, 1, 1, 1]) == "2:1:1:1:1"
    assert fmt(16.0) == "16" and fmt(1e-5) == "1e-05" and fmt(0.123456) == "0.1235"
    assert fmt(None) == "null" and fmt(["a", "b"]) == "['a', 'b']"


def test_unnamed_runs_are_described_by_what_changed_from_their_baseline():
    names = display_names(grid())

    assert names["b" * 40] == "main (baseline)"
    assert names["1" * 40] == "class_ratio=2:1:1, batch_size=16"
    assert names["2" * 40] == "class_ratio=1:1:1"
    assert names["3" * 40] == "small-lr"                       # chosen with -n: kept


def test_descriptions_stay_unambiguous():
    same_key = experiment("1", "bally-kent", 0.5, baseline="b", train__batch_size=16,
                          evaluate__batch_size=8)
    rerun_a = experiment("2", "dusky-pins", 0.5, baseline="b", train__lr=1e-3)
    rerun_b = experiment("3", "amber-dogs", 0.5, baseline="b", train__lr=1e-3)
    unchanged = experiment("4", "ample-acid", 0.5, baseline="b")
    names = display_names([experiment("b", "main", 0.4, baseline="b"), same_key, rerun_a,
                           rerun_b, unchanged])

    # two keys end in batch_size, so both keep their section
    assert names["1" * 40] == "train.batch_size=16, evaluate.batch_size=8"
    assert names["2" * 40] == "lr=0.001 [dusky-pins]"
    assert names["3" * 40] == "lr=0.001 [amber-dogs]"
    assert names["4" * 40] == "ample-acid"                     # nothing changed: DVC's name


def test_leaderboard_is_sorted_by_the_chosen_metric_with_only_changed_params():
    _, summary = build_report(grid())
    rows = md_rows(summary)

    assert [row[1] for row in rows] == ["class_ratio=1:1:1", "small-lr",
                                        "class_ratio=2:1:1, batch_size=16", "main (baseline)"]
    header = md_leaderboard(summary)[0]
    # model.name and evaluate.batch_size are the same everywhere: no columns
    assert header == ("| # | experiment | DVC name | f1_macro | accuracy | best.val_f1_macro | "
                      "best_epoch | class_ratio | batch_size | lr |")
    assert [row[3] for row in rows] == ["0.7", "0.6", "0.55", "0.5"]

    _, by_loss = build_report(grid(), sort_by="train.loss", ascending=True)
    assert [row[1] for row in md_rows(by_loss)][0] == "class_ratio=1:1:1"
    _, by_acc = build_report(grid(), sort_by="accuracy", ascending=True)
    assert [row[1] for row in md_rows(by_acc)][0] == "main (baseline)"


def test_unknown_sort_metric_names_the_known_ones():
    with pytest.raises(UserError, match=r"--sort-by f1\b.*known: .*f1_macro"):
        build_report(grid(), sort_by="f1")


def test_baseline_is_marked_and_the_best_is_compared_with_it():
    page, summary = build_report(grid())

    assert "Compared below: **class_ratio=1:1:1** against **main (baseline)**." in summary
    per_class = summary.split("## Per-class F1 on the test set")[1]
    assert "| class | class_ratio=1:1:1 | main (baseline) |" in per_class
    assert "| pos | 0.8 | 0.6 |" in per_class                  # best 0.70 + 0.1, base 0.50 + 0.1
    assert re.search(r'<tr class="baseline"><td>4</td><td>main \(baseline\)</td>', page)
    assert re.search(r'<tr class="best"><td>1</td><td>class_ratio=1:1:1</td>', page)


def test_a_named_run_keeps_its_name_in_every_part_of_the_page():
    exps = grid()
    exps[3] = experiment("3", "small-lr", 0.90, named=True, baseline="b", train__lr=1e-5)
    page, summary = build_report(exps)

    assert md_rows(summary)[0][1:3] == ["small-lr", f"small-lr {'3' * 7}"]
    charts = svgs(page)
    titles = [svg.find("{http://www.w3.org/2000/svg}title").text for svg in charts]
    assert titles == ["f1_macro, top 4 of 4", "Per-class F1 on the test set",
                      "training loss per epoch", "validation accuracy per epoch",
                      "validation macro-F1 per epoch", "Test confusion matrix",
                      "Test confusion matrix"]
    for svg in charts[:5]:                                    # bar labels and legends
        assert "small-lr" in svg_text(svg), svg_text(svg)
    assert ["small-lr" in svg_text(svg) for svg in charts[5:]] == [True, False]
    assert "<h2>small-lr against main (baseline)</h2>" in page


def test_page_is_self_contained_and_charts_are_drawn():
    page, _ = build_report(grid())

    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    charts = svgs(page)
    ns = "{http://www.w3.org/2000/svg}"
    bars, per_class, *curves, confusion_best, confusion_base = charts
    assert len(bars.findall(f"{ns}rect")) == 4                # one bar per experiment
    assert len(per_class.findall(f"{ns}rect")) == 3 * 2 + 2   # 3 classes x 2 runs + legend
    for curve in curves:
        lines = curve.findall(f"{ns}polyline")
        assert len(lines) == 2 and all(len(line.get("points").split()) == 2 for line in lines)
    cells = [t for t in confusion_best.iter(f"{ns}text") if t.text and t.text.isdigit()]
    assert sorted(int(t.text) for t in cells) == sorted([3, 3, 3, 1, 1] + [0] * 4)


def test_names_are_escaped_in_html_and_markdown():
    exps = grid()
    exps[3] = experiment("3", "a<b>|c&d", 0.9, named=True, baseline="b", train__lr=1e-5)
    page, summary = build_report(exps)

    svgs(page)                                                 # still valid XML
    assert "a&lt;b&gt;|c&amp;d" in page and "a<b>" not in page
    assert "a<b>\\|c&d" in summary


def test_one_experiment_is_a_report_too():
    page, summary = build_report([experiment("b", "main", 0.5, baseline="b", epochs=1)])

    assert "1 experiment, sorted by f1_macro" in summary
    assert "Compared below: **main (baseline)**." in summary and "against" not in summary
    assert len(md_rows(summary)) == 1
    assert len(svgs(page)) == 1 + 1 + 3 + 1                    # bars, per-class, curves, matrix
    assert "| class | main (baseline) |" in summary


def test_failed_runs_are_listed_not_ranked():
    _, summary = build_report(grid(), skipped=("bad-batch-1 (failed)", "eager-bean (queued)"))

    assert ("Failed or unfinished, not ranked: bad-batch-1 (failed), eager-bean (queued)."
            in summary)
    assert len(md_rows(summary)) == 4


def test_a_hundred_experiments_render_quickly_with_the_top_twenty_charted():
    exps = [experiment("b", "main", 0.1, baseline="b")] + [
        experiment(f"{i:040x}", f"exp-{i}", 0.2 + i / 200, baseline="b",
                   train__batch_size=8 * (i % 4 + 1), train__lr=10.0 ** -(i % 5 + 2))
        for i in range(1, 100)]
    start = time.perf_counter()
    page, summary = build_report(exps)
    elapsed = time.perf_counter() - start

    assert elapsed < 2.0, f"build_report took {elapsed:.2f}s for 100 experiments"
    assert len(md_rows(summary)) == 100
    bars = svgs(page)[0]
    title = bars.find("{http://www.w3.org/2000/svg}title").text
    assert title == "f1_macro, top 20 of 100 and the baseline"
    assert len(bars.findall("{http://www.w3.org/2000/svg}rect")) == 21
    assert "main (baseline)" in svg_text(bars)                 # the baseline, ranked last
    assert page.count("<tr class") == 100


def test_dvc_made_up_names_are_told_apart_from_chosen_ones():
    from dvc.repo.experiments.utils import gen_random_name

    assert all(made_up_by_dvc(gen_random_name()) for _ in range(20))
    assert not any(map(made_up_by_dvc, ["bad-batch-1", "small-lr", "baseline", "main",
                                        "quick-test"]))


def test_only_finished_runs_are_read_from_dvc_exp_show():
    def group(name, rev, state=None, error=None):
        executor = {"state": state} if state else None
        return {"executor": executor, "name": name,
                "revs": [{"rev": rev, "name": name, "error": error, "data": {}}]}
    entries = [{"rev": "workspace", "name": None, "data": {}},
               {"rev": "b" * 40, "name": "main", "data": {}, "experiments": [
                   group("done", "1" * 40, "success"),
                   group("in-workspace", "2" * 40),                # `dvc exp run`: no executor
                   group("bad-batch-1", "3" * 40, "failed", {"msg": "Experiment run failed"}),
                   group("waiting", "4" * 40, "queued"), group("busy", "5" * 40, "running")]},
               {"rev": "1" * 40, "name": "winner", "data": {}}]   # a branch on an experiment

    rows, skipped = finished_rows(entries)

    assert [(row["name"], baseline[0]) for row, baseline in rows] == [
        ("main", "b"), ("done", "b"), ("in-workspace", "b")]
    assert skipped == ["bad-batch-1 (failed)", "waiting (queued)", "busy (running)"]
