"""Finding wrong labels: confident learning on hand-made probabilities with known answers
(textclf.training.label_issues), out-of-fold probabilities (textclf.training.cross_fit), and
the `audit` command on a toy dataset with labels flipped on purpose."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import LABELS, REPO, toy_reviews
from textclf import audit as command
from textclf.params import load_params
from textclf.training import cross_fit as cross_fit_module
from textclf.training.cross_fit import FoldError, assign_folds, cross_fit
from textclf.training.label_issues import (calibrate_joint, class_thresholds, combined_rank,
                                           confident_joint, find_label_issues,
                                           prune_by_class, prune_by_noise_rate)

# Ten examples, three classes. Row 2 is labelled 0 but looks like 1; row 9 is labelled 2
# but looks like 0. By hand: thresholds t = (2.5/4, 2.42/3, 1.82/3) = (0.625, 0.807, 0.607);
# row 6 (p1 = 0.7 < 0.807) reaches no threshold and is not counted.
PROBS = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.85, 0.05], [0.7, 0.2, 0.1],
                  [0.1, 0.82, 0.08], [0.05, 0.9, 0.05], [0.2, 0.7, 0.1],
                  [0.1, 0.1, 0.8], [0.05, 0.05, 0.9], [0.88, 0.0, 0.12]])
GIVEN = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])


def test_thresholds_joint_and_noise_rates_by_hand():
    thresholds = class_thresholds(PROBS, GIVEN)
    assert thresholds == pytest.approx([2.5 / 4, 2.42 / 3, 1.82 / 3])
    joint = confident_joint(PROBS, GIVEN, thresholds)
    assert joint.tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 2]]
    # row 1 counts 2 of its 3 examples: scaled to 3
    assert calibrate_joint(joint, np.array([4, 3, 3])) == pytest.approx(
        np.array([[3, 1, 0], [0, 3, 0], [1, 0, 2]]))
    issues = find_label_issues(PROBS, GIVEN)
    assert issues.estimated_errors == pytest.approx(2)
    assert issues.noise_rates() == pytest.approx([1 / 4, 0, 1 / 3])
    assert issues.suggested[[2, 9]].tolist() == [1, 0]


@pytest.mark.parametrize("method", ["noise-rate", "both", "self-confidence"])
def test_every_method_finds_the_two_planted_errors(method):
    # self-confidences 0.1 (row 2) and 0.12 (row 9); margins -0.75 and -0.76
    assert find_label_issues(PROBS, GIVEN, method).ranked.tolist() == [2, 9]
    assert find_label_issues(PROBS, GIVEN, method, rank_by="margin").ranked.tolist() == [9, 2]


def test_combined_ranks_by_the_mean_of_the_two_ranks():
    # rows 2 and 9 flagged; by self-confidence 2 (0.10) before 9 (0.12); their training
    # margins say the opposite more strongly: ranks by self-confidence (1-10) 2 -> 1, 9 -> 2;
    # by training margin 2 -> 5, 9 -> 1; means 3 and 1.5
    margin = np.array([0.9, 0.8, 0.65, 0.5, 0.7, 0.6, 0.4, 0.85, 0.95, -0.3])
    issues = find_label_issues(PROBS, GIVEN, rank_by="combined", training_margin=margin)
    assert issues.ranked.tolist() == [9, 2]
    assert combined_rank(np.array([0.1, 0.3, 0.2]), np.array([3.0, 1.0, 2.0])).tolist() == \
        [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="training margin per example"):
        find_label_issues(PROBS, GIVEN, rank_by="combined")


# Where the methods part: class 0's one estimated error (row 2's p1 = 0.88 reaches t1)
# is row 2 by noise rate (largest p1 - p0), row 3 by class (lowest p0, 0.05), which no
# threshold counts; t = (0.4625, 0.8533, 0.8333), joint [[2, 1, 0], [0, 2, 0], [0, 0, 1]].
PARTING = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.88, 0.02], [0.05, 0.5, 0.45],
                    [0.1, 0.8, 0.1], [0.05, 0.9, 0.05], [0.1, 0.86, 0.04],
                    [0.1, 0.1, 0.8], [0.05, 0.05, 0.9], [0.05, 0.15, 0.8]])


def test_the_methods_differ_where_the_paper_says_they_do():
    issues = find_label_issues(PARTING, GIVEN)
    assert issues.confident_joint.tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert issues.estimated_errors == pytest.approx(4 / 3)
    assert issues.ranked.tolist() == [2]
    calibrated = issues.calibrated_joint
    assert np.flatnonzero(prune_by_class(PARTING, GIVEN, calibrated)).tolist() == [3]
    assert find_label_issues(PARTING, GIVEN, "both").ranked.tolist() == []
    assert find_label_issues(PARTING, GIVEN, "self-confidence").ranked.tolist() == [3]


def test_a_row_whose_label_still_wins_is_never_a_confident_learning_suspect():
    # t = (2.075/4, 2.6/3): rows 1 and 3 (p0 0.51, 0.515) and 6 reach no threshold, so
    # row 0 of the joint is [1, 1], calibrated to [2, 2]: two rows to prune from class 0.
    # The largest margins p1 - p0 are rows 2 and 1, but row 1's label still wins.
    probs = np.array([[0.95, 0.05], [0.51, 0.49], [0.1, 0.9], [0.515, 0.485],
                      [0.1, 0.9], [0.1, 0.9], [0.2, 0.8]])
    given = np.array([0, 0, 0, 0, 1, 1, 1])
    issues = find_label_issues(probs, given)
    assert issues.calibrated_joint == pytest.approx(np.array([[2, 2], [0, 3]]))
    assert np.flatnonzero(prune_by_noise_rate(probs, given, issues.calibrated_joint)).tolist() \
        == [1, 2]
    assert issues.ranked.tolist() == [2]
    assert find_label_issues(probs, given, "both").ranked.tolist() == [2]
    # the plain baseline takes the two least self-confident, whatever wins
    assert find_label_issues(probs, given, "self-confidence").ranked.tolist() == [2, 1]


def test_a_label_nobody_carries_is_never_the_confident_class():
    probs = np.array([[0.2, 0.1, 0.7], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.9, 0.0]])
    issues = find_label_issues(probs, np.array([0, 0, 1, 1]))
    assert issues.thresholds[2] == np.inf
    assert issues.confident_joint[:, 2].sum() == 0


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match="label ids"):
        find_label_issues(PROBS, GIVEN + 1)
    with pytest.raises(ValueError, match="method"):
        find_label_issues(PROBS, GIVEN, "prune-by-vibes")


# folds ----------------------------------------------------------------------------------

def test_folds_are_stratified_seeded_and_keep_equal_texts_together():
    labels = np.repeat([0, 1, 2], [10, 15, 20])
    groups = [f"text {i}" for i in range(45)]
    groups[1] = groups[30] = "the same text"
    fold_of = assign_folds(labels, 5, seed=7, groups=groups)
    assert sorted(np.unique(fold_of)) == [0, 1, 2, 3, 4]
    for label in (0, 1, 2):         # 2, 3 and 4 of each label per fold, give or take one
        assert np.ptp(np.bincount(fold_of[labels == label], minlength=5)) <= 1
    assert fold_of[1] == fold_of[30]
    assert (assign_folds(labels, 5, seed=7, groups=groups) == fold_of).all()


def test_more_folds_than_the_smallest_class_is_refused_naming_it():
    with pytest.raises(FoldError, match="label 'b' has 2 example"):
        assign_folds(np.array([0, 0, 0, 1, 1]), 3, seed=0, labels=["a", "b"])


def tiny_params(tiny_model_dir, tmp_path, epochs: int = 6):
    """The tiny random model learns the toy cues in about 10 epochs at this rate."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["name"] = str(tiny_model_dir)
    params["train"].update(batch_size=8, lr=5e-3, precision="fp32", epochs=epochs)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_each_example_is_scored_once_by_a_model_that_never_saw_it(tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    data = toy_reviews(per_class=6)
    label_ids = data["label"].map(LABELS.index).to_numpy()
    params = load_params(tiny_params(tiny_model_dir, tmp_path))
    fold_of = assign_folds(label_ids, 3, seed=0)
    trained, scored = [], []
    real_fit, real_score = cross_fit_module.fit, cross_fit_module.split_probabilities

    def spy_fit(model, train, val, *args, **kwargs):
        trained.append({tuple(ids) for ids in train.ids})
        return real_fit(model, train, val, *args, **kwargs)

    def spy_score(model, held_out, *args):
        scored.append({tuple(ids) for ids in held_out.ids})
        return real_score(model, held_out, *args)

    monkeypatch.setattr(cross_fit_module, "fit", spy_fit)
    monkeypatch.setattr(cross_fit_module, "split_probabilities", spy_score)
    done = []
    fitted = cross_fit(data["text"].tolist(), label_ids, LABELS, params.model,
                       dataclasses.replace(params.train, epochs=2), fold_of, on_fold=done.append)
    probs = fitted.probs
    assert probs.shape == (30, 5) and not np.isnan(probs).any()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    # per fold: its training part scored at each epoch's end (the margins), then the fold
    assert len(trained) == 3 and len(scored) == 3 * (2 + 1)
    for fold, train_set in enumerate(trained):
        margins, held_out = scored[3 * fold:3 * fold + 2], scored[3 * fold + 2]
        assert margins == [train_set, train_set]
        assert not train_set & held_out
    assert sum(len(s) for s in scored[2::3]) == 30
    assert [(d.trained_on + d.scored) for d in done] == [30] * 3
    # every example is trained on by 2 of the 3 folds: its margin is theirs, in [-1, 1]
    assert fitted.training_margin.shape == (30,)
    assert np.all(np.abs(fitted.training_margin) <= 1) and np.ptp(fitted.training_margin) > 0


# the command ----------------------------------------------------------------------------

def run_audit(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        command.main([str(a) for a in argv])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


CUES = {"bad": "awful dreadful", "okay": "okay average", "good": "superb brilliant"}
FLIPPED = {3: "good", 25: "bad", 50: "bad"}         # 0-based rows: their labels, flipped


def noisy_toy(tmp_path):
    """60 reviews whose cue words give the label away, three labels flipped, and one text
    repeated (spelt with an extra space) with another label."""
    things = ["food", "room", "film", "phone", "book", "app"]
    data = pd.DataFrame([{"text": f"review {i}: the {things[i % 6]} was {cue}", "label": label}
                         for label, cue in CUES.items() for i in range(20)])
    for row, label in FLIPPED.items():
        data.loc[row, "label"] = label
    extra = pd.DataFrame({"text": ["review  99: the <b>food</b> | was superb brilliant",
                                   "review 99: the <b>food</b> | was superb brilliant"],
                          "label": ["good", "okay"]})
    path = tmp_path / "reviews.csv"
    pd.concat([data, extra], ignore_index=True).rename(columns={"label": "sentiment"}).to_csv(
        path, index=False)
    return path


def test_audit_finds_flipped_labels_and_conflicting_duplicates(tiny_model_dir, tmp_path,
                                                               capsys):
    path = noisy_toy(tmp_path)
    out = tmp_path / "reports" / "audit.csv"
    code, stdout, err = run_audit(
        ["--params", tiny_params(tiny_model_dir, tmp_path), "--data", path,
         "--label-column", "sentiment", "--folds", 3, "--epochs", 10, "--out", out,
         "--markdown", tmp_path / "reports" / "audit.md",
         "--metrics", tmp_path / "metrics" / "audit.json"], capsys)
    assert code == 0, err
    suspects = pd.read_csv(out, keep_default_na=False)
    assert list(suspects.columns) == command.COLUMNS
    assert suspects["rank"].tolist() == list(range(1, len(suspects) + 1))
    assert (suspects["suggested_label"] != suspects["given_label"]).all()
    # ranked by the mean of two ranks (combined, the default): no suspect is below one
    # that is less sure by both the out-of-fold probability and the training margin
    scores = suspects[["self_confidence", "training_margin"]].to_numpy()
    assert not any((scores[later] < scores[earlier]).all()
                   for earlier in range(len(scores)) for later in range(earlier + 1,
                                                                        len(scores)))
    file_rows = pd.read_csv(path)
    for r in suspects.itertuples():      # rows are the file's, from 1 after the header
        assert file_rows.at[r.row - 1, "text"] == r.text
        assert file_rows.at[r.row - 1, "sentiment"] == r.given_label
    # the cue words give the labels away: the flipped rows lead the list
    flipped_rows = {row + 1 for row in FLIPPED}
    assert flipped_rows <= set(suspects["row"].head(4)), suspects.head(8).to_string()

    metrics = json.loads((tmp_path / "metrics" / "audit.json").read_text())
    assert metrics["examples"] == 62 and metrics["suspects"] == len(suspects)
    assert metrics["conflicting_duplicates"] == {"texts": 1, "rows": 2}
    assert set(metrics["noise_rate_per_class"]) == set(CUES)
    page = (tmp_path / "reports" / "audit.md").read_text()
    assert "suspects, not verdicts" in page and "Confident Learning" in page
    assert "area under the margin" in page and "| AUM |" in page
    assert "good (row 61); okay (row 62)" in page
    assert "<b>" not in page and "&lt;b&gt;" in page and "\\|" in page
    assert "3 folds of 10 epoch(s)" in stdout


def test_folds_train_for_train_epochs_by_default_when_fewer_than_four(tiny_model_dir,
                                                                     tmp_path, capsys):
    argv = ["--data", noisy_toy(tmp_path), "--label-column", "sentiment",
            "--out", tmp_path / "a.csv", "--markdown", tmp_path / "a.md",
            "--metrics", tmp_path / "a.json"]
    code, stdout, err = run_audit(
        ["--params", tiny_params(tiny_model_dir, tmp_path, epochs=1), *argv], capsys)
    assert code == 0 and "3 folds of 1 epoch(s)" in stdout, err


@pytest.mark.parametrize("case, message", [
    ("missing", "missing.csv: file not found"),
    ("column", "no column 'sentiment'; found columns: text, label"),
    ("folds", "data.csv: column 'label', rows 4, 5: label 'negative' has 2 example(s); 3 "
              "folds need at least 3 of each label (fix or remove the rows, or use --folds 2)"),
    ("typo", "data.csv: column 'label', row 2: label 'goood' has 1 example(s)"),
    ("blank", "column 'label', row 3: expected a label"),
    ("folder", "a folder of split files"),
    ("out is the data", "is the --data file; expected another path"),
    ("two outputs at one path", "--metrics"),
])
def test_bad_inputs_give_one_line_errors(tiny_model_dir, tmp_path, capsys, case, message):
    data = toy_reviews(per_class=3).drop(index=3).reset_index(drop=True)   # 2 negatives
    if case == "blank":
        data.loc[2, "label"] = ""
    if case == "typo":
        data.loc[1, "label"] = "goood"
    path = tmp_path / "data.csv"
    data.to_csv(path, index=False)
    argv = ["--params", tiny_params(tiny_model_dir, tmp_path), "--folds", 3,
            "--out", tmp_path / "a.csv", "--markdown", tmp_path / "a.md",
            "--metrics", tmp_path / "a.json"]
    argv += {"missing": ["--data", tmp_path / "missing.csv"],
             "column": ["--data", path, "--label-column", "sentiment"],
             "folds": ["--data", path], "blank": ["--data", path], "typo": ["--data", path],
             "folder": ["--data", tmp_path],
             "out is the data": ["--data", path, "--out", path],
             "two outputs at one path": ["--data", path, "--metrics", tmp_path / "a.csv"]}[case]
    before = path.read_bytes()
    code, _, err = run_audit(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "a.csv").exists() and path.read_bytes() == before


@pytest.mark.parametrize("flag, value", [("--folds", "1"), ("--folds", "nan"),
                                         ("--epochs", "0"), ("--method", "vibes")])
def test_bad_flags_are_refused_by_argparse(tmp_path, capsys, flag, value):
    code, _, err = run_audit([flag, value], capsys)
    assert code == 2 and flag in err
