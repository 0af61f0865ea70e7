"""The report's pure core: experiment records in, one offline HTML page, Markdown and JSON out;
and the reader's pure parts: rows of `dvc.api.exp_show`, params against dvc.lock."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET

import pytest

from experiment_records import BASE_PARAMS, REVIEWS, experiment
from textclf.errors import UserError
from textclf.report import changes, compare, fmt, render_html, render_markdown, to_json
from textclf.reporting.experiments import Experiment, list_runs, stale_deps, stale_params, to_yaml


def grid() -> list[Experiment]:
    return [experiment("b", "main", 0.50),
            experiment("1", "bally-kent", 0.55, train__batch_size=16, data__class_ratio=[2, 1, 1]),
            experiment("2", "dusky-pins", 0.70, data__class_ratio=[1, 1, 1]),
            experiment("3", "small-lr", 0.60, train__lr=1e-5)]


def build_report(exps, sort_by="f1_macro", ascending=False, unfinished=()):
    c = compare(exps, sort_by, ascending, tuple(unfinished))
    return render_html(c), render_markdown(c)


def svgs(page: str) -> list[ET.Element]:
    """Every inline SVG, parsed as XML (so bad escaping fails here)."""
    return [ET.fromstring(s) for s in re.findall(r"<svg .*?</svg>", page, flags=re.S)]


def svg_text(svg: ET.Element) -> str:
    return " ".join("".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text"))


def md_leaderboards(summary: str) -> list[list[str]]:
    """Lines of each Markdown leaderboard: header, separator, rows."""
    return [b.splitlines() for b in summary.split("\n\n") if b.startswith("| # |")]


def md_leaderboard(summary: str) -> list[str]:
    [board] = md_leaderboards(summary)
    return board


def md_rows(summary: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")]
            for line in md_leaderboard(summary)[2:]]


def test_values_are_shown_the_way_people_write_them():
    assert fmt(16.0) == "16" and fmt(1e-5) == "1e-05" and fmt(0.123456) == "0.1235"
    # params as YAML, the way params.yaml and `-S key=value` write them: no Python reprs
    assert to_yaml([2, 1, 1, 1, 1]) == "[2, 1, 1, 1, 1]"
    assert to_yaml(None) == "null" and to_yaml(False) == "false"
    assert to_yaml(["very negative", "neutral"]) == "[very negative, neutral]"
    assert to_yaml(1e-4) == "0.0001" and to_yaml("a: b") == "'a: b'"


def test_runs_are_described_by_what_changed_from_their_baseline():
    exps = grid()
    assert changes(exps[1], exps) == "class_ratio=[2, 1, 1], batch_size=16"
    assert changes(exps[2], exps) == "class_ratio=[1, 1, 1]"
    assert changes(exps[0], exps) == ""                          # the baseline itself
    same_key = experiment("4", "ample-acid", 0.5, train__batch_size=16, evaluate__batch_size=8)
    # two keys end in batch_size, so both keep their section
    assert changes(same_key, [exps[0], same_key]) == "train.batch_size=16, evaluate.batch_size=8"


def test_leaderboard_is_sorted_by_the_chosen_metric_with_only_changed_params():
    _, summary = build_report(grid())
    rows = md_rows(summary)

    assert [row[1] for row in rows] == ["dusky-pins", "small-lr", "bally-kent", "main (baseline)"]
    header = md_leaderboard(summary)[0]
    # model.name and evaluate.batch_size are the same everywhere: no columns
    assert header == ("| # | experiment | rev | f1_macro | accuracy | best.val_f1_macro | "
                      "best_epoch | class_ratio | batch_size | lr |")
    assert [row[3] for row in rows] == ["0.7", "0.6", "0.55", "0.5"]
    assert rows[2][7:] == ["[2, 1, 1]", "16", "0.0001"] and rows[3][7] == "null"

    _, by_loss = build_report(grid(), sort_by="train.loss", ascending=True)
    assert [row[1] for row in md_rows(by_loss)][0] == "dusky-pins"
    _, by_acc = build_report(grid(), sort_by="accuracy", ascending=True)
    assert [row[1] for row in md_rows(by_acc)][0] == "main (baseline)"


def test_unknown_sort_metric_names_the_known_ones():
    with pytest.raises(UserError, match=r"--sort-by f1\b.*known: .*f1_macro"):
        build_report(grid(), sort_by="f1")


def test_baseline_is_marked_and_the_best_is_compared_with_it():
    page, summary = build_report(grid())

    assert "Compared below: **dusky-pins** against **main (baseline)**." in summary
    per_class = summary.split("## Per-class F1 on the test set")[1]
    assert "| class | dusky-pins | main (baseline) |" in per_class
    assert "| pos | 0.8 | 0.6 |" in per_class                  # best 0.70 + 0.1, base 0.50 + 0.1
    assert re.search(r'<tr class="baseline"><td>4</td><td>main \(baseline\)</td>', page)
    assert re.search(r'<tr class="best"><td>1</td><td>dusky-pins</td>', page)
    assert "<h2>dusky-pins against main (baseline) (class_ratio=[1, 1, 1])</h2>" in page


def test_params_are_shown_as_yaml_not_python():
    page, summary = build_report(grid())

    block = summary.split("## Params of main (baseline)")[1]
    assert "data:\n  path: data/reviews.csv\n  class_ratio: null\n" in block
    assert "train:\n  batch_size: 32\n  lr: 0.0001\n" in block
    for text in (page, summary):
        assert "None" not in text and "['" not in text and "True" not in text


def test_every_part_of_the_page_names_runs_the_same_way():
    exps = grid()
    exps[3] = experiment("3", "small-lr", 0.90, train__lr=1e-5)
    page, summary = build_report(exps)

    assert md_rows(summary)[0][1:3] == ["small-lr", "3" * 7]
    charts = svgs(page)
    titles = [svg.find("{http://www.w3.org/2000/svg}title").text for svg in charts]
    assert titles == ["f1_macro, top 4 of 4", "Per-class F1 on the test set",
                      "training loss per epoch", "validation accuracy per epoch",
                      "validation macro-F1 per epoch", "Test confusion matrix",
                      "Test confusion matrix"]
    for svg in charts[:5]:                                    # bar labels and legends
        assert "small-lr" in svg_text(svg), svg_text(svg)
    assert ["small-lr" in svg_text(svg) for svg in charts[5:]] == [True, False]


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


HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a|b", "one\ntwo",
           "```\n<script>alert(2)</script>"]


def markdown_it():
    """A CommonMark renderer with GitHub's tables that lets raw HTML through, as GitHub
    shows a Markdown file (then strips what is unsafe)."""
    return pytest.importorskip("markdown_it").MarkdownIt("commonmark").enable("table")


def md_cells(line: str) -> list[str]:
    """The cells of a Markdown table row, split where GitHub splits them: at a `|` that
    no backslash escapes."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_names_labels_and_params_are_escaped_in_html_and_markdown():
    exps = grid()
    exps[0] = experiment("b", "main", 0.50, train__note=HOSTILE[4])   # its params are shown
    exps[3] = dataclasses.replace(experiment("3", "a<b>|c&d", 0.9, train__lr=1e-5),
                                  per_class_f1={text: 0.5 for text in HOSTILE})
    page, summary = build_report(exps)

    svgs(page)                                                 # still valid XML
    assert "a&lt;b&gt;|c&amp;d" in page and "a<b>" not in page
    assert "<script" not in page and "<img" not in page
    # the params block: a fence no value can close; what is in it shows verbatim
    fence = re.search(r"^(`{3,})yaml$", summary, flags=re.M)[1]
    assert len(fence) > 3 and summary.count("\n" + fence + "\n") == 1
    text = re.sub(rf"{fence}yaml\n.*?\n{fence}\n", "", summary, flags=re.S)
    for raw in ("<script", "<img", "<b>"):
        assert raw not in text
    rendered = markdown_it().render(summary)
    assert "<script" not in rendered and "<img" not in rendered
    assert "**a&lt;b&gt;|c&amp;d**" in summary                 # a line of text: `|` is safe
    assert "| a&lt;b&gt;\\|c&amp;d |" in summary               # in a table it is escaped
    tables = [block.splitlines() for block in summary.split("\n\n") if block.startswith("|")]
    for table in tables:
        assert {len(md_cells(line)) for line in table} == {len(md_cells(table[0]))}
    per_class = next(t for t in tables if t[0].startswith("| class |"))
    assert len(per_class) == 2 + 3 + len(HOSTILE)              # each label one row
    assert "one<br>two" in summary


