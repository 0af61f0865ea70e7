"""`textclf predict --input` on a big file: wall time and peak memory of the whole process.

Generates N texts of six words (CSV) in a temporary folder, builds the tiny test model there
(2 layers, hidden size 32, the bundled tokenizer; as tests/conftest.py does) unless
--model names a folder, and runs `predict --input ... --output ... --precision fp32` as its
own process. With --old, the same run of the code before chunking (`git show
HEAD:src/textclf/predict.py`, or --old-ref) alternates with it, and the outputs are compared.

    OMP_NUM_THREADS=1 python benchmarks/predict_scale.py --rows 1000000
    OMP_NUM_THREADS=1 python benchmarks/predict_scale.py --rows 8544 --old --rounds 3
    python benchmarks/predict_scale.py --rows 1000000 --model default --precision auto
"""

from __future__ import annotations

import argparse
import filecmp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, machine

WORDS = ("the food was good bad awful superb room film phone okay average nice poor weak "
         "brilliant dreadful and very not quite service staff price value").split()


def write_texts(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` texts of six words and an id column (in a process of its own: see run)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    words = rng.choice(np.array(WORDS), size=(rows, 6))
    texts = [" ".join(row) for row in words.tolist()]
    pd.DataFrame({"id": range(rows), "text": texts}).to_csv(path, index=False)


def build_tiny_model(folder: Path) -> None:
    """tests/conftest.py's tiny_model_dir: random weights, three labels."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from textclf.model.loading import bundled_model_dir

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128, num_labels=3)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def build_default_model(folder: Path) -> None:
    """The bundled MiniLM with a new 5-label head (untrained: the size and the speed of a
    model `dvc repro` trains, not its answers)."""
    from textclf.model.loading import DEFAULT_MODEL, load_pretrained

    tokenizer, model = load_pretrained(DEFAULT_MODEL, ["1", "2", "3", "4", "5"])
    tokenizer.model_max_length = 128                    # params.yaml's model.max_length
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def run(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one process. Linux carries a parent's peak RSS into a
    forked child's ru_maxrss, so this parent stays small: data and model are made by
    processes of their own."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    err = process.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({status}):\n{err}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--model", help="model folder, or 'default' for the bundled MiniLM "
                        "with a new head (default: the tiny model)")
    parser.add_argument("--precision", default="fp32",
                        help="predict's --precision (auto: what predict would choose here)")
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--old", action="store_true",
                        help="also run the code before chunking, alternating with the new")
    parser.add_argument("--old-ref", default="HEAD", help="git revision of the old code")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--make", nargs=2, metavar=("WHAT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:                       # the child processes that make data and model
        what, path = args.make
        builders = {"tiny": build_tiny_model, "default": build_default_model}
        write_texts(Path(path), args.rows) if what == "texts" else builders[what](Path(path))
        return

    print(f"# {machine(with_torch=False)}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    with tempfile.TemporaryDirectory(prefix="predict-scale-") as tmp:
        folder = Path(tmp)
        source = folder / "texts.csv"
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--make", "texts",
                        str(source)], check=True)
        model = args.model
        if model in (None, "default"):
            kind = model or "tiny"
            model = folder / kind
            subprocess.run([sys.executable, __file__, "--make", kind, str(model)],
                           check=True, stderr=subprocess.DEVNULL)
        contenders = {"new": [sys.executable, "-m", "textclf.predict",
                              "--chunk-size", str(args.chunk_size)]}
        if args.old:
            old = folder / "old_predict.py"
            old.write_bytes(subprocess.run(["git", "show", f"{args.old_ref}:src/textclf/predict.py"],
                                           cwd=REPO, check=True, capture_output=True).stdout)
            contenders = {"old": [sys.executable, str(old)], **contenders}
        print(f"# {args.rows:,} texts of six words (CSV, {source.stat().st_size / 1e6:.1f} MB), "
              f"model {args.model or 'tiny (2 layers, hidden 32)'}, --precision {args.precision}, "
              f"{args.rounds} round(s)")
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        env_cmd = ["--model", str(model), "--input", str(source), "--precision", args.precision]
        for _ in range(args.rounds):
            for name, cmd in contenders.items():
                out = folder / f"{name}.csv"
                figures[name].append(run([*cmd, *env_cmd, "--output", str(out)], folder))
        print("| code | wall s | peak RSS MB | texts/s |\n| --- | ---: | ---: | ---: |")
        for name, runs in figures.items():
            seconds = statistics.median(s for s, _ in runs)
            rss = max(r for _, r in runs)
            print(f"| {name} | {seconds:.1f} | {rss:,.0f} | {args.rows / seconds:,.0f} |")
        if args.old:
            same = filecmp.cmp(folder / "old.csv", folder / "new.csv", shallow=False)
            print(f"# outputs byte-identical: {same}")


if __name__ == "__main__":
    main()
