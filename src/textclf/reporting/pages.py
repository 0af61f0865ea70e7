"""One-file offline HTML pages and the tables in them, in HTML and in Markdown.

Shared by the pages textclf writes (the experiments report, the drift report): one
style sheet, no scripts, no network, so a page can be mailed or opened from a CI artifact.
Charts come from `textclf.reporting.charts`.
"""

from __future__ import annotations

import re
from typing import Sequence

from textclf.reporting.charts import escape

STYLE = """body{font:14px sans-serif;margin:24px;color:#222} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}
td:nth-child(2),th:nth-child(2){text-align:left} tr.best{background:#e6f4ea}
tr.baseline td:nth-child(2){font-weight:bold} p.warn{background:#fff4e5;padding:6px 10px}
pre{margin:0;text-align:left;font:12px monospace}
.charts{display:flex;flex-wrap:wrap;gap:16px;margin:12px 0}
svg text{font:11px sans-serif} svg text.t{font:bold 13px sans-serif}"""


def html_page(title: str, body_html: str) -> str:
    """A complete HTML document; `title` is plain text, `body_html` is already HTML."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head><body>\n"
            f"{body_html}\n</body></html>\n")


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]],
               row_classes: Sequence[str] = ()) -> str:
    """A table of plain-text cells (escaped here); `row_classes` gives each row a CSS class."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    classes = list(row_classes) + [""] * (len(rows) - len(row_classes))
    body = "\n".join(f'<tr class="{css}">' + "".join(f"<td>{_cell(c)}</td>" for c in row)
                     + "</tr>" for row, css in zip(rows, classes))
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _cell(text: str) -> str:
    # A multi-line cell (e.g. params as YAML) keeps its lines.
    return f"<pre>{escape(text)}</pre>" if "\n" in str(text) else escape(text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; `|` in cells is escaped, newlines become `<br>`."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(_md_cell(c) for c in line) + " |" for line in lines)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def paragraph(text: str, css: str = "") -> str:
    """A paragraph of plain text in which `**bold**` is bold, as in the Markdown version."""
    inner = re.sub(r"[*][*](.*?)[*][*]", r"<b>\1</b>", escape(text))
    return f'<p class="{css}">{inner}</p>' if css else f"<p>{inner}</p>"


def heading(level: int, text: str) -> str:
    return f"<h{level}>{escape(text)}</h{level}>"
