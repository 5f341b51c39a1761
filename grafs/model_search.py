"""GRAFS on your own model: search an activation for any PyTorch network, then put it in.

:func:`search_model` runs the bilevel search on a plain model whose activations are modules
(``nn.ReLU``, ``nn.GELU``, ... at every site), or on a model built from an activation factory,
with training and validation data given as DataLoaders or any iterables of ``(inputs, targets)``
batches, a loss and a weight optimizer. :func:`apply_genotype` then puts a found activation into
a model in place of its activations.

The search alternates, as GRAFS does, one architecture step on a batch of ``arch_data`` (by
default the validation data) with one weight step on a batch of ``train_data``; the genotype of
the round whose discretized cell validates best is the result (on a network with BatchNorm, after
re-estimating its statistics under the cell on the first training batches; warmstart rounds, whose
weights trained with the model's own activations, are not selected).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from grafs.batch import Batch
from grafs.config import SearchConfig
from grafs.errors import UserError
from grafs.genotype import Genotype
from grafs.search import SearchResult, search

ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU)
"""The activation modules replaced unless told otherwise."""

METRICS = ("loss", "accuracy")

ActivationFactory = Callable[[], nn.Module]
ModelBuilder = Callable[[ActivationFactory], nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def activation_sites(model: nn.Module, activations: tuple[type[nn.Module], ...] = ACTIVATIONS) -> list[tuple]:
    """``(parent, attribute, module)`` of every activation module in ``model``, in module order."""
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, activations)
    ]


def replace_activations(
    model: nn.Module, make: Callable[[nn.Module], nn.Module], activations: tuple[type[nn.Module], ...] = ACTIVATIONS
) -> list[tuple]:
    """Put ``make(old)`` in place of every activation module of ``model``; returns what was replaced
    (``(parent, attribute, old module)``), so it can be put back."""
    sites = activation_sites(model, activations)
    if not sites:
        names = ", ".join(kind.__name__ for kind in activations)
        raise UserError(
            f"the model has no activation modules ({names}) to replace; use activation modules instead of "
            "functional calls, or pass a function that builds the model from an activation factory"
        )
    for parent, name, old in sites:
        setattr(parent, name, make(old))
    return sites


def apply_genotype(
    model: nn.Module, genotype: Genotype, learnable_betas: bool = False,
    activations: tuple[type[nn.Module], ...] = ACTIVATIONS,
) -> nn.Module:
    """Put ``genotype``'s activation in place of every activation module of ``model`` (in place); returns the model.

    Each site gets its own module; with ``learnable_betas`` each site's betas are parameters trained
    with the weights (build the optimizer after this call), else fixed buffers.
    """
    reference = next(model.parameters(), None)
    replace_activations(model, lambda old: _on(genotype.to_module(learnable_betas), reference), activations)
    return model


def _on(module: nn.Module, reference: Tensor | None) -> nn.Module:
    return module if reference is None else module.to(reference.device)


class ModelSearch:
    """A user's model and data seen through the search protocol (:class:`grafs.search.SearchTask`)."""

    name = "model"
    validate_every = 1

    def __init__(
        self, model: nn.Module | ModelBuilder, train_data: Iterable, val_data: Iterable, arch_data: Iterable,
        loss: Callable[[Tensor, Tensor], Tensor], optimizer: torch.optim.Optimizer | OptimizerFactory,
        scheduler: Callable[[torch.optim.Optimizer], object] | None, epochs: int, metric: str, accumulation: int,
        grad_clip: float | None, activations: tuple[type[nn.Module], ...], device: torch.device,
    ):
        if metric not in METRICS:
            raise UserError(f"unknown metric {metric!r}; valid choices: {', '.join(METRICS)}")
        if epochs < 1 or accumulation < 1:
            raise UserError(f"epochs and accumulation must be positive, got {epochs} and {accumulation}")
        if not isinstance(model, nn.Module) and isinstance(optimizer, torch.optim.Optimizer):
            raise UserError("a model built by the search needs an optimizer factory (parameters -> optimizer)")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_data, self.val_data, self.arch_data = train_data, val_data, arch_data
        self.loss_fn, self.metric, self.device = loss, metric, device
        self.rounds, self.accumulation, self.grad_clip = epochs, accumulation, grad_clip
        self.activations = activations
        self.maximize = metric == "accuracy"
        self.replaced: list[tuple] = []
        self._arch_batches: Iterator[Batch] | None = None
        self._calibration: list[Batch] = []

    # -- the protocol ---------------------------------------------------------------------------
    def build_model(self, make_site: Callable[[nn.Module], nn.Module]) -> nn.Module:
        if isinstance(self.model, nn.Module):
            self.replaced = replace_activations(self.model, make_site, self.activations)
            return self.model
        return self.model(lambda: make_site(nn.ReLU()))

    def steps_per_round(self) -> int:
        try:
            return max(1, len(self.train_data) // self.accumulation)
        except TypeError:  # an iterable without a length: the schedule cannot know the epoch
            return 1

    def weight_optimizer(self, parameters, total_steps: int):
        optimizer = self.optimizer if isinstance(self.optimizer, torch.optim.Optimizer) else self.optimizer(parameters)
        scheduler = self.scheduler(optimizer) if self.scheduler else torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 1.0
        )
        return optimizer, scheduler

    def round_batches(self, round_index: int) -> Iterator[Batch]:
        return (self._batch(item) for item in self.train_data)

    def arch_batch(self) -> Batch:
        # One iterator over the architecture data, started anew only when it runs out.
        for _ in range(2):
            if self._arch_batches is None:
                self._arch_batches = (self._batch(item) for item in self.arch_data)
            batch = next(self._arch_batches, None)
            if batch is not None:
                return batch
            self._arch_batches = None
        raise UserError("the architecture data (arch_data, or val_data) holds no batches")

    def calibration_batches(self, count: int) -> list[Batch]:
        """The first ``count`` training batches, kept from the first call on so every call sees the same."""
        if len(self._calibration) < count:
            self._calibration = [self._batch(item) for item in itertools.islice(self.train_data, count)]
        return self._calibration[:count]

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.loss_fn(model(batch.inputs), batch.targets)

    @torch.no_grad()
    def validate(self, model: nn.Module) -> tuple[float, int]:
        was_training = model.training
        model.eval()
        total, samples = 0.0, 0
        for item in self.val_data:
            batch = self._batch(item)
            outputs = model(batch.inputs)
            if self.metric == "loss":
                total += float(self.loss_fn(outputs, batch.targets)) * batch.size
            else:
                total += float((outputs.argmax(-1) == batch.targets).float().sum())
            samples += batch.size
        model.train(was_training)
        if samples == 0:
            raise UserError("the validation data holds no batches")
        return total / samples, samples

    # -- helpers --------------------------------------------------------------------------------
    def _batch(self, item) -> Batch:
        try:
            inputs, targets = item
        except (TypeError, ValueError):
            raise UserError("data must yield (inputs, targets) pairs, as a DataLoader of tensors does") from None
        return Batch(inputs.to(self.device), targets.to(self.device))

    def restore(self) -> None:
        """Put the model's own activation modules back where the search put its cell."""
        for parent, name, old in self.replaced:
            setattr(parent, name, old)


