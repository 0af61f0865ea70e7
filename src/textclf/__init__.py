"""Reproducible fine-tuning of transformer text classifiers, driven by DVC."""

__version__ = "0.1.0"
