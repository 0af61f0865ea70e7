"""The one spelling of a text or a label: what counts as "the same" when data is read and
when params.yaml names labels (data and params both use it; it imports nothing of the project)."""

from __future__ import annotations

import decimal
import functools
import re
import sys
import unicodedata

import pandas as pd

_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,2})?")


def canonical_text(text: str) -> str:
    """`text` as compared for equality, of texts and of labels: NFKC, invisible and
    control characters removed, runs of whitespace made one space, no space at the ends.

    Two texts or labels that print the same (a zero-width space, a non-breaking
    space, a decomposed accent) must not become two examples or two classes.
    """
    if text.isascii() and text.isprintable():
        # The common case, kept cheap: prepare calls this once per row.
        if "  " not in text and text[:1] != " " and text[-1:] != " ":
            return text
    else:
        text = unicodedata.normalize("NFKC", text).translate(_invisible_characters())
    return " ".join(text.split())


@functools.cache
def _invisible_characters() -> dict[int, None]:
    # Format (Cf) and control (Cc) characters that are not whitespace, plus variation
    # selectors: they change no glyph. Built on first use (0.2 s), not at import.
    table = {cp: None for cp in range(sys.maxunicode + 1)
             if unicodedata.category(chr(cp)) in ("Cf", "Cc") and not chr(cp).isspace()}
    table.update((cp, None) for cp in [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)])
    return table


def normalize_label(value) -> str | None:
    """The one spelling of a label: 3, 3.0, '3', ' 3.0 ' and '03' are all '3'.

    Labels are compared as canonical text (see `canonical_text`); a label that
    reads as a decimal number is written as that number, without a fraction
    when it is whole. None, NaN and blank labels are missing (None).
    """
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    text = canonical_text(repr(float(value)) if isinstance(value, float) else str(value))
    if _NUMBER.fullmatch(text):
        number = decimal.Decimal(text)
        text = format(number.normalize(), "f") if number else "0"
    return text or None