def search_model(
    model: nn.Module | ModelBuilder,
    train_data: Iterable,
    val_data: Iterable,
    loss: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer | OptimizerFactory,
    *,
    epochs: int,
    arch_data: Iterable | None = None,
    metric: str = "loss",
    scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
    config: SearchConfig | None = None,
    accumulation: int = 1,
    grad_clip: float | None = None,
    activations: tuple[type[nn.Module], ...] = ACTIVATIONS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[dict], None] | None = None,
) -> SearchResult:
    """Search an activation for ``model`` with GRAFS; returns the :class:`~grafs.search.SearchResult`
    (its ``genotype`` is the found activation, ``history`` one record per epoch).

    ``model`` is a network whose activation modules (of the types in ``activations``) become the
    search's activation sites for the search's duration (they are put back at the end; the weights
    keep what they learned in the supernet, so retrain from scratch with :func:`apply_genotype`), or
    a function that builds a network from an activation factory. ``optimizer`` updates the weights:
    an optimizer over ``model.parameters()``, or a function of the parameters that makes one.
    ``metric`` ("loss" or "accuracy") scores each epoch's discretized cell on ``val_data``; the
    architecture (alpha, beta) learns on ``arch_data`` (default ``val_data``). ``config`` holds the
    search's switches and architecture settings (:class:`~grafs.config.SearchConfig`; shrinking
    needs ``epochs`` > ``config.start_shrinking``).
    """
    device = torch.device(device)
    task = ModelSearch(model, train_data, val_data, arch_data if arch_data is not None else val_data, loss,
                       optimizer, scheduler, epochs, metric, accumulation, grad_clip, activations, device)
    try:
        return search(task, seed, config or SearchConfig(), device, progress=progress)
    finally:
        task.restore()

