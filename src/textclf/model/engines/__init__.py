"""Engines: what turns token ids into class probabilities. pytorch.py runs the model itself
(fp32, bf16, fp16); onnx_int8.py exports it to ONNX and runs it with int8 weights in ONNX
Runtime. Each takes length-sorted, padded batches (model/batching.py) and returns (N, C)
probabilities in input order; model/labeller.py picks one."""