def test_one_experiment_is_a_report_too():
    page, summary = build_report([experiment("b", "main", 0.5, epochs=1)])

    assert "1 experiment, sorted by f1_macro" in summary
    assert "Compared below: **main (baseline)**." in summary and "against" not in summary
    assert len(md_rows(summary)) == 1
    assert len(svgs(page)) == 1 + 1 + 3 + 1                    # bars, per-class, curves, matrix
    assert "| class | main (baseline) |" in summary


def test_failed_runs_are_listed_not_ranked():
    _, summary = build_report(grid(), unfinished=("bad-batch-1 (failed)", "eager-bean (queued)"))

    assert "Not ranked: bad-batch-1 (failed); eager-bean (queued)." in summary
    assert len(md_rows(summary)) == 4


def test_runs_on_different_test_sets_get_separate_leaderboards_and_a_warning():
    sst5 = "77aa0c3f+0c9e1d2a"
    exps = [*grid(), experiment("5", "sst5-run", 0.95, data=sst5, data__path="data/sst5.csv"),
            experiment("6", "sst5-bs16", 0.30, data=sst5, data__path="data/sst5.csv",
                       train__batch_size=16)]
    page, summary = build_report(exps)

    first, second = md_leaderboards(summary)
    assert [r.split(" | ")[1] for r in first[2:]] == ["dusky-pins", "small-lr", "bally-kent",
                                                      "main (baseline)"]
    assert [r.split(" | ")[1] for r in second[2:]] == ["sst5-run", "sst5-bs16"]
    assert "## Leaderboard: test set of data.path=data/reviews.csv (e1901601)" in summary
    assert "## Leaderboard: test set of data.path=data/sst5.csv (77aa0c3f)" in summary
    # the same file cut another way: the param that made the other test set is named
    other = [experiment("7", "bigger-test", 0.5, data="99bb0c3f+1", data__test_size=0.3),
             experiment("8", "bigger-test-2", 0.4, data="99bb0c3f+1", data__test_size=0.3)]
    split = render_markdown(compare([*grid(), *other]))
    assert "## Leaderboard: test set of data.path=data/reviews.csv, data.test_size=0.3 " \
           "(99bb0c3f)" in split and "data.class_ratio=" not in split.split("```")[0]
    assert "scored on 2 different test sets" in summary and 'class="warn"' in page
    # the best of the baseline's test set is compared, not the 0.95 on other data
    assert "Compared below: **dusky-pins** against **main (baseline)**." in summary
    # "Top" names the test set it tops, not the 0.95 on other data either
    assert "Top on the test set of data.path=data/reviews.csv (e1901601): **dusky-pins**" \
        in summary
    c = compare(exps)
    assert [[r["name"] for r in g["ranked"]] for g in to_json(c)["groups"]] == [
        ["dusky-pins", "small-lr", "bally-kent", "main"], ["sst5-run", "sst5-bs16"]]


