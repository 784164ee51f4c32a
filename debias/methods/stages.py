"""How the trainer runs a stage: one :class:`StageRunner` per stage kind.

A method names its stages (:meth:`Method.stages`) and, for each, the runner that runs its
epochs (:meth:`Method.stage_runner`; by default the built-in runner of ``stage.kind`` from
:data:`STAGE_KINDS`). The trainer knows no stage kind: it calls, for the stage an epoch
belongs to::

    runner = method.stage_runner(stage)        # on entering the stage (also on resuming in it)
    runner.enter(loop, stage, saved)           # saved: its state() entries on resume, else None
    row = runner.epoch(loop, stage, epoch, final)      # every epoch: history-row entries
    loop checkpoint <- runner.state()          # after every epoch

and, at the end of the run, on the final stage's runner: ``load_selected`` (under a validation
selection), ``predict`` (the splits the selected epoch did not evaluate), ``finish`` and
``reusable_features``. A method with a stage of its own subclasses :class:`StageRunner` and
returns it from ``stage_runner``; nothing in the loop changes.

What a runner may use of ``loop`` (a :class:`debias.train.loop.Trainer`): ``cfg``, ``method``,
``model`` (the classifier), ``train_set``, ``splits``, ``eval_splits``, ``device``,
``generator(epoch)``, ``batches(n, generator, rows)``, ``train_epoch(epoch, optimizer,
scheduler)``, ``linear_epoch(epoch, features)``, ``evaluating()`` (times forward passes),
``encode(split, what=...)``, ``report(split, predictions)``, ``evaluate(classify, splits)``,
``evaluate_classifier(epoch, splits)``, ``model_predictions(split)``, ``splits_now(epoch,
final)``, ``select(epoch, row, reports, state_fn)`` and ``last_features(epoch)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from debias.optim import LRScheduler, Schedule, make_optimizer, stage_schedule

# Stage kinds the built-in runners run (see STAGE_KINDS).
TRAIN = "train"  # gradient steps on method.loss; the classifier is evaluated every epoch
PRETRAIN = "pretrain"  # gradient steps on method.loss; only the online probe is evaluated
LINEAR = "linear"  # a linear classifier fitted on frozen features (SupContrast protocol)
# Gradient steps on method.loss with the classifier's head trained online on detached features
# by an optimiser of its own (FairKL); the classifier is evaluated every epoch.
ONLINE = "online"
# No gradient steps: the method changes the classifier in start_stage (DFR refits its last layer
# there); the classifier is then evaluated like a train epoch's. Give it one epoch.
REFIT = "refit"

# Probe numbers logged per epoch during contrastive pretraining (convergence curves).
PROBE_SPLITS = ("val", "test")
PROBE_METRICS = ("accuracy", "unbiased_accuracy")


class StageRunner:
    """Runs the epochs of one stage. The defaults are those of a stage without an optimizer
    that evaluates the classifier (:data:`REFIT`); override what a kind does differently.

    A runner is made anew when its stage is entered, and again when a run resumes in it:
    everything it must carry over is in :meth:`state` (written to the checkpoint after every
    epoch, handed back to :meth:`enter` as ``saved``).
    """

    # Whether its epochs change the encoder's features (the per-epoch validation read-out,
    # ``represent_every``, runs after those only).
    changes_features = False

    def enter(self, loop: Any, stage: Any, saved: Mapping[str, Any] | None) -> None:
        """Set the stage up (optimizers...), after ``method.start_stage``; ``saved`` holds
        :meth:`state`'s entries when the run resumes inside this stage, else ``None``."""

    def epoch(self, loop: Any, stage: Any, epoch: int, final: bool) -> dict[str, Any]:
        """One epoch (``epoch`` is run-wide, 0-based): its history-row entries. In the final
        stage (``final``) an evaluated epoch is offered to ``loop.select``."""
        return self.evaluate_classifier(loop, epoch, final)

    def state(self) -> dict[str, Any]:
        """Checkpoint entries a resumed stage needs (JSON keys, torch-saveable values)."""
        return {}

    # -- the end of the run (called on the final stage's runner) ----------------------------------
    def selected_state(self, loop: Any) -> dict[str, Any]:
        """What restores an epoch chosen by a validation selection (deep-copied by the loop)."""
        return {"model": loop.model.state_dict()}

    def load_selected(self, loop: Any, state: Mapping[str, Any]) -> None:
        """Put the classifier in a :meth:`selected_state`."""
        if "model" in state:
            loop.model.load_state_dict(state["model"])

    def predict(self, loop: Any, split: str) -> torch.Tensor:
        """The final classifier's predictions on ``split`` (the way an epoch evaluates it)."""
        return loop.model_predictions(split)

    def finish(self, loop: Any) -> None:
        """Make ``loop.model`` the run's final classifier (saved to ``model.pt``)."""

    def reusable_features(self, loop: Any, chosen_epoch: int) -> dict[str, torch.Tensor]:
        """Features of the final classifier already computed, by split, so the
        representation section need not encode them again."""
        return loop.last_features(chosen_epoch)

    # -- shared -------------------------------------------------------------------------------------
    def evaluate_classifier(self, loop: Any, epoch: int, final: bool) -> dict[str, Any]:
        """The classifier's GroupReport numbers on the splits due this epoch; offered to the
        selection in the final stage."""
        with loop.evaluating():
            row, reports = loop.evaluate_classifier(epoch, loop.splits_now(epoch, final))
        if final:
            loop.select(epoch, row, reports, lambda: self.selected_state(loop))
        return row


