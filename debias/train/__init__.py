"""Training runs: cross-entropy, two-stage contrastive and joint protocols (see ``loop``)."""

from debias.train.config import METHODS, MODES, TrainConfig
from debias.train.evaluate import encode, predict
from debias.train.loop import RunConflictError, Trainer, load_trained, resolve_device, train

__all__ = [
    "METHODS",
    "MODES",
    "RunConflictError",
    "TrainConfig",
    "Trainer",
    "encode",
    "load_trained",
    "predict",
    "resolve_device",
    "train",
]
