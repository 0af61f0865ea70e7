"""Stage `evaluate`: score the saved model on the test split.

`evaluate.precision` picks how: `auto` (PyTorch, bf16 where it pays, as training decides),
a forced fp32/bf16/fp16, or `int8`: the ONNX Runtime model that `predict` and `serve`
answer with on CPUs without AMX, to see its own scores (`dvc exp run -S
evaluate.precision=int8`).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from textclf.data.dataset import read_split
from textclf.errors import exits_on_user_error
from textclf.metrics import classification_metrics
from textclf.model.labeller import Labeller
from textclf.outputs import atomic_dir, write_json
from textclf.params import load_params


def misclassified(texts: list[str], actual: list[str], probs: np.ndarray,
                  labels: list[str]) -> pd.DataFrame:
    """Wrong predictions, most confident first: the ones most worth reading."""
    predicted = probs.argmax(axis=1)
    label_ids = {label: i for i, label in enumerate(labels)}
    actual_ids = np.array([label_ids[a] for a in actual])
    frame = pd.DataFrame({
        "text": texts,
        "actual": actual,
        "predicted": [labels[i] for i in predicted],
        "confidence": probs.max(axis=1).round(4),
        "prob_actual": probs[np.arange(len(actual_ids)), actual_ids].round(4),
    })
    return frame[predicted != actual_ids].sort_values("confidence", ascending=False,
                                                      kind="stable")


@exits_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf evaluate", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--model-dir", required=True, help="model folder written by train")
    parser.add_argument("--test", required=True, help="test split (Parquet)")
    parser.add_argument("--live-dir", required=True, help="dvclive folder for metrics/plots")
    args = parser.parse_args(argv)

    from dvclive import Live

    params = load_params(args.params).evaluate
    # int8: the model predict and serve answer with on CPUs without AMX
    labeller = Labeller.load(args.model_dir, params.precision, batch_size=params.batch_size,
                             auto_int8=False)
    labels = labeller.labels
    test = read_split(args.test)
    probs = labeller.probabilities(test["text"].tolist())
    actual = test["label"].tolist()
    predicted = [labels[i] for i in probs.argmax(axis=1)]
    scores = classification_metrics(actual, predicted, labels)

    with atomic_dir(args.live_dir) as live_dir:
        with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            for name in ("accuracy", "f1_macro", "f1_weighted"):
                live.log_metric(name, scores[name], plot=False)
            live.log_sklearn_plot("confusion_matrix", actual, predicted,
                                  name="confusion_matrix.json")
        # Per-class scores stay out of DVC's metrics, so `dvc exp show` keeps to the
        # headline numbers; the report and this file have them.
        write_json(live_dir / "per_class.json", scores["per_class"])
        misclassified(test["text"].tolist(), actual, probs, labels).to_csv(
            live_dir / "misclassified.csv", index=False)
    print(f"evaluate: {len(test)} test examples, accuracy {scores['accuracy']:.4f}, "
          f"macro-F1 {scores['f1_macro']:.4f}")


if __name__ == "__main__":
    main()
