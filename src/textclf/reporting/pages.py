"""One-file offline HTML pages and the tables in them, in HTML and in Markdown.

Shared by the pages textclf writes (the experiments report, the drift report): one
style sheet, no scripts, no network, so a page can be mailed or opened from a CI artifact.
Charts come from `textclf.reporting.charts`.

Texts, labels, model versions, paths and experiment names come from users. Copied raw into
Markdown, a `<script>` or `<img onerror=...>` stays live where it is rendered (a CI
comment, a repository browser), and a `|` or a newline breaks a table. Every such value
reaches a Markdown page through `md_text`, every table through `md_table`, every verbatim
block through `md_code_block`; HTML cells are escaped by `html_table`.
"""

from __future__ import annotations

import html
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


def paragraph(text: str, css: str = "", bold: bool = True) -> str:
    """A paragraph of plain text in which `**bold**` is bold, as in the Markdown version
    (with `bold`); a star escaped by `plain` stays a star."""
    inner = escape(text)
    if bold:
        inner = re.sub(r"(?<![\\])[*][*](.*?)(?<![\\])[*][*]", r"<b>\1</b>", inner)
        inner = inner.replace("\\*", "*")
    return f'<p class="{css}">{inner}</p>' if css else f"<p>{inner}</p>"


def plain(text: object) -> str:
    """A user's words (a path, a version, a name) inside a `paragraph`: shown as they are,
    `**` and all, where the page's own `**` make bold."""
    return str(text).replace("*", "\\*")


def heading(level: int, text: str) -> str:
    return f"<h{level}>{escape(text)}</h{level}>"


# What Markdown reads as marks inside a line: `\`, code, emphasis and strike-through
# anywhere; `_` only at a word's edge (inside batch_size or f1_macro it starts no
# emphasis); `]` only where it would close a link or image, `](`, `][`, or make a link
# definition, `]:`. (`<`, `>` and `&` are entities by then; `#` and list marks mean
# something only at a line's start, where the pages put their own words.)
_MARKS = re.compile(r"[\\`*~]|(?<!\w)_|_(?!\w)|\](?=[(\[:])")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")      # CommonMark's three line endings


def md_text(text: object) -> str:
    """`text` as Markdown that shows it as it is, in a line or a table cell: `<`, `>` and
    `&` as HTML entities (no live tag), Markdown's marks escaped, line breaks as `<br>` (no
    new line, no new row)."""
    escaped = _MARKS.sub(r"\\\g<0>", html.escape(str(text), quote=False))
    return _LINE_BREAK.sub("<br>", escaped)


def md_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table of plain-text cells, each escaped with `md_text` (`|` too)."""
    return markdown_table([md_text(h) for h in header],
                          [[md_text(cell) for cell in row] for row in rows])


def md_code_block(text: str, language: str = "") -> str:
    """`text` verbatim in a fenced block that no line of it can close: the fence is longer
    than any run of backticks in it."""
    runs = [len(run) for run in re.findall(r"`+", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{language}\n{text.rstrip(chr(10))}\n{fence}"
