"""A `DriftReport` as one offline HTML page and as Markdown, the verdict on top."""

from __future__ import annotations

from itertools import zip_longest

from textclf.monitoring.report import DriftReport, format_p
from textclf.monitoring.stats import MIN_AUC, MIN_PSI
from textclf.reporting.charts import bar_chart
from textclf.reporting.pages import heading, html_page, html_table, markdown_table, paragraph

EXAMPLE_CHARS = 300


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _summary_lines(report: DriftReport) -> list[str]:
    s = report.sources
    return [f"**{report.verdict}**",
            f"Model: {s.model_version}.",
            f"Current window: {report.current.rows:,} texts from {s.current}. Reference: "
            f"{report.reference.rows:,} texts from {s.reference}. Baseline of the predicted "
            f"labels: the model's test split, {report.test.rows:,} texts from {s.test}."]


def _measures(report: DriftReport) -> tuple[list[str], list[list[str]]]:
    domain, labels, conf = report.domain, report.labels, report.confidence
    ref, test, cur = report.reference, report.test, report.current
    header = ["measure", "reference / test split", "current", "rule", "drift"]
    rows = [
        ["domain classifier ROC AUC (reference vs current)", "0.5 = cannot tell",
         f"{domain.auc:.3f}", f"> max({MIN_AUC}, chance {domain.permutation_threshold:.3f})",
         "yes" if domain.drifted else "no"],
        ["predicted labels: PSI / chi-squared p", "test split",
         f"{labels.psi:.3f} / p {format_p(labels.p_value)}",
         f"p < {labels.alpha:g} and PSI >= {MIN_PSI}", "yes" if labels.drifted else "no"],
        ["mean top-class probability", f"{conf.expected_mean:.3f} (test)",
         f"{conf.current_mean:.3f} ({round(conf.shift, 3) + 0.0:+.3f})",   # + 0.0: no -0.000
         "explains, does not decide", ""],
        ["words per text, mean / median", f"{ref.mean_words:.1f} / {ref.median_words:g}",
         f"{cur.mean_words:.1f} / {cur.median_words:g}", "explains, does not decide", ""],
        ["out-of-vocabulary words (not in reference)", f"{_pct(test.oov_rate)} (test)",
         _pct(cur.oov_rate), "explains, does not decide", ""],
    ]
    return header, rows


def _words(report: DriftReport) -> tuple[list[str], list[list[str]]]:
    domain = report.domain
    rows = [[cur, f"{cw:.2f}" if cur else "", ref, f"{rw:.2f}" if ref else ""]
            for (cur, cw), (ref, rw) in zip_longest(domain.words_current,
                                                    domain.words_reference, fillvalue=("", 0))]
    return ["current word", "weight", "reference word", "weight"], rows


def _examples(report: DriftReport) -> tuple[list[str], list[list[str]]]:
    def clip(text: str) -> str:
        return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"
    rows = [["current", clip(t)] for t in report.domain.examples_current]
    rows += [["reference", clip(t)] for t in report.domain.examples_reference]
    return ["side", "text the classifier is surest of"], rows


def _labels(report: DriftReport) -> tuple[list[str], list[list[str]]]:
    shift = report.labels
    n_test, n_cur = sum(shift.expected_counts) or 1, sum(shift.current_counts) or 1
    rows = [[label, f"{e:,} ({_pct(e / n_test)})", f"{c:,} ({_pct(c / n_cur)})"]
            for label, e, c in zip(shift.labels, shift.expected_counts, shift.current_counts)]
    return ["predicted label", "test split", "current"], rows


HOW_TO_READ = (
    "How to read this: the verdict rests on two tests, each at a 2.5% false-alarm level so "
    "that unchanged data is flagged at most 5% of the time. When no drift is found, the "
    "telling words and typical texts are mostly noise. Confidence, length and "
    "out-of-vocabulary rate help explain a verdict; the test split shows their usual values.")


def render(report: DriftReport) -> tuple[str, str]:
    """(HTML page, Markdown) for one report."""
    title = "Drift report: " + ("drift detected" if report.drifted else "no drift detected")
    summary = _summary_lines(report)
    tables = {"Measures": _measures(report),
              "Words that tell the sides apart": _words(report),
              "Typical texts of each side (held-out half)": _examples(report),
              "Predicted labels": _labels(report)}
    md = [f"# {title}", *summary, *(f"> {note}" for note in report.notes)]
    body = [heading(1, title), paragraph(summary[0], "warn" if report.drifted else ""),
            *map(paragraph, summary[1:]), *(paragraph(note, "warn") for note in report.notes)]
    for name, (header, rows) in tables.items():
        md += [f"## {name}", markdown_table(header, rows) if rows else "(none)"]
        body += [heading(2, name), html_table(header, rows) if rows else paragraph("(none)")]
        if name == "Measures":
            md.append(HOW_TO_READ)
            body.append(paragraph(HOW_TO_READ))
        if name == "Predicted labels":
            body.append(_charts(report))
    return html_page(title, "\n".join(body)), "\n\n".join(md) + "\n"


def _charts(report: DriftReport) -> str:
    shift, conf = report.labels, report.confidence
    n_test, n_cur = sum(shift.expected_counts) or 1, sum(shift.current_counts) or 1
    shares = bar_chart("Predicted labels, share of texts", list(shift.labels),
                       {"test split": [e / n_test for e in shift.expected_counts],
                        "current": [x / n_cur for x in shift.current_counts]}, vmax=1.0)
    bins = [f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)]
    confidence = bar_chart("Top-class probability, share of texts", bins,
                           {"test split": list(conf.expected_histogram),
                            "current": list(conf.current_histogram)})
    return f'<div class="charts">{shares}{confidence}</div>'