def test_a_commit_whose_params_do_not_match_its_metrics_is_not_ranked():
    lock = {"stages": {"train": {"params": {"params.yaml": {
        "model": {"name": "tiny"}, "train": {"batch_size": 32, "lr": 1e-4}}}},
        "resample": {"params": {"params.yaml": {"data.class_ratio": None}}}}}
    edited = {**BASE_PARAMS, "train.lr": 1e-3}
    assert stale_params(BASE_PARAMS, lock) == ""
    assert stale_params(edited, lock) == "train.lr: params.yaml 0.001, dvc.lock 0.0001"

    exps = [*grid(), experiment("7", "edited", 0.99, stale=stale_params(edited, lock))]
    page, summary = build_report(exps)
    assert "edited" not in [row[1] for row in md_rows(summary)]
    assert ("edited (params and metrics from different runs: train.lr: params.yaml 0.001, "
            "dvc.lock 0.0001)") in summary
    with pytest.raises(UserError, match="no experiment's params match its dvc.lock"):
        compare([exps[-1]])


def test_json_for_scripts_round_trips_with_typed_values():
    c = compare(grid(), "accuracy")
    data = json.loads(json.dumps(to_json(c)))

    assert data["sort_by"] == "accuracy" and data["best"] == "dusky-pins"
    [group] = data["groups"]
    assert group["data_path"] == "data/reviews.csv" and group["data"] == REVIEWS
    top = group["ranked"][0]
    assert top["params"]["data.class_ratio"] == [1, 1, 1] and top["metrics"]["accuracy"] == 0.75
    assert group["ranked"][-1]["is_baseline"] is True