class GradientStage(StageRunner):
    """:data:`TRAIN`: the run's optimiser (``optimizer``: Adam, AdamW or SGD with ``momentum``;
    :func:`debias.optim.make_optimizer`) on ``method.trainable(stage)`` (``lr``,
    ``weight_decay``), its lr set by the run's schedule (``lr_schedule``: constant, multistep
    at the stage's milestones, cosine; optional warm-up; :class:`debias.optim.Schedule`);
    the classifier evaluated every epoch."""

    changes_features = True

    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None

    def enter(self, loop: Any, stage: Any, saved: Mapping[str, Any] | None) -> None:
        cfg = loop.cfg
        self.optimizer = make_optimizer(
            loop.method.trainable(stage), cfg.optimizer, lr=cfg.lr,
            weight_decay=cfg.weight_decay, momentum=cfg.momentum, nesterov=cfg.nesterov,
        )  # fmt: skip
        schedule = stage_schedule(cfg, stage.epochs, stage.milestones, cfg.lr)
        self.scheduler = LRScheduler(self.optimizer, schedule)
        if saved is not None and saved.get("optimizer") is not None:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
        else:
            loop.log(f"{stage.name}: {cfg.optimizer}, {schedule.describe()}")

    def epoch(self, loop: Any, stage: Any, epoch: int, final: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"lr": self.optimizer.param_groups[0]["lr"]}
        row |= loop.train_epoch(epoch, self.optimizer, self.scheduler)
        return row | self.evaluate_classifier(loop, epoch, final)

    def state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}


