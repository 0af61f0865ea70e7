"""A `DriftReport` as one offline HTML page and as Markdown, the verdict on top.

Texts, labels, paths and model versions are users' words: the HTML escapes them
(textclf.reporting.pages: html_table), the Markdown too (md_text, md_table there).
"""

from __future__ import annotations

from itertools import zip_longest
from typing import Callable

from textclf.monitoring.estimate import (MAX_RELIABLE_NOVELTY, ConfidenceEstimate,
                                        PerformanceEstimate)
from textclf.reporting.pages import md_table, md_text
from textclf.monitoring.report import DriftReport, format_p
from textclf.monitoring.stats import MIN_AUC, MIN_PSI
from textclf.reporting.charts import bar_chart
from textclf.reporting.pages import heading, html_page, html_table, paragraph, plain

EXAMPLE_CHARS = 300
WORD_CHARS = 40


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _summary_lines(report: DriftReport, esc: Callable[[str], str]) -> list[str]:
    """The lines above the tables; `esc` makes a user's words safe where they go (`str`
    for the HTML, which `paragraph` escapes)."""
    s = report.sources
    lines = [f"**{report.verdict}**",
             f"Model: {esc(s.model_version)}.",
             f"Current window: {report.current.rows:,} texts from {esc(s.current)}. Reference: "
             f"{report.reference.rows:,} texts from {esc(s.reference)}. Baseline of the "
             f"predicted labels: the model's test split, {report.test.rows:,} texts from "
             f"{esc(s.test)}."]
    if report.performance:
        lines.append(_estimate_line(report.performance))
    return lines


def _estimate_line(estimate: PerformanceEstimate) -> str:
    """One line: the window's estimated accuracy beside the test split's, or why not."""
    cur = estimate.current
    test = (f" On the test split the model scored {estimate.test_accuracy:.3f}."
            if estimate.test_accuracy is not None else "")
    if not estimate.reliable:
        return (f"Estimated accuracy without labels: **unreliable here**: "
                f"{estimate.reliability.reason}.{test}")
    atc = f", ATC {estimate.current_atc:.3f}" if estimate.current_atc is not None else ""
    f1 = ""
    if cur.f1_macro is not None:
        f1 = (f"; macro-F1 {cur.f1_macro:.3f}" if estimate.reliability.f1_reliable
              else "; macro-F1 unreliable here (the predicted labels moved)")
    return (f"Estimated accuracy without labels: {cur.accuracy:.3f} (95% interval "
            f"{cur.accuracy_low:.3f}-{cur.accuracy_high:.3f}, CBPE{atc}){f1}.{test}"
            + _window_size_note(cur))


def _window_size_note(cur: ConfidenceEstimate) -> str:
    """Where chance alone moves a window this small by more than 3 points: how many
    texts would tell 3 and 5 points apart."""
    half = (cur.accuracy_high - cur.accuracy_low) / 2 * 100
    if cur.texts_for(3) <= cur.rows:
        return ""
    return (f" With {cur.rows:,} texts, chance alone moves this window's accuracy as much "
            f"as ±{half:.1f} points from the estimate (95% of windows); about "
            f"{cur.texts_for(5):,} texts like these narrow that to ±5 points, "
            f"{cur.texts_for(3):,} to ±3.")


def _performance(estimate: PerformanceEstimate) -> tuple[list[str], list[list[str]]]:
    def value(number, low=None, high=None) -> str:
        if number is None:
            return "-"
        return f"{number:.3f}" + (f" ({low:.3f}-{high:.3f})" if low is not None else "")
    cur, test = estimate.current, estimate.test
    window = "current window" + ("" if estimate.reliable else " (UNRELIABLE)")
    f1 = value(cur.f1_macro, cur.f1_macro_low, cur.f1_macro_high)
    if estimate.reliable and not estimate.reliability.f1_reliable:
        f1 += " (UNRELIABLE: labels moved)"
    header = ["window", "accuracy (labels)", "macro-F1 (labels)", "CBPE accuracy (95%)",
              "CBPE macro-F1 (95%)", "ATC accuracy"]
    rows = [["test split", value(estimate.test_accuracy), value(estimate.test_f1_macro),
             value(test.accuracy, test.accuracy_low, test.accuracy_high),
             value(test.f1_macro, test.f1_macro_low, test.f1_macro_high),
             value(estimate.test_atc)],
            [window, "-", "-", value(cur.accuracy, cur.accuracy_low, cur.accuracy_high),
             f1, value(estimate.current_atc)]]
    return header, rows


