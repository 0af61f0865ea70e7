"""Stage `prepare`: check the dataset and split it into train / validation / test.

The data is one file, cut into the three splits, or a folder of official splits
(train, and optionally validation and test): given splits are used as they are,
and only the missing ones are cut from train.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from textclf.data.dataset import (FORMATS, MAX_ROWS_SHOWN, DataError, check_readable,
                                  class_counts, clean_examples, clip, describe_rows, label_order,
                                  read_table, write_labels, write_split)
from textclf.errors import exits_on_user_error
from textclf.outputs import atomic_dir, write_json
from textclf.params import DataParams, load_params

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
HELD_OUT = ("val", "test")
# In a folder of official splits, the file stems that name each split (any FORMATS suffix).
SPLIT_STEMS = {"train": ("train",), "val": ("validation", "val", "dev"), "test": ("test",)}


def find_split_files(path: str | Path) -> dict[str, Path]:
    """{"train": path} for one data file, or the split files a folder holds."""
    path = Path(path)
    check_readable(path, folder_ok=True)
    if not path.is_dir():
        return {"train": path}
    entries = sorted(e for e in path.iterdir() if e.suffix.lower() in FORMATS)
    found = {name: [e for e in entries if e.stem.lower() in stems]
             for name, stems in SPLIT_STEMS.items()}
    for name, files in found.items():
        if len(files) > 1:
            raise DataError(f"{path}: {len(files)} files for the {name} split "
                            f"({', '.join(f.name for f in files)}); expected one")
    if not found["train"]:
        names = ", ".join(e.name for e in sorted(path.iterdir())) or "nothing"
        raise DataError(f"{path}: a folder without a training file; expected a data file "
                        f"({', '.join(sorted(FORMATS))}) or a folder of official splits: "
                        f"train.<ext>, optionally validation.<ext> (or val, dev) and "
                        f"test.<ext>; found {names}")
    return {name: files[0] for name, files in found.items() if files}


def split_dataset(examples: pd.DataFrame, labels: list[str], val_size: float,
                  test_size: float, seed: int, source: str = "data") -> dict[str, pd.DataFrame]:
    """Stratified train / val / test split that puts every class in every split."""
    splits = cut_splits(examples, labels, {"test": test_size, "val": val_size}, seed, source)
    return {name: splits[name] for name in SPLITS}


def cut_splits(examples: pd.DataFrame, labels: list[str], fractions: dict[str, float],
               seed: int, source: str = "data") -> dict[str, pd.DataFrame]:
    """Cut each split in `fractions` (in that order) out of `examples`; the rest is train.

    sklearn's stratified `train_test_split` can leave a small class out of a
    split; here each class is cut on its own, with at least one example in each
    split, and a class too small for that is an error.
    """
    rng = np.random.default_rng(seed)
    parts = {name: [] for name in ("train", *fractions)}
    label_of_row = examples["label"].to_numpy()
    for label in labels:
        rows = np.flatnonzero(label_of_row == label)
        sizes = [max(1, round(len(rows) * f)) for f in fractions.values()]
        if len(rows) - sum(sizes) < 1:
            raise DataError(f"{source}: class {label!r} has {len(rows)} example(s); "
                            f"{_too_small(fractions)}")
        rows = rng.permutation(rows)
        bounds = np.cumsum([0, *sizes])
        for name, start, end in zip(fractions, bounds[:-1], bounds[1:]):
            parts[name].append(rows[start:end])
        parts["train"].append(rows[bounds[-1]:])
    # Rows keep the file's order inside each split: stable, and easy to diff.
    return {name: examples.iloc[np.sort(np.concatenate(idx))].reset_index(drop=True)
            for name, idx in parts.items()}


def _too_small(fractions: dict[str, float]) -> str:
    if not fractions:
        return "expected at least 1 in the training file"
    names = ", ".join(["train", *(SPLIT_NAMES[name] for name in fractions)])
    sizes = ", ".join(f"{name}_size={f}" for name, f in fractions.items())
    return (f"expected at least {len(fractions) + 1} so that {names} each get one "
            f"(more with {sizes})")


def prepare_splits(given: dict[str, pd.DataFrame], sources: dict[str, str],
                   data: DataParams) -> tuple[dict[str, pd.DataFrame], list[str], int]:
    """Splits, label order and the number of train examples dropped for overlap.

    `given` maps "train" (and "val" / "test" where a file gives them) to cleaned
    examples (see `clean_examples`); splits not given are cut from train.
    """
    train = given["train"]
    labels = label_order(train["label"].unique(), data.labels)
    if len(labels) < 2:
        raise DataError(f"{sources['train']}: column {data.label_column!r} has one class "
                        f"only ({labels[0]!r}); expected at least 2 classes to tell apart")
    held_out = [name for name in HELD_OUT if name in given]
    for name in held_out:
        _check_labels_known(given[name], labels, sources[name], sources["train"])
    overlap = pd.Series(False, index=train.index)
    if data.overlap == "drop_from_train" and held_out:   # nothing to overlap with otherwise
        overlap = train["key"].isin(pd.concat([given[n]["key"] for n in held_out]).unique())
    # Test before val: the order the single-file split has always drawn in.
    cuts = {name: getattr(data, f"{name}_size") for name in ("test", "val") if name not in given}
    splits = {**given, **cut_splits(train[~overlap].reset_index(drop=True), labels, cuts,
                                     data.seed, source=sources["train"])}
    splits = {name: splits[name] for name in SPLITS}
    check_disjoint(splits, {name: sources.get(name, sources["train"]) for name in SPLITS})
    return splits, labels, int(overlap.sum())


def _check_labels_known(split: pd.DataFrame, labels: list[str], source: str,
                        train_source: str) -> None:
    unknown = split[~split["label"].isin(labels)]
    if len(unknown):
        shown = unknown.iloc[:MAX_ROWS_SHOWN]
        found = ", ".join(f"row {r}: {label!r}" for r, label in zip(shown["row"], shown["label"]))
        raise DataError(f"{source}: {describe_rows(unknown['row'].tolist())} with a label the "
                        f"training file {train_source} does not have; expected one of "
                        f"{labels}; found {found}")


def check_disjoint(splits: dict[str, pd.DataFrame], sources: dict[str, str]) -> None:
    """Refuse a text (compared by its key) in two splits: test examples must never train.

    Cutting from one file can never break this; given split files can.
    """
    tagged = pd.concat([pd.DataFrame({"key": split["key"].drop_duplicates(), "split": name})
                        for name, split in splits.items()], ignore_index=True)
    shared = tagged["key"].duplicated(keep=False)
    if not shared.any():
        return
    key = tagged["key"][shared].iloc[0]
    first, second = tagged["split"][tagged["key"].eq(key)].iloc[:2]
    where = {name: describe_rows(splits[name]["row"][splits[name]["key"].eq(key)].tolist())
             for name in (first, second)}
    fix = (" (or set data.overlap: drop_from_train to train without such texts)"
           if first == "train" else "")
    raise DataError(f"the text {clip(key)!r} is in two splits: {first} ({sources[first]}, "
                    f"{where[first]}) and {second} ({sources[second]}, {where[second]}); "
                    f"expected each text in one split only ({tagged['key'][shared].nunique()} "
                    f"such text(s) in all): remove them from one file{fix}")


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf prepare", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--data", required=True,
                        help="data file, or folder of official splits (data.path)")
    parser.add_argument("--out-dir", required=True, help="folder for splits and labels.json")
    parser.add_argument("--stats", required=True, help="JSON file of counts")
    args = parser.parse_args(argv)

    data = load_params(args.params).data
    files = find_split_files(args.data)
    given, read_stats = {}, []
    for name, path in files.items():
        frame = read_table(path, [data.text_column, data.label_column])
        given[name], stats = clean_examples(frame, data.text_column, data.label_column,
                                            data.labels, source=str(path))
        read_stats.append(stats)
    splits, labels, overlap = prepare_splits(given, {n: str(p) for n, p in files.items()}, data)

    with atomic_dir(args.out_dir) as out:
        for name, split in splits.items():
            write_split(split, out / f"{name}.parquet")
        write_labels(labels, out / "labels.json")
    rows = sum(len(split) for split in splits.values())
    write_json(args.stats, {
        "rows_read": sum(s["rows_read"] for s in read_stats),
        "duplicates_dropped": sum(s["duplicates_dropped"] for s in read_stats),
        "overlap_dropped_from_train": overlap,
        "files": {name: str(files[name]) if name in files else None for name in SPLITS},
        "rows": rows, "num_labels": len(labels),
        "split_sizes": {name: len(split) for name, split in splits.items()},
        "class_counts": {name: class_counts(split, labels) for name, split in splits.items()}})
    for spellings in labels_differing_in_case(labels):
        print(f"prepare: warning: the labels {' and '.join(map(repr, spellings))} differ only "
              f"in case and are {len(spellings)} classes; if they are one, respell them in "
              f"the data", file=sys.stderr)
    cut = [name for name in HELD_OUT if name not in files]
    given_note = f"; cut from train: {', '.join(cut) or 'nothing'}" if len(files) > 1 else ""
    print(f"prepare: {rows} examples, {len(labels)} labels -> {Path(args.out_dir)} "
          f"({', '.join(f'{k} {len(v)}' for k, v in splits.items())}{given_note})")


def labels_differing_in_case(labels: list[str]) -> list[list[str]]:
    """Groups of labels equal but for case ('pos' and 'Pos'): a typo as often as not,
    which data.labels or the spelling clean-up (textclf.canonical) do not merge."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label.casefold(), []).append(label)
    return [group for group in groups.values() if len(group) > 1]


if __name__ == "__main__":
    main()
