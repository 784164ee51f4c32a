"""The experiments behind the CPU protocol's contrastive settings (docs/experiments/README.md).

Each run trains LeNet on Biased-MNIST with the toolkit's own pipeline, then adds a
*representation probe*: a logistic regression fitted on the frozen encoder features of the
held-out validation split (coloured at rho 0.1, so colour and digit are nearly independent)
and scored on the unbiased test split. It separates what the encoder knows about digit shape
from what a linear classifier fitted on the biased training split chooses to read.

    DEBIAS_DATA=../shared/data python docs/experiments/cpu_protocol_probe.py OUT.jsonl

The probe reads validation labels of an unbiased distribution: it is a diagnostic, never a
protocol number (the sweep's two-stage methods fit their linear stage on the training split).
"""

from __future__ import annotations

import json
import sys
import time

from sklearn.linear_model import LogisticRegression

from debias.data import registry
from debias.metrics import group_report
from debias.train import TrainConfig, encode, load_trained, train

SPEC = registry.dataset_spec("biased-mnist")
DEFAULT_AUG = dict(SPEC.augment)
NO_AUG = {"crop_padding": 0, "rotation": 0.0, "hflip": False}


def representation_probe(run_dir: str) -> float:
    """Unbiased test accuracy of a logistic regression on frozen features fitted on val."""
    model, splits, _ = load_trained(run_dir, device="cpu")
    fit = encode(model, splits["val"]).numpy()
    clf = LogisticRegression(max_iter=300).fit(fit, splits["val"].targets.numpy())
    test = splits["test"]
    pred = clf.predict(encode(model, test).numpy())
    rep = group_report(test.targets.numpy(), pred, test.bias.numpy(), aligned=test.aligned_groups)
    return rep.unbiased_accuracy


def run(tag: str, out: str, aug: dict | None = None, **options) -> dict:
    registry.register_dataset(SPEC.replace(augment=aug or DEFAULT_AUG), replace=True)
    cfg = dict(model="lenet", val_size=2000, lr_milestones=[], progress=False, device="cpu")
    cfg.update(options)
    t0 = time.perf_counter()
    res = train(TrainConfig(out=f"runs/cpu_protocol_probe/{tag}", **cfg), log=lambda *a: None)
    row = {
        "tag": tag,
        "options": options,
        "augmentation": aug or DEFAULT_AUG,
        "unbiased": res["splits"]["test"]["unbiased_accuracy"],
        "biased": res["splits"]["test_biased"]["accuracy"],
        "representation_probe_unbiased": representation_probe(f"runs/cpu_protocol_probe/{tag}"),
        "seconds": time.perf_counter() - t0,
    }
    print(json.dumps(row), flush=True)
    with open(out, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def main(out: str) -> None:
    two_stage = dict(rho=0.99, epochs=2, linear_epochs=2, seed=0)
    run("ce_rho0.997", out, rho=0.997, method="ce", epochs=5, seed=0)
    run("supcon", out, method="supcon", **two_stage)
    run("contex", out, method="contex", **two_stage)
    run("supcon_no_augmentation", out, aug=NO_AUG, method="supcon", **two_stage)
    run("supcon_tau0.5", out, method="supcon", temperature=0.5, base_temperature=0.5, **two_stage)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpu_protocol_probe.jsonl")
