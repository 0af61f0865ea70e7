"""The named alternative as a user would write it: a Hugging Face `Trainer` script and a
`pipeline()` script, each one whole process. `whole_process.py` times them against
`textclf train` and `textclf predict`; they only use transformers, torch and pandas.

    python benchmarks/hf_baseline.py train --model DIR --train T.parquet --val V.parquet \
        --labels labels.json --out OUT [--bf16]
    python benchmarks/hf_baseline.py predict --model DIR --input texts.csv --output out.csv

Each prints one JSON line: the validation accuracy (train) or the number of texts (predict).
"""

from __future__ import annotations

import argparse
import json
import tempfile


def train(args: argparse.Namespace) -> dict:
    """Fine-tune with the Trainer's best CPU configuration (length-grouped batches, dynamic
    padding, optionally bf16), score the validation split, save the model folder."""
    import pandas as pd
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, Trainer, TrainingArguments)

    labels = json.loads(open(args.labels, encoding="utf-8").read())["labels"]
    ids = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=ids)

    def dataset(path: str) -> list[dict]:
        frame = pd.read_parquet(path)
        encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=args.max_length)
        return [{"input_ids": i, "attention_mask": m, "labels": ids[label]} for i, m, label in
                zip(encoded["input_ids"], encoded["attention_mask"], frame["label"])]

    train_set, val_set = dataset(args.train), dataset(args.val)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(
            model=model, data_collator=DataCollatorWithPadding(tokenizer),
            train_dataset=train_set,
            args=TrainingArguments(
                output_dir=scratch, per_device_train_batch_size=args.batch_size,
                per_device_eval_batch_size=64, num_train_epochs=1, learning_rate=args.lr,
                weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear",
                max_grad_norm=1.0, bf16=args.bf16, train_sampling_strategy="group_by_length",
                use_cpu=True, report_to="none", save_strategy="no", eval_strategy="no",
                logging_strategy="no", disable_tqdm=True, seed=args.seed,
                dataloader_num_workers=0))
        trainer.train()
        # label_ids, not val_set's order: with group_by_length the Trainer also groups the
        # evaluation batches by length, and returns predictions in that order.
        scored = trainer.predict(val_set)
    accuracy = float((scored.predictions.argmax(-1) == scored.label_ids).mean())
    trainer.save_model(args.out)
    tokenizer.save_pretrained(args.out)
    return {"val_accuracy": accuracy}


def predict(args: argparse.Namespace) -> dict:
    """Label a CSV's text column with pipeline("text-classification"), write a CSV."""
    import pandas as pd
    from transformers import pipeline

    frame = pd.read_csv(args.input)
    classify = pipeline("text-classification", model=args.model, device="cpu")
    results = classify(frame[args.text_column].tolist(), batch_size=args.batch_size,
                       truncation=True, max_length=args.max_length)
    frame["predicted_label"] = [r["label"] for r in results]
    frame["probability"] = [r["score"] for r in results]
    frame.to_csv(args.output, index=False)
    return {"texts": len(frame)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train", help="Trainer: fine-tune, validate, save")
    for flag in ("--model", "--train", "--val", "--labels", "--out"):
        fit.add_argument(flag, required=True)
    fit.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    fit.add_argument("--batch-size", type=int, default=32)
    fit.add_argument("--lr", type=float, default=1e-4)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--max-length", type=int, default=128)
    label = commands.add_parser("predict", help="pipeline(): label a CSV")
    for flag in ("--model", "--input", "--output"):
        label.add_argument(flag, required=True)
    label.add_argument("--text-column", default="text")
    label.add_argument("--batch-size", type=int, default=32)
    label.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    print(json.dumps(train(args) if args.command == "train" else predict(args)))


if __name__ == "__main__":
    main()
