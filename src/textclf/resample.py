"""Stage `resample`: down-sample the training split to follow `data.class_ratio`.

Only the training split changes, so experiments with different ratios are all
scored on the same validation and test sets.
"""

from __future__ import annotations

import argparse
import math
import shutil

import numpy as np
import pandas as pd

from textclf.data.dataset import class_counts, read_labels, read_split, write_split
from textclf.errors import exits_on_user_error
from textclf.outputs import atomic_dir, write_json
from textclf.params import ParamsError, load_params


def ratio_targets(counts: dict[str, int], ratio: list[float]) -> dict[str, int]:
    """Largest class counts that follow `ratio` without inventing examples.

    The scale is set by the class with the fewest examples per ratio unit; each
    target is floored, so every class is within one example of the exact ratio.
    """
    scale = min(counts[label] / r for label, r in zip(counts, ratio))
    return {label: int(math.floor(scale * r + 1e-9)) for label, r in zip(counts, ratio)}


def resample_by_ratio(train: pd.DataFrame, labels: list[str], ratio: list[float] | None,
                      seed: int) -> pd.DataFrame:
    if ratio is None:
        return train
    if len(ratio) != len(labels):
        raise ParamsError(f"data.class_ratio has {len(ratio)} numbers {ratio}; expected one "
                          f"per label in order {labels}")
    before = class_counts(train, labels)
    targets = ratio_targets(before, ratio)
    # Flooring can round a class down to nothing; training without it is never intended.
    emptied = [label for label, target in targets.items() if target == 0]
    if emptied:
        raise ParamsError(f"data.class_ratio {ratio} leaves class {emptied[0]!r} with no "
                          f"training examples (training counts: {before}); expected a ratio "
                          f"that keeps at least one example of every class")
    rng = np.random.default_rng(seed)
    keep = []
    for label, target in targets.items():
        rows = np.flatnonzero(train["label"].to_numpy() == label)
        keep.append(rng.choice(rows, size=target, replace=False))
    return train.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf resample", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--train", required=True, help="training split from prepare")
    parser.add_argument("--labels", required=True, help="labels.json from prepare")
    parser.add_argument("--out-dir", required=True, help="folder for the resampled train split")
    parser.add_argument("--counts", required=True, help="JSON of class counts (DVC metrics)")
    args = parser.parse_args(argv)

    data = load_params(args.params).data
    labels = read_labels(args.labels)
    train = read_split(args.train)
    resampled = resample_by_ratio(train, labels, data.class_ratio, data.seed)

    with atomic_dir(args.out_dir) as out:
        if resampled is train:
            shutil.copyfile(args.train, out / "train.parquet")
        else:
            write_split(resampled, out / "train.parquet")
    write_json(args.counts, {
        "train_before": class_counts(train, labels),
        "train_after": class_counts(resampled, labels),
        "train_rows": len(resampled),
    })
    print(f"resample: {len(train)} -> {len(resampled)} training examples "
          f"(class_ratio={data.class_ratio})")


if __name__ == "__main__":
    main()
