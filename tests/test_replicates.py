"""Runs that differ only in their seeds are summarised as mean and range in the report."""

from __future__ import annotations

import pytest

from experiment_records import experiment
from textclf.report import compare, render_html, render_markdown, to_json
from textclf.reporting.replicates import recipe_names, replicate_groups


def seeded() -> list:
    return [experiment("b", "main", 0.50),
            experiment("1", "lr2e4-s1", 0.60, train__lr=2e-4, train__seed=1),
            experiment("2", "lr2e4-s2", 0.64, train__lr=2e-4, train__seed=2),
            experiment("3", "lr2e4-s3", 0.65, train__lr=2e-4, train__seed=3),
            experiment("4", "lr5e5-s1", 0.55, train__lr=5e-5, train__seed=1),
            experiment("5", "lr5e5-s2", 0.57, train__lr=5e-5, train__seed=2),
            experiment("6", "other-data", 0.90, train__lr=5e-5, train__seed=3, data="other")]


def test_runs_differing_only_in_the_seed_are_grouped_per_test_set():
    groups = replicate_groups(seeded())
    assert [[e.name for e in g.runs] for g in groups] == [
        ["lr2e4-s1", "lr2e4-s2", "lr2e4-s3"], ["lr5e5-s1", "lr5e5-s2"]]
    assert groups[0].seeds == ["1", "2", "3"]
    mean, low, high = groups[0].spread("f1_macro")
    assert (mean, low, high) == pytest.approx((0.63, 0.60, 0.65))
    assert groups[0].spread("no-such-metric") is None
    assert recipe_names(groups) == ["lr=0.0002", "lr=5.0e-05"]


def test_the_report_shows_mean_and_range_across_seeds():
    c = compare(seeded(), "f1_macro")
    markdown = render_markdown(c)
    section = markdown.split("## Across seeds")[1].split("##")[0]
    rows = [line for line in section.splitlines() if line.startswith("| lr")]
    assert rows[0].startswith("| lr=0.0002 | 3 | 1 / 2 / 3 | 0.63 (0.6-0.65) |")
    assert rows[1].startswith("| lr=5.0e-05 | 2 | 1 / 2 | 0.56 (0.55-0.57) |")
    assert "Across seeds" in render_html(c)
    spread = to_json(c)["replicates"][0]
    assert spread["runs"] == ["lr2e4-s1", "lr2e4-s2", "lr2e4-s3"]
    assert spread["spread"]["f1_macro"] == pytest.approx([0.63, 0.60, 0.65])


def test_no_seed_section_without_replicates():
    c = compare([experiment("b", "main", 0.5), experiment("1", "x", 0.6, train__lr=1e-3)])
    assert c.replicates == [] and "Across seeds" not in render_markdown(c)
