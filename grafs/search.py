"""The GRAFS bilevel search: DrNAS relaxation, warmstart, bounded ops and progressive shrinking.

The loop knows nothing about datasets or benchmarks: it talks to a :class:`SearchTask`, which
builds the network around an activation factory and hands out batches, losses and validation
scores. ``bench`` adapts its tasks to this protocol.

Two modes:

* ``fixed`` (default): the architecture step back-propagates into alpha/beta only and the weight
  step into the weights only, and the best epoch is chosen by validating the discretized cell.
  On networks with BatchNorm the cell is scored after re-estimating the BatchNorm statistics under
  it (the running statistics gathered under the stochastic mixture do not belong to the cell), and
  the search state is restored afterwards. Warmstart rounds, whose weights trained with the default
  activation, are validated and recorded but never selected.
* ``reference``: reproduces defects 1-3 of the published code, so its behaviour can be re-run
  and each defect's effect measured: gradients are not isolated between the two steps (the
  weights also learn from the validation batch and alpha/beta carry leaked training gradients
  into their next step), selection validates the stochastic supernet, and validation during
  warmstart runs the default activation (and may select a warmstart round).

In both modes the architecture step takes one Adam step per weight step: with gradient accumulation
its gradient accumulates over the same number of architecture micro-batches, as the reference does.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from grafs.cell import CellSite, SearchCell
from grafs.config import MODES, SearchConfig, SearchOptions
from grafs.cost import Cost
from grafs.errors import Diverged, UserError
from grafs.genotype import Genotype
from grafs.ops import SLOTS, slot_candidates
from grafs.steps import AccumulatedStep

__all__ = ["MODES", "SearchConfig", "SearchOptions", "SearchResult", "SearchTask", "search", "shrink_schedule"]


class SearchTask(Protocol):
    """What a search needs from a task. Batches are :class:`~grafs.batch.Batch` es (or anything with
    ``.size``, the samples they hold, that :meth:`loss` accepts)."""

    name: str
    rounds: int  # search length: epochs, or iterations for iteration-based tasks
    validate_every: int  # rounds between validations
    maximize: bool  # direction of the validation score

    def build_model(self, make_site: Callable[[nn.Module], nn.Module]) -> nn.Module:
        """The network with ``make_site(default)`` at every activation site, ``default`` being the
        activation the site has without the search (ReLU, GELU, ...): warmstart runs it."""
        ...

    def weight_optimizer(self, parameters: Iterable[Tensor], total_steps: int) -> tuple[torch.optim.Optimizer, object]:
        """An optimizer for the network weights and its per-step learning-rate scheduler."""
        ...

    def round_batches(self, round_index: int) -> Iterator:
        """Weight-step micro-batches of one round, from the first 75 % of the training split."""
        ...

    def steps_per_round(self) -> int: ...

    def arch_batch(self): ...

    def calibration_batches(self, count: int) -> Iterator:
        """``count`` batches from the weights' training split for BatchNorm recalibration.

        The same batches at every call, drawn without advancing the round or architecture batches
        (or any global random state), so that scoring leaves the search's trajectory unchanged.
        """
        ...

    def loss(self, model: nn.Module, batch) -> Tensor: ...

    def validate(self, model: nn.Module) -> tuple[float, int]:
        """Validation score and the number of samples it used."""
        ...

    accumulation: int  # micro-batches per weight step, and per architecture step
    grad_clip: float | None


@dataclass
class SearchResult:
    genotype: Genotype
    status: str  # ok | diverged
    message: str
    best_round: int
    best_score: float
    history: list[dict]
    cost: Cost
    config: SearchConfig
    nonfinite: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "genotype": self.genotype.to_dict(),
            "formula": self.genotype.formula(),
            "status": self.status,
            "message": self.message,
            "best_round": self.best_round,
            "best_score": self.best_score,
            "cost": self.cost.to_dict(),
            "config": asdict(self.config),
            "nonfinite": self.nonfinite,
        }


# ----------------------------------------------------------------------------------------------
# Progressive shrinking
# ----------------------------------------------------------------------------------------------
def total_candidates(space: str = "standard") -> int:
    return sum(len(slot_candidates(slot, space)) for slot in SLOTS)


def shrink_schedule(rounds: int, start_shrinking: int, initial_ops: int = 110) -> dict[int, int]:
    """Drops per round: ``start - 1 + floor(logspace(0, log10(rounds - start), initial_ops - 6))``."""
    if not 0 < start_shrinking < rounds:
        raise UserError(
            f"progressive shrinking must start after round 0 and before the last of {rounds} rounds, "
            f"got start_shrinking={start_shrinking}; lengthen the search or turn shrinking off"
        )
    spacing = np.logspace(0, math.log10(rounds - start_shrinking), initial_ops - len(SLOTS))
    times = start_shrinking - 1 + np.floor(spacing)
    return dict(sorted(Counter(int(t) for t in times).items()))


# ----------------------------------------------------------------------------------------------
# Helpers around the cell
# ----------------------------------------------------------------------------------------------
def cell_sites(model: nn.Module) -> list[CellSite]:
    return [module for module in model.modules() if isinstance(module, CellSite)]


@contextlib.contextmanager
def default_activation(cell: SearchCell, enabled: bool = True):
    previous = cell.use_default
    cell.use_default = enabled
    try:
        yield
    finally:
        cell.use_default = previous


@contextlib.contextmanager
def discretized(model: nn.Module, cell: SearchCell):
    """Every site computes the cell's current discrete genotype instead of the mixture."""
    sites = cell_sites(model)
    module = cell.discretize().to_module().to(next(iter(cell.parameters())).device)
    saved = [site.default for site in sites]
    for site in sites:
        site.default = module
    try:
        with default_activation(cell):
            yield
    finally:
        for site, default in zip(sites, saved, strict=True):
            site.default = default