class Optimizers:
    """Several optimisers stepped as one (``zero_grad``, ``step``, ``state_dict``); the lr
    schedule and the history's ``lr`` read the first one's ``param_groups``."""

    def __init__(self, **optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers
        self.param_groups = next(iter(optimizers.values())).param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


class OnlineStage(GradientStage):
    """:data:`ONLINE` (FairKL's protocol): gradient steps as :class:`GradientStage` on the
    encoder, while the classifier's head, fed detached features (the encoder gets no
    cross-entropy gradient), is trained at the same steps by an optimiser of its own
    (``method.online_head(stage)``: the head, optimiser name, lr; no weight decay, constant
    lr: EIDOSLAB/unbiased-contrastive-learning ``main_infonce.py`` ``optimizer_fc``). The
    classifier (encoder + that head) is evaluated every epoch."""

    def enter(self, loop: Any, stage: Any, saved: Mapping[str, Any] | None) -> None:
        cfg = loop.cfg
        head, name, lr = loop.method.online_head(stage)
        main = make_optimizer(
            loop.method.trainable(stage), cfg.optimizer, lr=cfg.lr,
            weight_decay=cfg.weight_decay, momentum=cfg.momentum, nesterov=cfg.nesterov,
        )  # fmt: skip
        self.optimizer = Optimizers(main=main, head=make_optimizer(head.parameters(), name, lr=lr))
        schedule = stage_schedule(cfg, stage.epochs, stage.milestones, cfg.lr)
        self.scheduler = LRScheduler(main, schedule)
        if saved is not None and saved.get("optimizer") is not None:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
        else:
            loop.log(
                f"{stage.name}: {cfg.optimizer}, {schedule.describe()}; online head: {name} {lr:g}"
            )


class PretrainStage(GradientStage):
    """:data:`PRETRAIN`: gradient steps as :class:`GradientStage`; instead of the classifier
    (not trained yet) the online probe ``method.net.probe`` is evaluated, on the probe splits
    due this epoch: ``probe/<split>/<metric>`` for :data:`PROBE_METRICS`."""

    def epoch(self, loop: Any, stage: Any, epoch: int, final: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"lr": self.optimizer.param_groups[0]["lr"]}
        row |= loop.train_epoch(epoch, self.optimizer, self.scheduler)
        with loop.evaluating():
            return row | self.probe_row(loop, epoch)

    def probe_row(self, loop: Any, epoch: int) -> dict[str, float]:
        probe = loop.method.net.probe
        row = {}
        for split in PROBE_SPLITS:
            if split not in loop.splits_now(epoch, final=False):
                continue
            feats = loop.encode(split, what="probing", delay=loop.eval_bar_delay)
            with torch.no_grad():
                pred = probe(feats).argmax(1)
            rep = loop.report(split, pred).to_dict()
            for m in PROBE_METRICS:
                row[f"probe/{split}/{m}"] = rep[m]
        return row


class LinearStage(StageRunner):
    """:data:`LINEAR` (the SupContrast protocol): a linear classifier (seeded ``seed + 1``)
    fitted by Adam (at the stage's ``lr``: a two-stage method's ``linear_lr``; unset, the run's
    ``lr``) on the frozen encoder's features with cross-entropy, and evaluated on them; at the
    end of the run it becomes the classifier's ``fc``."""

    linear: nn.Module | None = None
    linear_optimizer: torch.optim.Optimizer | None = None

    def enter(self, loop: Any, stage: Any, saved: Mapping[str, Any] | None) -> None:
        self.frozen: dict[str, torch.Tensor] = {}
        torch.manual_seed(loop.cfg.seed + 1)
        self.linear = nn.Linear(loop.model.feature_dim, loop.train_set.num_classes)
        self.linear = self.linear.to(loop.device)
        self.lr = loop.cfg.lr if stage.lr is None else stage.lr
        opt = dict(stage.optim or {})
        self.linear_optimizer = make_optimizer(
            self.linear.parameters(), opt.get("optimizer", "adam"), lr=self.lr,
            weight_decay=opt.get("weight_decay", 0.0), momentum=opt.get("momentum", 0.9),
        )  # fmt: skip
        milestones = tuple(opt.get("milestones", ()))
        schedule = Schedule(
            "multistep" if milestones else "constant", self.lr, stage.epochs, milestones,
            opt.get("gamma", 0.1),
        )  # fmt: skip
        self.linear_scheduler = LRScheduler(self.linear_optimizer, schedule)
        if saved is not None and saved.get("linear") is not None:
            self.linear.load_state_dict(saved["linear"])
            self.linear_optimizer.load_state_dict(saved["linear_optimizer"])
            if saved.get("linear_scheduler") is not None:
                self.linear_scheduler.load_state_dict(saved["linear_scheduler"])
        elif stage.optim:
            loop.log(f"{stage.name}: {opt.get('optimizer', 'adam')}, {schedule.describe()}")

    def epoch(self, loop: Any, stage: Any, epoch: int, final: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"lr": self.linear_optimizer.param_groups[0]["lr"]}
        row |= loop.linear_epoch(epoch, self.train_features(loop, epoch))
        self.linear_scheduler.step()
        with loop.evaluating():
            evaluated, reports = loop.evaluate(
                lambda split: self.predict(loop, split), loop.splits_now(epoch, final)
            )
        row |= evaluated
        if final:
            loop.select(epoch, row, reports, lambda: self.selected_state(loop))
        return row

    def train_features(self, loop: Any, epoch: int) -> torch.Tensor:
        """The training features epoch ``epoch`` reads: all of them, or under ``max_steps`` only
        the rows of its first ``max_steps`` batches (encoded on first use; the other rows stay
        zero and are never read), so a capped run does not encode the whole training split."""
        cap = loop.cfg.max_steps
        n = len(loop.train_set)
        if cap is None or cap * loop.cfg.batch_size >= n:
            return self.features(loop, "train")
        # The order linear_epoch's batches will draw: the same generator, the same permutation.
        rows = torch.randperm(n, generator=loop.generator(epoch))[: cap * loop.cfg.batch_size]
        if getattr(self, "_partial", None) is None:
            self._partial = torch.zeros(n, loop.model.feature_dim, device=loop.device)
            self._have = torch.zeros(n, dtype=torch.bool)
        need = rows[~self._have[rows]]
        ds, bs = loop.train_set, loop.cfg.eval_batch_size
        was_training = loop.model.training
        loop.model.eval()
        with loop.evaluating(), torch.no_grad():
            for s in range(0, len(need), bs):
                chunk = need[s : s + bs].to(ds.device)
                z = loop.model.features(ds.normalize(ds.images[chunk]))
                self._partial[chunk.to(loop.device)] = z.float().to(self._partial.device)
        loop.model.train(was_training)
        self._have[need] = True
        return self._partial

    def features(self, loop: Any, split: str) -> torch.Tensor:
        """The frozen encoder's features of ``split``, encoded on first use."""
        if split not in self.frozen:
            # Every rank holds all features and fits the (cheap) linear classifier identically.
            with loop.evaluating():
                self.frozen[split] = loop.encode(split, what="encoding")
        return self.frozen[split]

    def state(self) -> dict[str, Any]:
        return {
            "linear": self.linear.state_dict(),
            "linear_optimizer": self.linear_optimizer.state_dict(),
            "linear_scheduler": self.linear_scheduler.state_dict(),
        }

    def selected_state(self, loop: Any) -> dict[str, Any]:
        return {"linear": self.linear.state_dict()}

    def load_selected(self, loop: Any, state: Mapping[str, Any]) -> None:
        self.linear.load_state_dict(state["linear"])

    def predict(self, loop: Any, split: str) -> torch.Tensor:
        self.linear.eval()
        with torch.no_grad():
            return self.linear(self.features(loop, split)).argmax(1)

    def finish(self, loop: Any) -> None:
        # From here on model(x) is the full classifier: encoder + the fitted linear layer.
        loop.model.fc.load_state_dict(self.linear.state_dict())

    def reusable_features(self, loop: Any, chosen_epoch: int) -> dict[str, torch.Tensor]:
        return dict(self.frozen)


# The built-in runner of each stage kind (Method.stage_runner's default).
STAGE_KINDS: dict[str, type[StageRunner]] = {
    TRAIN: GradientStage,
    PRETRAIN: PretrainStage,
    LINEAR: LinearStage,
    ONLINE: OnlineStage,
    REFIT: StageRunner,
}
