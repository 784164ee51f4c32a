"""What each epoch is evaluated on and which epoch is reported: GroupReports of the
classifier (or of any ``classify(split)``) on the evaluation splits due, the validation
selection (ties to the later epoch), and the selected epoch's final reports:
:class:`TrainerSelection`, a part of :class:`debias.train.loop.Trainer`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Any

import torch

from debias.metrics import group_report
from debias.metrics.groups import SELECTION_DIRECTION
from debias.train import batches
from debias.train.evaluate import encode
from debias.train.readout import val_readout

# A per-epoch evaluation shows a progress bar only when it takes longer than this.
EVAL_BAR_DELAY_S = 3.0


def derived_aligned(ds: Any) -> bool:
    """Whether ``ds``'s aligned groups were derived by a rule (CelebA, a metadata table without
    them) rather than given: such groups are not checked as a user's would be. Datasets without
    ``aligned_rule`` (Biased-MNIST, UTKFace) give theirs."""
    return getattr(ds, "aligned_rule", "given") != "given"


class TrainerSelection:
    """Evaluation and selection of a :class:`~debias.train.loop.Trainer` (which sets ``cfg``,
    ``splits``, ``eval_splits``, ``model``, ``dist``, ``history``, ``best``, ``stages``)."""

    eval_seconds: float = 0.0
    eval_bar_delay = EVAL_BAR_DELAY_S  # the progress-bar delay of evaluations and probing
    _eval_depth: int = 0
    # the adjusted average's weights, training (y, b) counts (load_data; None: not reported)
    group_weights: dict[tuple[int, int], int] | None = None
    # (epoch, reports) of the last and of the best epoch evaluated, for the final report
    _last_reports: tuple[int, dict[str, Any]] | None = None
    _best_reports: tuple[int, dict[str, Any]] | None = None

    @contextlib.contextmanager
    def evaluating(self):
        """Add the time of the ``with`` block to :attr:`eval_seconds` (nested blocks once)."""
        t0 = time.perf_counter()
        self._eval_depth += 1
        try:
            yield
        finally:
            self._eval_depth -= 1
            if self._eval_depth == 0:
                self.eval_seconds += time.perf_counter() - t0

    # -- evaluation --------------------------------------------------------------------------------
    def report(self, split: str, pred: torch.Tensor):
        ds = self.splits[split]
        return group_report(
            ds.targets.cpu().numpy(),
            pred.cpu().numpy(),
            ds.bias.cpu().numpy(),
            aligned=ds.aligned_groups,
            group_weights=self.group_weights,
            derived_aligned=derived_aligned(ds),
        )

    def evaluate(self, classify, splits: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
        """GroupReport numbers of ``classify(split) -> predictions`` on ``splits``, as one
        history row and as the reports themselves."""
        row: dict[str, float] = {}
        reports = {}
        for split in splits:
            reports[split] = self.report(split, classify(split))
            for key, v in reports[split].to_dict().items():
                row[f"{split}/{key}"] = v
        return row, reports

    def encode(
        self, split: str, fn=None, *, what: str = "encoding", delay: float = 0
    ) -> torch.Tensor:
        """``fn`` (default: features) over a whole split; sharded over ranks and re-assembled.
        A progress bar appears after ``delay`` seconds (evaluations: only the slow ones)."""
        ds = self.splits[split]
        rows = torch.arange(self.dist.rank, len(ds), self.dist.world_size)
        enabled = self.cfg.progress and self.dist.is_main

        def wrap(starts):
            return batches._progress(
                starts, enabled, f"{what} {split} ({len(ds):,} images)", delay=delay
            )

        local = encode(
            self.model, ds, batch_size=self.cfg.eval_batch_size, fn=fn, rows=rows, wrap=wrap
        )
        return self.dist.gather_rows(local, len(ds))

    def model_predictions(self, split: str) -> torch.Tensor:
        kept = self._kept.get(split) if self._kept is not None else None
        if kept is None:
            fn = lambda m, x: m(x).argmax(1)  # noqa: E731
        else:
            # The run's last evaluation keeps the features for the representation section;
            # m(x) is m.fc(m.features(x)), so the predictions are the same, bit for bit.
            def fn(m, x):
                feats = m.features(x)
                kept.append(feats)
                return m.fc(feats).argmax(1)

        return self.encode(split, fn=fn, what="evaluating", delay=EVAL_BAR_DELAY_S)

    # While the run's last evaluation runs: {split: feature batches} (see evaluate_classifier).
    _kept: dict[str, list[torch.Tensor]] | None = None

    # (epoch, {split: features}) of the run's last evaluation, for the representation section.
    _last_features: tuple[int, dict[str, torch.Tensor]] = (0, {})

    def evaluate_classifier(self, epoch: int, splits: list[str]) -> tuple[dict[str, float], dict]:
        """:meth:`evaluate` of the classifier's predictions; the run's last evaluation also
        keeps the features it computed, so the representation section need not encode again."""
        keep = self.cfg.represent and not self.dist.enabled and epoch + 1 == self.total_epochs
        self._kept = {s: [] for s in splits} if keep else None
        try:
            out = self.evaluate(self.model_predictions, splits)
        finally:
            kept, self._kept = self._kept, None
        if keep:
            self._last_features = (epoch + 1, {s: torch.cat(b) for s, b in kept.items() if b})
        return out

    def last_features(self, epoch: int) -> dict[str, torch.Tensor]:
        """The features the run's last evaluation kept, by split, if it evaluated ``epoch``."""
        evaluated, features = self._last_features
        return features if evaluated == epoch else {}

    def readout_row(self, stage: Any, k: int) -> dict[str, Any]:
        """The validation read-out (:mod:`debias.train.readout`) due after epoch ``k`` (0-based)
        of ``stage``: every ``represent_every`` epochs of a stage whose runner changes the
        features, and at its last epoch; ``{}`` when none is due."""
        every = self.cfg.represent_every
        if not every or "val" not in self.splits or not self._runner.changes_features:
            return {}
        if (k + 1) % every and k + 1 != stage.epochs:
            return {}
        ds = self.splits["val"]
        with self.evaluating():
            z = self.encode("val", what="read-out", delay=self.eval_bar_delay)
            return val_readout(
                z.float().cpu().numpy(), ds.targets.cpu().numpy(), ds.bias.cpu().numpy(),
                ds.aligned_groups, seed=self.cfg.seed, refits=self.cfg.represent_refits,
                derived_aligned=derived_aligned(ds),
            )  # fmt: skip

    def splits_now(self, epoch: int, final: bool) -> list[str]:
        """The evaluation splits of ``epoch``. ``eval_every=N``: all of them every N epochs and at
        the run's last epoch, else only val, in the final stage under a val selection.
        ``eval_every=0`` (only what is read): val every epoch; the test splits only at the last
        epoch under ``select: last`` (under a val selection :meth:`_final_reports` evaluates
        them once, on the selected state)."""
        every, last = self.cfg.eval_every, epoch + 1 == self.total_epochs
        val = ["val"] if "val" in self.splits else []
        if every == 0:
            return list(self.eval_splits) if last and self.cfg.select == "last" else val
        if (epoch + 1) % every == 0 or last:
            return list(self.eval_splits)
        return val if final and self.cfg.select != "last" else []

    def select(self, epoch: int, row: dict[str, float], reports, state_fn) -> None:
        """Track the selected epoch under a validation rule; ties go to the later epoch."""
        if self.cfg.select == "last":
            self._last_reports = (epoch + 1, reports)
            return
        value = row.get(self.cfg.select)
        if value is None:
            raise ValueError(
                f"select={self.cfg.select!r}: no such validation metric; available: "
                f"{sorted(k for k in row if k.startswith('val/'))}"
            )
        # A later epoch wins a tie: at high bias many epochs share worst-group 0.0, and the
        # later one has seen more training. A gap is minimised (its direction is -1).
        sign = SELECTION_DIRECTION[self.cfg.select.partition("/")[2]]
        if self.best is None or (
            not math.isnan(value) and not sign * value < sign * self.best["value"]
        ):
            self.best = {"epoch": epoch + 1, "value": value, "state": copy.deepcopy(state_fn())}
            self._best_reports = (epoch + 1, reports)

    def _final_reports(self) -> tuple[int, dict[str, Any]]:
        """The selected epoch and its reports: the classifier is put in its selected state and
        the reports computed when that epoch was evaluated are reused (not evaluated twice)."""
        cfg = self.cfg
        last = len(self.stages) - 1
        if self._current != last:  # resumed after the last epoch: restore the final stage
            self.enter_stage(last)
        runner = self._runner
        if cfg.select == "last":
            chosen, cached = self.history[-1]["epoch"], self._last_reports
        else:
            chosen, cached = self.best["epoch"], self._best_reports
            runner.load_selected(self, self.best["state"])
        reports = dict(cached[1]) if cached is not None and cached[0] == chosen else {}
        # A run resumed after its last epoch, or a selected epoch whose test splits eval_every
        # skipped: evaluate the selected classifier on what is missing, the way the epoch would
        # have (a linear stage: on the frozen features), so the numbers are the same.
        with self.evaluating():
            for s in self.eval_splits:
                if s not in reports:
                    reports[s] = self.report(s, runner.predict(self, s))
        runner.finish(self)
        return chosen, {s: reports[s] for s in self.eval_splits}
