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
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from bench.data import load_dataset
from bench.data.base import ClassificationData, Dataset, LanguageData
from bench.models import create_model
from bench.tasks import Recipe, Task
from grafs.errors import UserError

ActivationFactory = Callable[[], nn.Module]


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------
@dataclass
class Cost:
    """What a run spent: wall seconds and samples pushed through the network.

    ``train_samples`` count forward + backward passes, ``eval_samples`` forward-only passes; for
    language models a sample is one block of tokens.
    """

    wall_seconds: float = 0.0
    train_samples: int = 0
    eval_samples: int = 0

    @property
    def sample_passes(self) -> int:
        return self.train_samples + self.eval_samples

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.wall_seconds + other.wall_seconds,
            self.train_samples + other.train_samples,
            self.eval_samples + other.eval_samples,
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "sample_passes": self.sample_passes}


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


class Diverged(Exception):
    """A non-finite loss: the run stops and is reported with status ``diverged``."""


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
        return torch.optim.Adam(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.95))
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
def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by ``padding`` and crop back to size at a random offset per image."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4).permute(0, 2, 3, 1)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def trivial_augment(images: Tensor) -> Tensor:
    from torchvision.transforms import v2

    augment = v2.TrivialAugmentWide()
    return torch.stack([augment(image) for image in images])


