"""Serving: the HTTP adapter behind `textclf serve` (Open Inference Protocol messages, the
FastAPI app, dynamic batching, the prediction log). It answers what `predict` answers: the
model wing's Labeller computes, this wing only speaks HTTP.

Imports the monitoring wing (the prediction log's reader, for /feedback's request index),
the model and data wings, and the shared modules.
"""
