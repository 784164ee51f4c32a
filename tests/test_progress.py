"""Progress of a run whose output is not a terminal (a log file, CI, ``make demo | tee``):
plain lines during an epoch instead of bars, and one line per epoch."""

from __future__ import annotations

import sys

from debias.train import TrainConfig, batches, train


def test_without_a_terminal_an_epoch_prints_step_lines_and_its_epoch_line(tmp_path, monkeypatch):
    monkeypatch.setattr(batches, "PROGRESS_LINE_S", 0.0)  # a line after every step
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    cfg = TrainConfig(
        out=str(tmp_path / "r"), dataset="digits", rho=0.95, model="smallconvnet", epochs=2,
        batch_size=64, max_steps=3, lr_milestones=[], device="cpu", represent=False,
    )  # fmt: skip
    lines: list[str] = []
    train(cfg, log=lines.append)
    steps = [line.rsplit(", ", 1) for line in lines if " steps (" in line]
    assert [s[0] for s in steps] == [
        "train epoch 1/2: 1/3 steps (33%)",
        "train epoch 1/2: 2/3 steps (66%)",
        "train epoch 2/2: 1/3 steps (33%)",
        "train epoch 2/2: 2/3 steps (66%)",
    ]
    assert all(s[1].endswith("s") and s[1][:-1].isdigit() for s in steps)  # seconds so far
    assert [line.split(" | ")[0] for line in lines if line.startswith("epoch")] == [
        "epoch   1 [train]",
        "epoch   2 [train]",
    ]
    # --quiet (progress off): the epoch lines only
    lines.clear()
    train(TrainConfig(**{**cfg.to_dict(), "out": str(tmp_path / "q"), "progress": False}),
          log=lines.append)  # fmt: skip
    assert not [line for line in lines if " steps (" in line]
    assert sum(line.startswith("epoch") for line in lines) == 2
