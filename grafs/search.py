"""The GRAFS bilevel search: DrNAS relaxation, warmstart, bounded ops and progressive shrinking.

The loop knows nothing about datasets or benchmarks: it talks to a :class:`SearchTask`, which
builds the network around an activation factory and hands out batches, losses and validation
scores. ``bench`` adapts its tasks to this protocol.

Two modes:

* ``fixed`` (default): the architecture step back-propagates into alpha/beta only and the weight
  step into the weights only, and the best epoch is chosen by validating the discretized cell.
* ``reference``: reproduces defects 1-3 of the published code, so its behaviour can be re-run
  and each defect's effect measured: gradients are not isolated between the two steps (the
  weights also learn from the validation batch and alpha/beta carry leaked training gradients
  into their next step), selection validates the stochastic supernet, and validation during
  warmstart runs the default activation.
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
from grafs.steps import AccumulatedStep, gradients_finite

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

    def loss(self, model: nn.Module, batch) -> Tensor: ...

    def validate(self, model: nn.Module) -> tuple[float, int]:
        """Validation score and the number of samples it used."""
        ...

    accumulation: int
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


# ----------------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------------
class BilevelSearch:
    """One search run. Use :func:`search`; this class holds the state of the loop."""

    def __init__(self, task: SearchTask, config: SearchConfig, device: torch.device):
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
        self.arch_optimizer = torch.optim.Adam(
            self.arch_params, lr=config.arch_lr, betas=config.arch_betas, weight_decay=config.arch_weight_decay
        )
        total_steps = task.rounds * task.steps_per_round()
        optimizer, scheduler = task.weight_optimizer(self.weights, total_steps)
        self.weight_step = AccumulatedStep(self.weights, optimizer, scheduler, task.accumulation, task.grad_clip)
        self.cost = Cost()
        self.skipped: Counter[str] = Counter()
        self._consecutive_skips = 0

    # -- steps --------------------------------------------------------------------------------
    def _skip(self, reason: str) -> None:
        self.skipped[reason] += 1
        self._consecutive_skips += 1
        if self._consecutive_skips > self.config.max_consecutive_skips:
            raise Diverged(
                f"{self._consecutive_skips} consecutive steps had non-finite {reason}; "
                "lower the learning rates or keep the bounds on"
            )

    def arch_step(self) -> None:
        batch = self.task.arch_batch()
        reference = self.config.mode == "reference"
        if not reference:
            self.arch_optimizer.zero_grad(set_to_none=True)
        loss = self.task.loss(self.model, batch)
        self.cost.train_samples += batch.size
        if not torch.isfinite(loss):
            self.arch_optimizer.zero_grad(set_to_none=True)
            self._skip("architecture loss")
            return
        # Fixed mode isolates the two levels: this backward reaches alpha and beta only.
        loss.backward(inputs=None if reference else self.arch_params)
        if not gradients_finite(self.arch_params):
            self.arch_optimizer.zero_grad(set_to_none=True)
            self._skip("architecture gradient")
            return
        self.arch_optimizer.step()
        if reference:
            # The reference clears alpha/beta gradients after its step, so the weight step's
            # backward leaves training gradients there for the next architecture step.
            self.arch_optimizer.zero_grad(set_to_none=True)
        self._consecutive_skips = 0

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
        # Every micro-batch skipped: nothing to apply. Non-finite gradients: skip this step.
        skip = self.weight_step.micro_batches == 0
        if not skip and not self.weight_step.gradients_finite():
            self._skip("weight gradient")
            skip = True
        elif not skip:
            self._consecutive_skips = 0
        self.weight_step.apply(skip=skip)

    # -- validation -----------------------------------------------------------------------------
    def validation_score(self, warm: bool) -> float:
        """Score used for selection: discretized cell (fixed) or stochastic supernet (reference)."""
        if self.config.mode == "reference":
            with default_activation(self.cell, warm):
                score, samples = self.task.validate(self.model)
        else:
            with discretized(self.model, self.cell):
                score, samples = self.task.validate(self.model)
        self.cost.eval_samples += samples
        return score

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
                for micro_step, batch in enumerate(task.round_batches(round_index), start=1):
                    self.arch_step()
                    losses.append(self.weight_backward(batch, warm))
                    if micro_step % task.accumulation == 0:
                        self.weight_update()
                if (round_index + 1) % task.validate_every and round_index + 1 != task.rounds:
                    continue
                # Reference defect 3: validation during warmstart runs the default activation.
                score = self.validation_score(warm and config.mode == "reference")
                genotype = self.cell.discretize()
                finite_losses = [value for value in losses if math.isfinite(value)]
                record = {
                    "round": round_index,
                    "train_loss": sum(finite_losses) / len(finite_losses) if finite_losses else None,
                    "val_score": score,
                    "warmstart": warm,
                    "active_counts": self.cell.active_counts(),
                    "alphas": alpha_summary(self.cell),
                    "genotype": genotype.to_dict(),
                    "formula": genotype.formula(),
                    "nonfinite": {**self.skipped, "cell_repairs": self.cell.nonfinite_events},
                    "wall_seconds": time.perf_counter() - started,
                    "sample_passes": self.cost.sample_passes,
                }
                history.append(record)
                if progress:
                    progress(record)
                if math.isfinite(score) and (best[1] < 0 or (score > best[0] if task.maximize else score < best[0])):
                    best = (score, round_index, genotype)
        except Diverged as error:
            status, message = "diverged", str(error)
        self.cost.wall_seconds = time.perf_counter() - started
        if best[1] < 0:
            status = "diverged"
            message = message or "no validation score was finite; the search found no usable genotype"
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
