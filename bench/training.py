"""Training and evaluation of any task with any activation.

The building blocks here (batches, losses, optimisers, schedules, evaluation, cost accounting) are
shared by full trainings, the black-box searches' proxy trainings and the GRAFS search loop.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from bench.data import load_dataset
from bench.data.base import Dataset, Part
from bench.models import create_model
from bench.tasks import Recipe, Task
from grafs.batch import Batch
from grafs.cost import Cost
from grafs.errors import Diverged, UserError
from grafs.steps import AccumulatedStep

ActivationFactory = Callable[[], nn.Module]


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    task: str
    activation: str
    seed: int
    status: str  # ok | diverged | stopped
    metrics: dict[str, float]
    cost: Cost
    history: list[dict] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "activation": self.activation,
            "seed": self.seed,
            "status": self.status,
            "message": self.message,
            "metrics": self.metrics,
            "cost": self.cost.to_dict(),
        }


class StopTraining(Exception):
    """Raised by an ``on_epoch`` callback to end a run early (a search pruning a weak candidate): the
    run is reported with status ``stopped``, the metrics of its last evaluation and the cost so far."""


# ----------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was requested but no CUDA device is available; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; valid choices: auto, cpu, cuda, cuda:N")
    return torch.device(name)


def build_model(task: Task, data: Dataset, activation: ActivationFactory) -> nn.Module:
    return create_model(task.model, activation, **data.model_kwargs(), **task.model_options)


def load_task_data(task: Task, data_dir=None, download: bool = False) -> Dataset:
    return load_dataset(task.dataset, data_dir=data_dir, download=download)


def make_optimizer(parameters, recipe: Recipe) -> torch.optim.Optimizer:
    parameters = [p for p in parameters if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas)
    raise UserError(f"unknown optimizer {recipe.optimizer!r}; valid choices: adam, adamw, sgd")


def lr_factor(recipe: Recipe, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based)."""
    if recipe.warmup_iterations and step < recipe.warmup_iterations:
        return (step + 1) / recipe.warmup_iterations
    if recipe.schedule == "constant":
        return 1.0
    if recipe.schedule == "multistep":
        epoch = step // max(steps_per_epoch, 1)
        return 0.1 ** sum(epoch >= milestone for milestone in recipe.milestones)
    if recipe.schedule == "cosine":
        start = recipe.warmup_iterations
        progress = min(1.0, (step - start) / max(1, total_steps - start))
        floor = recipe.min_lr / recipe.lr
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise UserError(f"unknown schedule {recipe.schedule!r}; valid choices: constant, cosine, multistep")


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------
class BatchStream:
    """An endless stream of training batches from a part of the training split.

    The data decides how it is cut: classification batches come in shuffled epochs over the
    part's samples (``epoch`` counts finished passes), language batches are random blocks.
    """

    def __init__(self, task: Task, data: Dataset, batch_size: int, seed: int, device, part: Part = None,
                 augment: str = "none"):
        self.data, self.part, self.batch_size, self.device, self.augment = data, part, batch_size, device, augment
        self.block_size = task.block_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self._current: Iterator[Batch] | None = None

    @property
    def samples_per_epoch(self) -> int:
        return self.data.part_size(self.part)

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)

    def next_batch(self) -> Batch:
        while True:
            batch = next(self._epoch(), None)
            if batch is not None:
                return batch
            self._finish_epoch()

    def epoch_batches(self) -> Iterator[Batch]:
        """The remaining batches of the current epoch."""
        yield from self._epoch()
        self._finish_epoch()

    def _epoch(self) -> Iterator[Batch]:
        """The current epoch's batch iterator, shuffled anew when an epoch starts."""
        if self._current is None:
            self._current = self.data.training_batches(
                self.part, self.batch_size, self.generator, self.device, self.augment, self.block_size
            )
        return self._current

    def _finish_epoch(self) -> None:
        self._current = None
        self.epoch += 1