def test_a_hundred_experiments_render_with_the_top_twenty_charted():
    # How fast is a figure, not a property: benchmarks/report_100.py times it.
    exps = [experiment("b", "main", 0.1)] + [
        experiment(f"{i:07x}", f"exp-{i}", 0.2 + i / 200,
                   train__batch_size=8 * (i % 4 + 1), train__lr=10.0 ** -(i % 5 + 2))
        for i in range(1, 100)]
    page, summary = build_report(exps)

    assert len(md_rows(summary)) == 100
    bars = svgs(page)[0]
    title = bars.find("{http://www.w3.org/2000/svg}title").text
    assert title == "f1_macro, top 20 of 100 and the baseline"
    assert len(bars.findall("{http://www.w3.org/2000/svg}rect")) == 21
    assert "main (baseline)" in svg_text(bars)                 # the baseline, ranked last
    assert page.count("<tr class") == 100


def test_only_finished_runs_of_exp_show_are_read():
    def row(rev, typ, name=None, state=None, test="t1"):
        return {"Experiment": name, "rev": rev, "typ": typ, "State": state,
                "data/prepared/test.parquet": test, "data/prepared/labels.json": "l1"}
    table = [row("workspace", "baseline"), row("main", "baseline"),
             row("1111111", "branch_commit", "done", "Success"),
             row("2222222", "branch_commit", "in-workspace"),      # `dvc exp run`: no state
             row("3333333", "branch_commit", "bad-batch-1", "Failed"),
             row("4444444", "branch_commit", "waiting", "Queued"),
             row("5555555", "branch_base", "busy", "Running", test="t2"),
             row("abcdef0", "baseline"), row("6666666", "branch_base", "older", "Success"),
             row("1111111", "branch_commit", "done", "Success")]   # the same commit again

    runs = list_runs(table)

    assert [(r.name, r.baseline, r.state) for r in runs] == [
        ("main", "main", "success"), ("done", "main", "success"),
        ("in-workspace", "main", "success"), ("bad-batch-1", "main", "failed"),
        ("waiting", "main", "queued"), ("busy", "main", "running"),
        ("abcdef0", "abcdef0", "success"), ("older", "abcdef0", "success")]
    assert runs[0].data == "t1+l1" and runs[5].data == "t2+l1"


