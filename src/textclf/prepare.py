"""Stage `prepare`: check the dataset and split it into train / validation / test."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from textclf.dataset import (DataError, class_counts, clean_examples, label_order,
                             read_table, write_labels, write_split)
from textclf.errors import exits_on_user_error
from textclf.outputs import atomic_dir, write_json
from textclf.params import load_params

SPLITS = ("train", "val", "test")


def split_dataset(examples: pd.DataFrame, labels: list[str], val_size: float,
                  test_size: float, seed: int, source: str = "data") -> dict[str, pd.DataFrame]:
    """Stratified split that puts every class in every split.

    sklearn's stratified `train_test_split` can leave a small class out of a
    split; here each class is cut on its own, with at least one example in each
    split, and a class too small for that is an error.
    """
    rng = np.random.default_rng(seed)
    parts = {name: [] for name in SPLITS}
    counts = examples["label"].value_counts()
    for label in labels:
        rows = np.flatnonzero(examples["label"].to_numpy() == label)
        n = len(rows)
        n_test = max(1, round(n * test_size))
        n_val = max(1, round(n * val_size))
        if n - n_test - n_val < 1:
            raise DataError(f"{source}: class {label!r} has {counts.get(label, 0)} example(s); "
                            f"expected at least 3 so that train, validation and test each "
                            f"get one (more with val_size={val_size}, test_size={test_size})")
        rows = rng.permutation(rows)
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test:n_test + n_val])
        parts["train"].append(rows[n_test + n_val:])
    # Rows keep the file's order inside each split: stable, and easy to diff.
    return {name: examples.iloc[np.sort(np.concatenate(idx))].reset_index(drop=True)
            for name, idx in parts.items()}


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf prepare", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out-dir", required=True, help="folder for splits and labels.json")
    parser.add_argument("--stats", required=True, help="JSON file of counts (DVC metrics)")
    args = parser.parse_args(argv)

    data = load_params(args.params).data
    frame = read_table(data.path, [data.text_column, data.label_column])
    examples, stats = clean_examples(frame, data.text_column, data.label_column,
                                     data.labels, source=data.path)
    labels = label_order(examples["label"].unique(), data.labels)
    splits = split_dataset(examples, labels, data.val_size, data.test_size, data.seed,
                           source=data.path)

    with atomic_dir(args.out_dir) as out:
        for name, split in splits.items():
            write_split(split, out / f"{name}.parquet")
        write_labels(labels, out / "labels.json")
    stats.update(rows=len(examples), num_labels=len(labels),
                 split_sizes={name: len(split) for name, split in splits.items()},
                 class_counts={name: class_counts(split, labels)
                               for name, split in splits.items()})
    write_json(args.stats, stats)
    print(f"prepare: {len(examples)} examples, {len(labels)} labels -> {Path(args.out_dir)} "
          f"({', '.join(f'{k} {len(v)}' for k, v in splits.items())})")


if __name__ == "__main__":
    main()
