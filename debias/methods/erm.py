"""Empirical risk minimisation: plain cross-entropy (the "Vanilla" baseline of ReBias)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from debias.methods.base import TARGET_ONLY, Batch, Method, Stage


class ERM(Method):
    """Cross-entropy on the classifier: ``L = mean_i CE(f(x_i), y_i)``.

    Source: the Vanilla row of ReBias (Bahng et al. 2020, clovaai/rebias) and SubpopBench's
    ``ERM``. Reads target labels only.
    """

    name = "ce"
    supervision = TARGET_ONLY
    paper = "ERM / Vanilla (ReBias Table 1; SubpopBench ERM)"

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, stage: Stage):
        ce = F.cross_entropy(out["logits"].float(), batch.y)
        return {"ce": ce, "loss": ce}
