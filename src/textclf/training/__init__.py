"""Training: the loop (loop.py: state, epoch, validation, best weights), its checkpoints,
torch.distributed ranks, CPU dropout and warm starts from an earlier model folder.

Imports the model wing and the shared modules; the `train` command wires files, signals
and dvclive around it.
"""
