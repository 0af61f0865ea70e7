"""`textclf COMMAND ...`: the stage entry points DVC calls, plus predict, report and the rest."""

from __future__ import annotations

import gc
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

COMMANDS = {
    "prepare": "check the dataset and write stratified train/val/test splits",
    "resample": "down-sample the training split to data.class_ratio",
    "train": "fine-tune the classifier and keep its best epoch",
    "evaluate": "score the saved model on the test split",
    "predict": "label new texts with a trained model folder",
    "report": "compare experiments: one offline HTML page and a Markdown summary",
    "serve": "serve a model folder over HTTP (Open Inference Protocol)",
    "drift": "compare what a model sees now with its training data: HTML, Markdown, JSON",
    "feedback": "import true labels for served predictions; report live accuracy",
    "select": "choose the texts worth labelling next (CSV and Label Studio tasks)",
    "audit": "rank data labels that are probably wrong (confident learning, k-fold)",
    "tune": "search params with Optuna, each trial a DVC experiment, weak ones pruned early",
    "kfp": "compile or run a sweep of DVC experiments on Kubeflow Pipelines",
}
# Command -> module, where the module's name differs from the command's.
MODULES = {"kfp": "kfp_sweep"}
USAGE = "usage: textclf [-h] [--version] COMMAND [ARGS]"


def module_name(command: str) -> str:
    return f"textclf.{MODULES.get(command, command)}"


def help_text() -> str:
    width = max(map(len, COMMANDS))
    lines = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
    return (f"{USAGE}\n\nFine-tune and compare transformer text classifiers; DVC runs the "
            f"stages (dvc repro, dvc exp run).\n\ncommands:\n{lines}\n\noptions:\n"
            f"  -h, --help  show this help and exit\n  --version   show the version and exit\n\n"
            f"`textclf COMMAND --help` shows a command's options.")


def package_version() -> str:
    try:
        return version("textclf")
    except PackageNotFoundError:        # running from a source tree that is not installed
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    first = argv[0] if argv else None
    if first in ("-h", "--help"):
        print(help_text())
        raise SystemExit(0)
    if first == "--version":
        print(f"textclf {package_version()}")
        raise SystemExit(0)
    # Usage errors print the usage line, like argparse does for a command's own options.
    if first is None:
        print(f"{USAGE}\ntextclf: error: a command is required "
              f"(one of: {', '.join(COMMANDS)})", file=sys.stderr)
        raise SystemExit(2)
    if first not in COMMANDS:
        print(f"{USAGE}\ntextclf: error: unknown command '{first}' "
              f"(choose from: {', '.join(COMMANDS)})", file=sys.stderr)
        raise SystemExit(2)
    importlib.import_module(module_name(first)).main(argv[1:])


def run() -> None:
    """The `textclf` console script: `main`, then a quick exit. With torch and transformers
    loaded, the interpreter's final garbage collections walk millions of objects: 1.1-1.4 s
    per process here (every stage of every `dvc repro`, every `predict`). `gc.freeze()`
    moves them out of the collector's sight; modules are still torn down, finalizers and
    atexit handlers still run: 0.2 s (benchmarks/README.md). Not in `main`, which tests
    call in their own process."""
    try:
        main()
    finally:
        gc.freeze()