def _performance_notes(estimate: PerformanceEstimate, esc: Callable[[str], str]) -> list[str]:
    fitted = estimate.atc
    atc = (f"ATC: the share of confidences above {fitted.threshold:.3f}, the threshold at "
           f"which the {fitted.rows:,} texts of {esc(fitted.source or 'the validation split')} "
           f"show their accuracy ({fitted.accuracy:.3f}), Garg et al. 2022"
           if fitted else
           "ATC: not computed (no labelled validation split; give --validation)")
    why = estimate.reliability
    return [("Reliable: " if estimate.reliable else "UNRELIABLE: ") + why.reason
            + (f"; macro-F1 UNRELIABLE: {why.f1_reason}" if why.f1_reason else "") + ".",
            "CBPE (as NannyML): expected accuracy = mean top-class probability, macro-F1 from "
            "the expected confusion matrix; intervals: where the realised score falls 95% of "
            "the time if the calibrated probabilities hold. " + atc + ". The test split row "
            "shows how close the estimators come where the labels are known. Novelty: each "
            "text's cosine distance to its nearest training text in the model's own middle "
            "layer (deep nearest neighbours, Sun et al. 2022), the current texts' against "
            "the validation split's."]


def _novelty_rows(report: DriftReport) -> list[list[str]]:
    """The novelty measure, where measured: it marks the estimate, not the verdict."""
    novelty = report.performance.novelty if report.performance else None
    if novelty is None:
        return []
    return [[f"novelty AUC: current farther from the training texts than validation texts "
             f"(nearest neighbour, layer {novelty.layer})",
             f"0.5 = as validation ({novelty.validation_rows:,} texts)",
             f"{novelty.auc:.3f} ({_pct(novelty.novel_share)} beyond 95% of validation)",
             f"estimate unreliable > {MAX_RELIABLE_NOVELTY}", ""]]


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
        *_novelty_rows(report),
    ]
    return header, rows


def _clip(text: str, limit: int = EXAMPLE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _words(report: DriftReport) -> tuple[list[str], list[list[str]]]:
    domain = report.domain
    # a "word" is whatever has no space in it: a logged text of megabytes can be one
    rows = [[_clip(cur, WORD_CHARS), f"{cw:.2f}" if cur else "", _clip(ref, WORD_CHARS),
             f"{rw:.2f}" if ref else ""]
            for (cur, cw), (ref, rw) in zip_longest(domain.words_current,
                                                    domain.words_reference, fillvalue=("", 0))]
    return ["current word", "weight", "reference word", "weight"], rows


def _examples(report: DriftReport) -> tuple[list[str], list[list[str]]]:
    rows = [["current", _clip(t)] for t in report.domain.examples_current]
    rows += [["reference", _clip(t)] for t in report.domain.examples_reference]
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
    summary = _summary_lines(report, plain)
    tables = {"Measures": _measures(report),
              **({"Performance without labels": _performance(report.performance)}
                 if report.performance else {}),
              "Words that tell the sides apart": _words(report),
              "Typical texts of each side (held-out half)": _examples(report),
              "Predicted labels": _labels(report)}
    md = [f"# {title}", *_summary_lines(report, md_text),
          *(f"> {md_text(note)}" for note in report.notes)]
    body = [heading(1, title), paragraph(summary[0], "warn" if report.drifted else ""),
            *map(paragraph, summary[1:]), *(paragraph(note, "warn", bold=False) for note in report.notes)]
    for name, (header, rows) in tables.items():
        md += [f"## {name}", md_table(header, rows) if rows else "(none)"]
        body += [heading(2, name), html_table(header, rows) if rows else paragraph("(none)")]
        if name == "Measures":
            md.append(HOW_TO_READ)
            body.append(paragraph(HOW_TO_READ))
        if name == "Performance without labels":
            notes = _performance_notes(report.performance, plain)
            md += _performance_notes(report.performance, md_text)
            body += [paragraph(notes[0], "" if report.performance.reliable else "warn"),
                     paragraph(notes[1])]
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