def alpha_summary(cell: SearchCell) -> dict[str, dict[str, float]]:
    """Per slot, the expected mixture weight (Dirichlet mean) of each active op."""
    summary = {}
    for index, slot in enumerate(SLOTS):
        names = cell.active_ops(index)
        alphas = cell.active_alphas(index).detach().double()
        concentration = torch.nn.functional.elu(alphas) + 1
        weights = (concentration / concentration.sum()).tolist()
        summary[slot] = {name: round(weight, 6) for name, weight in zip(names, weights, strict=True)}
    return summary


def leading_weights(summary: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per slot, the op with the largest expected weight, that weight, and uniform (1 / active ops)."""
    leading = {}
    for slot, weights in summary.items():
        name = max(weights, key=weights.get)
        leading[slot] = {"op": name, "weight": weights[name], "uniform": round(1 / len(weights), 6)}
    return leading


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def recalibrated_batch_norm(model: nn.Module, batches: Iterable, forward: Callable[[object], object]) -> Iterator[int]:
    """Re-estimate every BatchNorm's running statistics on ``batches``; restore them on exit.

    The statistics are reset and re-accumulated as a cumulative average (momentum None) by
    train-mode ``forward`` passes without gradients; on exit every buffer (num_batches_tracked
    too), every momentum and the model's train/eval mode are restored exactly. Yields the number
    of samples passed through the network.
    """
    norms = batch_norms(model)
    saved = [({name: buffer.clone() for name, buffer in norm.named_buffers(recurse=False)}, norm.momentum)
             for norm in norms]
    was_training = model.training
    samples = 0
    try:
        with torch.no_grad():
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None
            model.train()
            for batch in batches:
                forward(batch)
                samples += batch.size
        model.train(was_training)
        yield samples
    finally:
        model.train(was_training)
        with torch.no_grad():
            for norm, (buffers, momentum) in zip(norms, saved, strict=True):
                for name, value in buffers.items():
                    getattr(norm, name).copy_(value)
                norm.momentum = momentum


_END = object()


def _marking_last(items: Iterable) -> Iterator[tuple[object, bool]]:
    """Each item with whether it is the last one (one item of look-ahead)."""
    iterator = iter(items)
    current = next(iterator, _END)
    while current is not _END:
        following = next(iterator, _END)
        yield current, following is _END
        current = following


# ----------------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------------
class BilevelSearch:
    """One search run. Use :func:`search`; this class holds the state of the loop."""

    def __init__(self, task: SearchTask, config: SearchConfig, device: torch.device):
        if config.mode == "fixed" and config.warmstart and config.warmstart_rounds >= task.rounds:
            raise UserError(
                f"the search's {task.rounds} rounds are all warmstart rounds ({config.warmstart_rounds}), which "
                "fixed mode never selects; lengthen the search, shorten the warmstart or turn it off"
            )
        self.task, self.config, self.device = task, config, device
        self.cell = SearchCell(
            space=config.space, bounded=config.bounded, shared_sample=config.shared_sample, fast=config.fast
        )
        self.cell.to(device)
        self.model = task.build_model(self.cell.site).to(device)
        if config.shared_sample:
            self.cell.attach_pass_hook(self.model)
        self.weights = [p for p in self.model.parameters() if p.requires_grad]
        self.arch_params = list(self.cell.arch_parameters())
        arch_optimizer = torch.optim.Adam(
            self.arch_params, lr=config.arch_lr, betas=config.arch_betas, weight_decay=config.arch_weight_decay
        )
        # Both levels accumulate over the recipe's micro-batches and take one step per group.
        self.arch_step = AccumulatedStep(self.arch_params, arch_optimizer, accumulation=task.accumulation)
        total_steps = task.rounds * task.steps_per_round()
        optimizer, scheduler = task.weight_optimizer(self.weights, total_steps)
        self.weight_step = AccumulatedStep(self.weights, optimizer, scheduler, task.accumulation, task.grad_clip)
        self.cost = Cost()
        self.skipped: Counter[str] = Counter()
        self._consecutive_skips = 0
        self.arch_steps = 0  # architecture updates, skipped ones included (as the weights' scheduler counts)

    # -- steps --------------------------------------------------------------------------------
    def _skip(self, reason: str) -> None:
        self.skipped[reason] += 1
        self._consecutive_skips += 1
        if self._consecutive_skips > self.config.max_consecutive_skips:
            raise Diverged(
                f"{self._consecutive_skips} consecutive steps had non-finite {reason}; "
                "lower the learning rates or keep the bounds on"
            )

    def arch_backward(self) -> None:
        """One architecture micro-batch: its loss, scaled for accumulation, back-propagated."""
        batch = self.task.arch_batch()
        reference = self.config.mode == "reference"
        loss = self.task.loss(self.model, batch)
        self.cost.train_samples += batch.size
        if not torch.isfinite(loss):
            self._skip("architecture loss")
            return
        # Fixed mode isolates the two levels: this backward reaches alpha and beta only.
        self.arch_step.backward(loss, inputs=None if reference else self.arch_params)

    def arch_update(self) -> None:
        """One Adam step on alpha and beta from the accumulated micro-batches, then clear them.

        The reference clears alpha/beta gradients after its step too, so in reference mode the
        weight step's backward leaves training gradients there for the next architecture step."""
        self._update(self.arch_step, "architecture gradient")
        self.arch_steps += 1

    def weight_backward(self, batch, warm: bool) -> float:
        with default_activation(self.cell, warm):
            loss = self.task.loss(self.model, batch)
        self.cost.train_samples += batch.size
        if not torch.isfinite(loss):
            self._skip("training loss")
            return float("nan")
        reference = self.config.mode == "reference"
        self.weight_step.backward(loss, inputs=None if reference else self.weights)
        return loss.item()

    def weight_update(self) -> None:
        self._update(self.weight_step, "weight gradient")

    def _update(self, step: AccumulatedStep, what: str) -> None:
        """End an accumulated step: nothing to apply if every micro-batch was skipped, a skip (counted
        towards divergence) if the gradient is not finite, else the optimizer's step."""
        skip = step.micro_batches == 0
        if not skip and not step.gradients_finite():
            self._skip(what)
            skip = True
        elif not skip:
            self._consecutive_skips = 0
        step.apply(skip=skip)

    # -- validation -----------------------------------------------------------------------------
    def validation_score(self, warm: bool) -> tuple[float, str]:
        """Score used for selection and how it was obtained.

        Fixed mode scores the discretized cell, after re-estimating BatchNorm statistics under it
        where the network has BatchNorm; the search state (weights, buffers, optimizers, global
        random state) is left exactly as it was. Reference mode scores the stochastic supernet,
        or the default activation during warmstart (``warm``).
        """
        if self.config.mode == "reference":
            with default_activation(self.cell, warm):
                score, samples = self.task.validate(self.model)
            self.cost.eval_samples += samples
            return score, "default activation (warmstart)" if warm else "supernet"
        devices = sorted({p.device.index for p in self.model.parameters() if p.is_cuda})
        with torch.random.fork_rng(devices=devices), discretized(self.model, self.cell):
            if not batch_norms(self.model):
                score, samples = self.task.validate(self.model)
                how = "discretized cell (no BatchNorm)"
            else:
                count = self.config.bn_recalibration_batches
                batches = self.task.calibration_batches(count)
                with recalibrated_batch_norm(self.model, batches, lambda b: self.task.loss(self.model, b)) as seen:
                    score, samples = self.task.validate(self.model)
                self.cost.eval_samples += seen
                how = f"discretized cell, BatchNorm recalibrated on {count} training batches ({seen} samples)"
        self.cost.eval_samples += samples
        return score, how

    # -- the loop -------------------------------------------------------------------------------
    def run(self, progress: Callable[[dict], None] | None = None) -> SearchResult:
        config, task = self.config, self.task
        schedule = shrink_schedule(task.rounds, config.start_shrinking, total_candidates(config.space))
        worst = -math.inf if task.maximize else math.inf
        best = (worst, -1, self.cell.discretize())
        history: list[dict] = []
        status, message = "ok", ""
        started = time.perf_counter()
        self.model.train()
        try:
            for round_index in range(task.rounds):
                if config.shrinking:
                    for _ in range(schedule.get(round_index, 0)):
                        self.cell.drop()  # the fullest slot (first on ties) loses its smallest-alpha op
                    if all(count == 1 for count in self.cell.active_counts()):
                        break
                warm = config.warmstart and round_index < config.warmstart_rounds
                losses = []
                # One optimizer step per `accumulation` micro-batches (and one for a round's last,
                # possibly partial, group), the architecture's taken before the weights' as in the
                # reference: each micro-batch back-propagates an architecture batch, then a weight batch.
                for micro_step, (batch, last) in enumerate(_marking_last(task.round_batches(round_index)), start=1):
                    closes_step = micro_step % task.accumulation == 0 or last
                    self.arch_backward()
                    if closes_step:
                        self.arch_update()
                    losses.append(self.weight_backward(batch, warm))
                    if closes_step:
                        self.weight_update()
                if (round_index + 1) % task.validate_every and round_index + 1 != task.rounds:
                    continue
                # Reference defect 3: validation during warmstart runs the default activation.
                score, scored = self.validation_score(warm and config.mode == "reference")
                # Fixed mode: warmstart weights trained with the default activation, not the cell.
                selectable = config.mode == "reference" or not warm
                genotype = self.cell.discretize()
                finite_losses = [value for value in losses if math.isfinite(value)]
                alphas = alpha_summary(self.cell)
                record = {
                    "round": round_index,
                    "train_loss": sum(finite_losses) / len(finite_losses) if finite_losses else None,
                    "val_score": score,
                    "scored": scored,
                    "selectable": selectable,
                    "warmstart": warm,
                    "arch_steps": self.arch_steps,
                    "active_counts": self.cell.active_counts(),
                    "leading": leading_weights(alphas),
                    "alphas": alphas,
                    "genotype": genotype.to_dict(),
                    "formula": genotype.formula(),
                    "nonfinite": {**self.skipped, "cell_repairs": self.cell.nonfinite_events},
                    "wall_seconds": time.perf_counter() - started,
                    "sample_passes": self.cost.sample_passes,
                }
                history.append(record)
                if progress:
                    progress(record)
                improves = best[1] < 0 or (score > best[0] if task.maximize else score < best[0])
                if selectable and math.isfinite(score) and improves:
                    best = (score, round_index, genotype)
        except Diverged as error:
            status, message = "diverged", str(error)
        self.cost.wall_seconds = time.perf_counter() - started
        if best[1] < 0:
            status = "diverged"
            message = message or (
                "no selectable round had a finite validation score; the search found no usable genotype"
            )
        return SearchResult(
            genotype=best[2],
            status=status,
            message=message,
            best_round=best[1],
            best_score=best[0],
            history=history,
            cost=self.cost,
            config=config,
            nonfinite={**self.skipped, "cell_repairs": self.cell.nonfinite_events},
        )


def search(
    task: SearchTask,
    seed: int,
    config: SearchConfig | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[dict], None] | None = None,
) -> SearchResult:
    """Run one GRAFS search on ``task`` with ``seed``; see :class:`SearchConfig` for the switches."""
    config = config or SearchConfig()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return BilevelSearch(task, config, torch.device(device)).run(progress)
