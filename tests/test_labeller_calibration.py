"""predict, serve and drift answer with calibrated probabilities by default, on every engine
alike (PyTorch and ONNX Runtime int8), and `--raw-probabilities` gives the model's own."""

from __future__ import annotations

import dataclasses
import shutil

import httpx
import numpy as np
import pandas as pd
import pytest

from conftest import toy_reviews
from serve_harness import build_model_folder, thread_server
from textclf.model.calibration import Calibration
from textclf.model.folder import TrainingInfo
from textclf.model.labeller import Labeller

TEMPERATURE = 2.5


@pytest.fixture(scope="module")
def folders(tiny_model_dir, tmp_path_factory):
    """The same weights twice: without a calibration (as a version-1 folder reads) and with
    a temperature of 2.5."""
    root = tmp_path_factory.mktemp("calibrated")
    raw = build_model_folder(tiny_model_dir, root / "raw")
    calibrated = root / "calibrated"
    shutil.copytree(raw, calibrated)
    info = TrainingInfo.load(raw)
    dataclasses.replace(info, calibration=Calibration(TEMPERATURE).to_dict()).save(calibrated)
    return raw, calibrated


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def texts() -> list[str]:
    return toy_reviews(per_class=4)["text"].tolist() + ["a plain sentence with no cue"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_engine_answers_calibrated_by_default_and_raw_on_request(folders, precision):
    raw_folder, calibrated_folder = folders
    own = Labeller.load(raw_folder, precision).probabilities(texts())
    calibrated = Labeller.load(calibrated_folder, precision).probabilities(texts())
    raw = Labeller.load(calibrated_folder, precision, calibrated=False).probabilities(texts())

    np.testing.assert_array_equal(raw, own)
    np.testing.assert_allclose(calibrated, Calibration(TEMPERATURE).apply(own), atol=1e-6)
    assert (calibrated.argmax(axis=1) == own.argmax(axis=1)).all()  # labels unchanged
    assert calibrated.max(axis=1).mean() < own.max(axis=1).mean()   # T > 1 softens
    np.testing.assert_allclose(calibrated.sum(axis=1), 1, atol=1e-5)


def test_predict_and_serve_write_the_calibrated_probability(folders, tmp_path):
    from textclf import predict

    _, folder = folders
    expected = Labeller.load(folder, "fp32").probabilities(texts()).max(axis=1)
    own = Labeller.load(folder, "fp32", calibrated=False).probabilities(texts()).max(axis=1)
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": texts()}).to_csv(source, index=False)
    for extra, want in [((), expected), (("--raw-probabilities",), own)]:
        out = tmp_path / "out.csv"
        predict.main(["--model", str(folder), "--input", str(source), "--output", str(out),
                      "--precision", "fp32", *extra])
        np.testing.assert_allclose(pd.read_csv(out)["probability"], want, atol=2e-6)

    for extra, want in [((), expected), (("--raw-probabilities",), own)]:
        with thread_server(["--model", str(folder), "--precision", "fp32", "--no-log",
                            "--threads", "1", "--max-wait-ms", "0", *extra]) as (url, _):
            answer = httpx.post(f"{url}/predict", json={"texts": texts()}, timeout=60)
        assert answer.status_code == 200, answer.text
        served = [p["probability"] for p in answer.json()["predictions"]]
        np.testing.assert_allclose(served, want, atol=2e-6)
