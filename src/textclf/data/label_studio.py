"""Label Studio files: tasks to import, with the model's answers as pre-annotations, and
the JSON export read back as labelled rows.

Tasks follow Label Studio's "Basic Label Studio JSON format" with a `predictions` key
(the "Import pre-annotated data" guide): a list of

    {"data": {"text": ..., "request_id": ..., "index": ...},
     "predictions": [{"model_version": ..., "score": p,
                      "result": [{"id": ..., "from_name": "sentiment", "to_name": "text",
                                  "type": "choices", "value": {"choices": [LABEL]}}]}]}

`from_name`/`to_name` are the names in Label Studio's own Text Classification template
(`<Choices name="sentiment" toName="text">`), so its projects take the tasks as they are;
`labelling_config` writes that template with the model's labels. `request_id` (absent for
texts from a file) and `index` say which logged prediction a text was (`textclf serve`'s
prediction log), so the labels can go back as feedback.

An export in Label Studio's "JSON" format is the same list with each task's
`annotations`: `[{"result": [{"type": "choices", "value": {"choices": [LABEL]}, ...}],
"was_cancelled": false, ...}]`. Its last annotation that was not cancelled counts; a task
without one is not labelled yet and is skipped (counted). A malformed task is refused,
naming the file, the task (number and Label Studio id) and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence
from xml.sax.saxutils import quoteattr

import pandas as pd

from textclf.canonical import normalize_label
from textclf.data.dataset import DataError, check_readable

CHOICES_NAME = "sentiment"      # as in Label Studio's Text Classification template
TEXT_NAME = "text"


def labelling_config(labels: Sequence[str]) -> str:
    """The labelling interface (Label Studio's XML config) for these tasks: the text and
    one choice per label, a single choice per text."""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (f'<View>\n  <Text name="{TEXT_NAME}" value="${TEXT_NAME}"/>\n'
            f'  <Choices name="{CHOICES_NAME}" toName="{TEXT_NAME}" choice="single" '
            f'showInLine="true">\n{choices}\n  </Choices>\n</View>\n')


def prediction_tasks(rows: pd.DataFrame) -> list[dict]:
    """Tasks for `rows` (columns text, request_id ("" for a file's text), index,
    predicted_label, probability, model_version), each with the model's answer as a
    pre-annotation."""
    tasks = []
    for number, row in enumerate(rows.to_dict("records"), start=1):
        data = {TEXT_NAME: row["text"], "index": int(row["index"])}
        if isinstance(row["request_id"], str) and row["request_id"]:
            data["request_id"] = row["request_id"]
        tasks.append({"data": data, "predictions": [{
            "model_version": row["model_version"], "score": float(row["probability"]),
            "result": [{"id": f"textclf-{number}", "from_name": CHOICES_NAME,
                        "to_name": TEXT_NAME, "type": "choices",
                        "value": {"choices": [row["predicted_label"]]}}]}]})
    return tasks


@dataclass(frozen=True)
class ExportRow:
    """One labelled task of an export."""
    where: str                          # "FILE, task 3 (id 17)"
    text: Optional[str]                 # None: the task names request_id and index only
    label: str
    request_id: Optional[str] = None
    index: Optional[int] = None


@dataclass(frozen=True)
class Export:
    rows: tuple[ExportRow, ...]
    unlabelled: int                     # tasks without a submitted annotation, skipped


class TaskError(ValueError):
    """A malformed task; the message names file, task and field."""


def read_export(path: str | Path, labels: Optional[Sequence[str]] = None) -> Export:
    """The labelled tasks of a Label Studio JSON export, in file order. With `labels`, a
    label outside them is refused. DataError (one line) for a file that is not an export
    or has malformed tasks: the first is named, the others counted."""
    path = Path(path)
    check_readable(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a Label Studio JSON export ({err})") from None
    except RecursionError:
        raise DataError(f"{path}: not a Label Studio JSON export (nested too deeply to "
                        f"read)") from None
    if not isinstance(tasks, list):
        raise DataError(f"{path}: expected a Label Studio JSON export (a list of tasks, "
                        f"Export > JSON), found a JSON {type(tasks).__name__}")
    known = None if labels is None else {normalize_label(label) for label in labels}
    rows, errors, unlabelled = [], [], 0
    for number, task in enumerate(tasks, start=1):
        named = (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
        try:
            row = _task(f"{path}, task {number}{named}", task, known)
        except TaskError as err:
            errors.append(str(err))
            continue
        if row is None:
            unlabelled += 1
        else:
            rows.append(row)
    if errors:
        more = f" (and {len(errors) - 1} more malformed tasks)" if len(errors) > 1 else ""
        raise DataError(f"{errors[0]}{more}")
    return Export(tuple(rows), unlabelled)


def _task(where: str, task, known: Optional[set[str]]) -> Optional[ExportRow]:
    """A task's label, or None when no annotation was submitted."""
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        raise TaskError(f"{where}, field 'data': expected an object with the task's text, "
                        f"found {data!r:.60}")
    text = data.get(TEXT_NAME)
    request_id, index = _origin(where, data)
    named = text is None and request_id is not None and index is not None
    if not named and (not isinstance(text, str) or not text.strip()):
        raise TaskError(f"{where}, field 'data.{TEXT_NAME}': expected non-empty text (or "
                        f"data.request_id and data.index), found {text!r:.60}")
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise TaskError(f"{where}, field 'annotations': expected a list, found "
                        f"{type(annotations).__name__}")
    submitted = [(i, a) for i, a in enumerate(annotations)
                 if not (isinstance(a, dict) and a.get("was_cancelled") is True)]
    if not submitted:
        return None
    number, annotation = submitted[-1]
    label = _choice(f"{where}, field 'annotations[{number}]", annotation)
    if known is not None and label not in known:
        raise TaskError(f"{where}, field 'annotations[{number}].result': unknown label "
                        f"{label!r}; expected one of {', '.join(sorted(known))}")
    return ExportRow(where, text, label, request_id, index)


def _choice(field: str, annotation) -> str:
    """The one label an annotation chose: its `choices` result (the one named
    CHOICES_NAME where there are several)."""
    result = annotation.get("result") if isinstance(annotation, dict) else None
    if not isinstance(result, list):
        raise TaskError(f"{field}.result': expected a list of results, found {result!r:.60}")
    found = [r for r in result if isinstance(r, dict) and r.get("type") == "choices"]
    if len(found) > 1:
        found = [r for r in found if r.get("from_name") == CHOICES_NAME] or found
    if len(found) != 1:
        raise TaskError(f"{field}.result': expected one choices result holding the chosen "
                        f"label, found {len(found)}")
    value = found[0].get("value")
    choices = value.get("choices") if isinstance(value, dict) else None
    if (not isinstance(choices, list) or len(choices) != 1
            or not isinstance(choices[0], (str, int)) or isinstance(choices[0], bool)
            or normalize_label(choices[0]) is None):
        raise TaskError(f"{field}.result[].value.choices': expected a list of one label, "
                        f"found {choices!r:.60}")
    return normalize_label(choices[0])


def _origin(where: str, data: dict) -> tuple[Optional[str], Optional[int]]:
    """(request_id, index) of the task's data, each None where absent."""
    request_id, index = data.get("request_id"), data.get("index")
    if request_id is not None and (not isinstance(request_id, str) or not request_id):
        raise TaskError(f"{where}, field 'data.request_id': expected the `id` of an answer, "
                        f"found {request_id!r:.60}")
    if isinstance(index, str) and index.strip().isascii() and index.strip().isdigit():
        index = int(index)
    if index is not None and (not isinstance(index, int) or isinstance(index, bool)
                              or index < 0):
        raise TaskError(f"{where}, field 'data.index': expected a whole number >= 0, found "
                        f"{index!r:.60}")
    return request_id, index