def augment_batch(images: Tensor, augment: str, generator: torch.Generator) -> Tensor:
    if augment == "none" or images.dim() != 4:
        return images
    if augment == "trivial_augment":
        images = trivial_augment(images)
    elif augment != "crop_flip":
        raise UserError(f"unknown augmentation {augment!r}; valid choices: crop_flip, none, trivial_augment")
    padding = max(1, images.shape[-1] // 8)  # 4 pixels on 32x32 images, as the recipes state
    return random_flip(random_crop(images, padding, generator), generator)


@dataclass
class Batch:
    inputs: Tensor
    targets: Tensor

    @property
    def size(self) -> int:
        return self.inputs.shape[0]


def classification_batches(
    data: ClassificationData,
    indices: Tensor,
    batch_size: int,
    augment: str,
    generator: torch.Generator,
    device: torch.device,
) -> Iterator[Batch]:
    """One shuffled pass over ``indices`` of the training split."""
    order = indices[torch.randperm(len(indices), generator=generator)]
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        inputs = augment_batch(data.train_x[chosen], augment, generator)
        yield Batch(data.normalize(inputs.to(device)), data.train_y[chosen].to(device))


def language_batch(tokens: Tensor, block_size: int, batch_size: int, generator: torch.Generator, device) -> Batch:
    """Random contiguous blocks, the targets shifted by one token (as nanoGPT samples)."""
    starts = torch.randint(len(tokens) - block_size - 1, (batch_size,), generator=generator)
    window = torch.arange(block_size + 1)
    blocks = tokens[starts[:, None] + window].long()
    return Batch(blocks[:, :-1].to(device), blocks[:, 1:].to(device))


def block_size_of(task: Task) -> int:
    return int(task.model_options["block_size"])


class BatchStream:
    """An endless stream of training batches from a subset of the training split.

    Classification batches come in shuffled epochs over ``indices``; ``epoch`` counts finished
    passes. Language batches are random blocks from the token range ``indices`` (a slice).
    """

    def __init__(self, task: Task, data: Dataset, batch_size: int, seed: int, device, indices=None, augment="none"):
        self.task, self.data, self.batch_size, self.device, self.augment = task, data, batch_size, device, augment
        self.generator = torch.Generator().manual_seed(seed)
        if isinstance(data, LanguageData):
            self.tokens = data.train if indices is None else data.train[indices]
        else:
            self.indices = torch.arange(len(data.train_y)) if indices is None else indices
        self.epoch = 0
        self._current: Iterator[Batch] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    @property
    def samples_per_epoch(self) -> int:
        return len(self.indices)

    def next_batch(self) -> Batch:
        if isinstance(self.data, LanguageData):
            return language_batch(self.tokens, block_size_of(self.task), self.batch_size, self.generator, self.device)
        while True:
            batch = next(self._epoch(), None)
            if batch is not None:
                return batch
            self._finish_epoch()

    def epoch_batches(self) -> Iterator[Batch]:
        """The remaining batches of the current classification epoch."""
        yield from self._epoch()
        self._finish_epoch()

    def _epoch(self) -> Iterator[Batch]:
        """The current epoch's batch iterator, shuffled anew when an epoch starts."""
        if self._current is None:
            self._current = classification_batches(
                self.data, self.indices, self.batch_size, self.augment, self.generator, self.device
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


def evaluation_batches(task: Task, data: Dataset, split: str, recipe: Recipe, device, indices=None) -> Iterator[Batch]:
    """Batches of a split, or of the part ``indices`` of it (a slice of the token stream for language data)."""
    if isinstance(data, LanguageData):
        tokens = data.split(split) if indices is None else data.split(split)[indices]
        block = block_size_of(task)
        starts = torch.arange(0, len(tokens) - block - 1, block)
        limit = recipe.eval_batches * recipe.eval_batch_size
        if limit:
            starts = starts[:: max(1, math.ceil(len(starts) / limit))][:limit]
        window = torch.arange(block + 1)
        for begin in range(0, len(starts), recipe.eval_batch_size):
            blocks = tokens[starts[begin : begin + recipe.eval_batch_size, None] + window].long()
            yield Batch(blocks[:, :-1].to(device), blocks[:, 1:].to(device))
        return
    inputs, targets = data.split(split)
    if indices is not None:
        inputs, targets = inputs[indices], targets[indices]
    for start in range(0, len(targets), recipe.eval_batch_size):
        yield Batch(
            data.normalize(inputs[start : start + recipe.eval_batch_size].to(device)),
            targets[start : start + recipe.eval_batch_size].to(device),
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    data: Dataset,
    split: str,
    recipe: Recipe,
    device,
    cost: Cost | None = None,
    indices=None,
):
    """Loss and accuracy on a split (or on its part ``indices``); adds the forward passes to ``cost``."""
    was_training = model.training
    model.eval()
    total_loss, total_correct, total_count, samples = 0.0, 0, 0, 0
    for batch in evaluation_batches(task, data, split, recipe, device, indices):
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
def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    stream: BatchStream,
    recipe: Recipe,
    cost: Cost,
) -> float:
    """One optimizer step over ``recipe.accumulation`` micro-batches; returns the mean loss."""
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for _ in range(recipe.accumulation):
        batch = stream.next_batch()
        loss, _ = batch_loss(model, batch)
        if not torch.isfinite(loss):
            raise Diverged(f"non-finite training loss at step {len(losses)}")
        (loss / recipe.accumulation).backward()
        losses.append(loss.item())
        cost.train_samples += batch.size
    if recipe.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    optimizer.step()
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
    stream = BatchStream(task, data, recipe.batch_size, seed, device, indices=train_indices, augment=recipe.augment)
    validation = ("val", None) if val_indices is None else ("train", val_indices)
    cost, history = Cost(), []
    started = time.perf_counter()

    if recipe.is_iterative:
        total_steps, steps_per_epoch = recipe.iterations, recipe.iterations
        checkpoints = set(range(recipe.eval_interval, total_steps, recipe.eval_interval or total_steps + 1))
    else:
        steps_per_epoch = math.ceil(stream.batches_per_epoch / recipe.accumulation)
        total_steps = steps_per_epoch * recipe.epochs
        checkpoints = {steps_per_epoch * (epoch + 1) for epoch in range(recipe.epochs - 1)}
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total_steps, desc=f"{task.name} [{activation_name}]", disable=not show, leave=False)
    status, message, losses = "ok", "", []
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(recipe, step, total_steps, steps_per_epoch)
    )
    model.train()
    splits = ("val",) if val_indices is not None else ("val", "test")
    try:
        for step in range(1, total_steps + 1):
            losses.append(optimizer_step(model, optimizer, stream, recipe, cost))
            scheduler.step()
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
        "epoch": step / steps_per_epoch if not recipe.is_iterative else None,
        "train_loss": sum(losses) / len(losses) if losses else float("nan"),
        "val_loss": scores["loss"],
        "val_accuracy": scores["accuracy"],
        "train_samples": cost.train_samples,
        "eval_samples": cost.eval_samples,
        "wall_seconds": time.perf_counter() - started,
    }
