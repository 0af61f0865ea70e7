"""What people look at, rendered by headless Chromium: the report page and `dvc plots diff`."""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest

from harness import clone, copy_project, git_show, run

LOSS_TSV = "metrics/train/plots/metrics/train/loss.tsv"

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,2000", "--virtual-time-budget=10000"]
PLOTS = {"Training_loss": "loss", "Validation_accuracy": "accuracy",
         "Validation_macro-F1": "f1_macro", "Test_confusion_matrix": "actual",
         "Test_reliability_diagram": "accuracy"}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason="needs /usr/bin/chromium (apt-get install -y chromium)")]

# Chromium decodes the screenshot too: the PNG goes into a canvas as a data: URL (so the
# canvas is not tainted) and the page writes its pixel counts into the DOM.
PIXEL_PROBE = """<!DOCTYPE html><html><body><img id="shot" src="data:image/png;base64,{png}">
<script>
function count() {{
  const img = document.getElementById("shot"), canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0, colour = 0;
  for (let i = 0; i < px.length; i += 4) {{
    const hi = Math.max(px[i], px[i + 1], px[i + 2]), lo = Math.min(px[i], px[i + 1], px[i + 2]);
    if (lo < 235) ink++;
    if (hi - lo > 60) colour++;      // saturated: chart marks, not black or grey text
  }}
  document.body.dataset.pixels = JSON.stringify({{total: px.length / 4, ink, colour}});
}}
const shot = document.getElementById("shot");
shot.complete ? count() : shot.addEventListener("load", count);
</script></body></html>"""

_profiles = itertools.count()


def chromium(tmp: Path, page: Path, *args: str) -> str:
    """Run headless Chromium on `page` with a new empty profile; return its stdout."""
    profile = tmp / f"chromium-profile-{next(_profiles)}"
    profile.mkdir()
    result = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args,
                             page.as_uri()], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot_pixels(tmp: Path, page: Path, png: Path) -> dict:
    chromium(tmp, page, f"--screenshot={png}")
    probe = tmp / f"{png.stem}-probe.html"
    probe.write_text(PIXEL_PROBE.format(png=base64.b64encode(png.read_bytes()).decode()))
    found = re.search(r'data-pixels="([^"]+)"', chromium(tmp, probe, "--dump-dom"))
    assert found, "the pixel probe page did not run"
    return json.loads(html.unescape(found[1]))


def vega_specs(page_html: str) -> dict[str, dict]:
    """The Vega-Lite spec dvc-render put in each plot <div>, by div id."""
    specs = {}
    for found in re.finditer(r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*'
                             r"var spec = ", page_html):
        specs[found[1]], _ = json.JSONDecoder().raw_decode(page_html, found.end())
    return specs


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_model_dir):
    """A fresh clone with one experiment (batch size 16, 2 epochs) next to its baseline run."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        tmp = tmp_path_factory.mktemp("browser")
        origin = copy_project(tmp / "origin", "tiny model", model={"name": str(tiny_model_dir)},
                              train={"epochs": 2})
        project = clone(origin, tmp / "clone")
        # the baseline's metrics must come from its params (else the report lists it apart)
        run(["dvc", "repro"], project)
        run(["git", "add", "-A"], project)
        run(["git", "commit", "-qm", "tiny model run"], project)
        run(["dvc", "exp", "run", "-n", "half-batch", "-S", "train.batch_size=16"], project)
        yield project


def test_report_page_draws_its_charts(compared, tmp_path):
    page = tmp_path / "report.html"
    run(["textclf", "report", "--html", str(page), "--markdown", str(tmp_path / "report.md")],
        compared)

    dom = chromium(tmp_path, page, "--dump-dom")
    charts = re.findall(r"<svg\b.*?</svg>", dom, re.S)
    assert len(charts) == 7, dom[:2000]       # leaderboard, per-class, 3 curves, 2 matrices
    for chart in charts:
        marks = re.findall(r"<(?:rect|polyline|circle)\b", chart)
        assert len(marks) >= 2, chart[:500]
    assert all("half-batch" in chart for chart in charts[:5])
    pixels = screenshot_pixels(tmp_path, page, Path(tmp_path / "report.png"))
    assert pixels["ink"] > 0.02 * pixels["total"], pixels
    assert pixels["colour"] > 20_000, pixels   # bars, lines and matrix cells were painted


@pytest.fixture(scope="module")
def plots_page(compared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plots")
    run(["dvc", "plots", "diff", "HEAD", "half-batch", "-o", str(out)], compared)
    return out / "index.html"


# `dvc plots diff` pages load Vega from a CDN (dvc-render bundles no JavaScript), and tests
# send no traffic beyond loopback: the page is checked for its specs and data, not drawn.
def test_plots_diff_puts_both_experiments_in_every_plot(compared, plots_page):
    specs = vega_specs(plots_page.read_text())
    head_epochs = len(git_show(compared, "HEAD", LOSS_TSV).decode().splitlines()) - 1

    assert set(specs) == set(PLOTS)
    for plot_id, field in PLOTS.items():
        rows = specs[plot_id]["data"]["values"]
        per_rev = {rev: [r for r in rows if r["rev"] == rev] for rev in ("HEAD", "half-batch")}
        assert all(field in r for r in rows)
        if plot_id == "Test_confusion_matrix":        # one row per test example, each run
            assert len(per_rev["HEAD"]) == len(per_rev["half-batch"]) == 250
            assert specs[plot_id]["facet"]["column"]["field"] == "rev"   # side by side
        elif plot_id == "Test_reliability_diagram":   # one row per non-empty bin, 2 lines
            for rows in per_rev.values():
                assert 2 <= len(rows) <= 2 * 15
                assert all(0 <= r["confidence"] <= 1 and 0 <= r["accuracy"] <= 1 for r in rows)
        else:               # one row per epoch: the committed default run's, and 2
            assert (len(per_rev["HEAD"]), len(per_rev["half-batch"])) == (head_epochs, 2)
