"""Training runs: cross-entropy, two-stage contrastive and joint protocols (see ``loop``)."""

from debias.train.config import METHODS, MODES, RunConflictError, TrainConfig
from debias.train.evaluate import encode, predict
from debias.train.finished import evaluate_run
from debias.train.loop import Trainer, load_trained, resolve_device, train
from debias.train.represent import represent
from debias.train.runfolder import RunFolderError

__all__ = [
    "METHODS",
    "MODES",
    "RunConflictError",
    "RunFolderError",
    "TrainConfig",
    "Trainer",
    "encode",
    "evaluate_run",
    "load_trained",
    "predict",
    "represent",
    "resolve_device",
    "train",
]