def test_page_helpers_escape_cells_and_keep_multi_line_values():
    from textclf.reporting.pages import html_page, html_table, markdown_table

    table = html_table(["k", "v"], [["a<b", "x: 1\ny: [2, 3]"], ["c", "d"]], ["best"])
    assert '<tr class="best"><td>a&lt;b</td><td><pre>x: 1\ny: [2, 3]</pre></td></tr>' in table
    assert '<tr class=""><td>c</td>' in table
    assert markdown_table(["k"], [["a|b\nc"]]).splitlines()[2] == "| a\\|b<br>c |"
    page = html_page("A & B", "<p>x</p>")
    assert page.startswith("<!DOCTYPE html>") and "<title>A &amp; B</title>" in page
    ET.fromstring(page.split("\n", 1)[1].replace("<meta charset=\"utf-8\">", ""))  # well-formed


class CommittedFiles:
    """A stand-in for dvc.api.DVCFileSystem.info at one revision."""

    def __init__(self, files: dict[str, dict]):
        self.files = files

    def info(self, path: str) -> dict:
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path]

    def isdvc(self, path: str) -> bool:
        return self.files.get(path, {}).get("isout", False)


def test_a_commit_whose_stages_used_other_data_than_committed_is_stale():
    """prepare re-run and committed, evaluate not: its metrics are from the old test split."""
    lock = {"stages": {"evaluate": {"deps": [
        {"path": "data/prepared/test.parquet", "md5": "e19016015d1c0c6e"},
        {"path": "src/textclf/evaluate.py", "md5": "0123456789abcdef"},
        {"path": "gone.csv", "md5": "ffff"}]}}}
    fresh = CommittedFiles({"data/prepared/test.parquet": {"md5": "e19016015d1c0c6e",
                                                            "isout": True},
                            "src/textclf/evaluate.py": {"md5": "a-new-edit", "isout": False}})
    assert stale_deps(fresh, lock) == ""
    class NotPulled(CommittedFiles):
        def info(self, path: str) -> dict:
            from dvc_data.index import DataIndexDirError

            raise DataIndexDirError("failed to load directory ('data', 'prepared')")

    assert stale_deps(NotPulled({"data/prepared/test.parquet": {"isout": True}}), lock) == ""
    moved = CommittedFiles({"data/prepared/test.parquet": {"md5": "8ea3977844f143a1",
                                                            "isout": True}})
    assert stale_deps(moved, lock) == ("evaluate used data/prepared/test.parquet e1901601, "
                                       "the committed one is 8ea39778")


@pytest.mark.parametrize("argv, message", [
    (["--html", "params.yaml"], "--html params.yaml: expected a .html file, found '.yaml'"),
    (["--markdown", "report.html"], "--markdown report.html: expected a .md file"),
    (["--html", "r/x.html", "--markdown", "r/x.html"], "expected a .md file"),
    (["--html", "r/x.html", "--markdown", "r/../r/x.md", "--html", "r/x.md.html"], None),
])
def test_report_outputs_are_checked_before_anything_is_read(tmp_path, monkeypatch, capsys,
                                                            argv, message):
    from textclf import report

    monkeypatch.chdir(tmp_path)          # not a DVC project: a refusal comes first
    (tmp_path / "params.yaml").write_text("train: {}\n")
    with pytest.raises(SystemExit) as exited:
        report.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1, err
    if message:
        assert message in err, err
    else:                                # good paths: refused later, for having no runs
        assert "expected" not in err.split(":")[1] and "r/x" not in err, err
    assert (tmp_path / "params.yaml").read_text() == "train: {}\n"


def test_report_outside_a_project_or_before_a_commit_says_which(tmp_path, monkeypatch, capsys):
    import subprocess

    from textclf import report

    monkeypatch.chdir(tmp_path)
    for expected in ("not a DVC project (no .dvc folder here or above)",
                     "no git commit to read experiments from"):
        with pytest.raises(SystemExit) as exited:
            report.main([])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and expected in err and err.count("\n") == 1, err
        if not (tmp_path / ".dvc").exists():        # DVC's words were "SCM error", then
            subprocess.run(["git", "init", "-q"], check=True)   # "unknown Git revision"
            subprocess.run(["dvc", "init", "-q"], check=True)
