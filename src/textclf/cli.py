"""`textclf COMMAND ...`: the stage entry points DVC calls, plus predict and report."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "prepare": "check the dataset and write stratified train/val/test splits",
    "resample": "down-sample the training split to data.class_ratio",
    "train": "fine-tune the classifier and keep its best epoch",
    "evaluate": "score the saved model on the test split",
    "predict": "label new texts with a trained model folder",
    "report": "compare experiments: one offline HTML page and a Markdown summary",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
        print(f"usage: textclf COMMAND [ARGS]\n\ncommands:\n{lines}", file=sys.stderr)
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    importlib.import_module(f"textclf.{argv[0]}").main(argv[1:])
