"""The model: the model-folder contract (folder.py, card.py), loading and saving (loading.py),
device and precision choice (precision.py), batching, the engines that compute probabilities
(engines/: PyTorch, ONNX Runtime int8) and the Labeller that commands label texts with.

Imports the data wing (int8_agreement reads the validation split; file hashes) and the
shared modules. A new inference engine goes in engines/ and is chosen in
labeller.py.
"""