# ----------------------------------------------------------------------------------------------
# Losses and evaluation
# ----------------------------------------------------------------------------------------------
def batch_loss(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and the number of correct predictions (per token for language models)."""
    logits = model(batch.inputs)
    logits = logits.reshape(-1, logits.shape[-1])
    targets = batch.targets.reshape(-1)
    loss = F.cross_entropy(logits, targets)
    correct = (logits.argmax(-1) == targets).sum()
    return loss, correct


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    data: Dataset,
    split: str,
    recipe: Recipe,
    device,
    cost: Cost | None = None,
    part: Part = None,
):
    """Loss and accuracy on a split (or on its ``part``); adds the forward passes to ``cost``."""
    was_training = model.training
    model.eval()
    total_loss, total_correct, total_count, samples = 0.0, 0, 0, 0
    batches = data.evaluation_batches(split, recipe.eval_batch_size, device, part, task.block_size, recipe.eval_batches)
    for batch in batches:
        loss, correct = batch_loss(model, batch)
        count = batch.targets.numel()
        total_loss += float(loss) * count
        total_correct += int(correct)
        total_count += count
        samples += batch.size
    model.train(was_training)
    if cost is not None:
        cost.eval_samples += samples
    return {"loss": total_loss / max(total_count, 1), "accuracy": total_correct / max(total_count, 1)}


def metric_value(task: Task, scores: dict[str, float]) -> float:
    return scores[task.metric.name]


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------
def optimizer_step(model: nn.Module, step: AccumulatedStep, stream: BatchStream, cost: Cost) -> float:
    """One optimizer step over the step's micro-batches; returns their mean loss."""
    losses = []
    for _ in range(step.accumulation):
        batch = stream.next_batch()
        loss, _ = batch_loss(model, batch)
        if not torch.isfinite(loss):
            raise Diverged(f"non-finite training loss at step {len(losses)}")
        step.backward(loss)
        losses.append(loss.item())
        cost.train_samples += batch.size
    step.apply()
    return sum(losses) / len(losses)


def train(
    task: Task,
    activation: ActivationFactory,
    seed: int,
    *,
    activation_name: str = "custom",
    recipe: Recipe | None = None,
    device: str | torch.device = "cpu",
    data: Dataset | None = None,
    data_dir=None,
    progress: bool | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    train_indices=None,
    val_indices=None,
) -> TrainResult:
    """Train ``task``'s model with ``activation`` from scratch and evaluate it on validation and test.

    Deterministic on CPU for a given seed. A non-finite loss ends the run with status
    ``diverged`` and NaN metrics instead of raising. ``on_epoch`` receives every evaluation record
    (after each epoch, or each evaluation interval, and at the end), with the cost so far; it may
    raise :class:`StopTraining` to end the run there, with status ``stopped``.

    ``train_indices`` restricts the weights to part of the training split. ``val_indices`` moves
    validation onto that part of the training split and leaves the test split alone, as a
    search's proxy training (75 / 25 split of the training data) must.
    """
    recipe = recipe or task.recipe
    device = resolve_device(device) if isinstance(device, str) else device
    data = data if data is not None else load_task_data(task, data_dir)
    seed_everything(seed)
    model = build_model(task, data, activation).to(device)
    optimizer = make_optimizer(model.parameters(), recipe)
    stream = BatchStream(task, data, recipe.batch_size, seed, device, part=train_indices, augment=recipe.augment)
    validation = ("val", None) if val_indices is None else ("train", val_indices)
    cost, history = Cost(), []
    started = time.perf_counter()

    total_steps, steps_per_epoch, checkpoints = recipe.step_plan(stream.batches_per_epoch)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total_steps, desc=f"{task.name} [{activation_name}]", disable=not show, leave=False)
    status, message, losses = "ok", "", []
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(recipe, step, total_steps, steps_per_epoch)
    )
    weight_step = AccumulatedStep(
        [p for p in model.parameters() if p.requires_grad], optimizer, scheduler, recipe.accumulation, recipe.grad_clip
    )
    model.train()
    splits = ("val",) if val_indices is not None else ("val", "test")
    try:
        for step in range(1, total_steps + 1):
            losses.append(optimizer_step(model, weight_step, stream, cost))
            bar.update()
            if step in checkpoints:
                record = _checkpoint(
                    model, task, data, recipe, device, cost, step, steps_per_epoch, losses, validation, started
                )
                history.append(record)
                bar.set_postfix(val=f"{record['val_' + task.metric.name]:.4g}")
                if on_epoch:
                    on_epoch(record)
                losses = []
        final = _checkpoint(
            model, task, data, recipe, device, cost, total_steps, steps_per_epoch, losses, validation, started
        )
        if "test" in splits:
            test = evaluate(model, task, data, "test", recipe, device, cost)
            final.update(test_loss=test["loss"], test_accuracy=test["accuracy"], eval_samples=cost.eval_samples)
        history.append(final)
        if on_epoch:
            on_epoch(final)
    except Diverged as error:
        status, message = "diverged", str(error)
    except StopTraining as reason:
        status, message = "stopped", str(reason)
    finally:
        bar.close()

    keys = [f"{split}_{name}" for split in splits for name in ("loss", "accuracy")]
    if status == "diverged":
        metrics = {key: float("nan") for key in keys}
    else:  # a stopped run is scored by its last evaluation, which has no test scores
        metrics = {key: history[-1].get(key, float("nan")) for key in keys}
    for split in splits:
        metrics[f"{split}_metric"] = metrics[f"{split}_{task.metric.name}"]
    cost.wall_seconds = time.perf_counter() - started
    return TrainResult(task.name, activation_name, seed, status, metrics, cost, history, message)


def _checkpoint(model, task, data, recipe, device, cost, step, steps_per_epoch, losses, validation, started) -> dict:
    split, indices = validation
    scores = evaluate(model, task, data, split, recipe, device, cost, indices)
    return {
        "step": step,
        "epoch": recipe.epoch_at(step, steps_per_epoch),
        "train_loss": sum(losses) / len(losses) if losses else float("nan"),
        "val_loss": scores["loss"],
        "val_accuracy": scores["accuracy"],
        "train_samples": cost.train_samples,
        "eval_samples": cost.eval_samples,
        "wall_seconds": time.perf_counter() - started,
    }
