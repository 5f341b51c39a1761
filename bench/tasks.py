"""Tasks: a model, a dataset and a training recipe, registered by name.

Two scales: ``paper`` tasks follow the GRAFS paper's search and retraining recipes exactly on the
real datasets (GPU-sized); ``cpu`` tasks mirror the same three model families on data that exists
offline, sized for a 2-core machine. Every search task lists its transfer targets: larger models
of the same family and other datasets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from bench.registry import Registry

MAX_SEED = 2**32 - 1
"""The largest seed of a search or a training: Optuna's samplers seed numpy, which takes seeds below 2**32."""


@dataclass(frozen=True)
class Recipe:
    """How a network is trained. Classification counts ``epochs``; language models ``iterations``."""

    optimizer: str  # sgd | adam | adamw
    lr: float
    batch_size: int
    epochs: int = 0
    iterations: int = 0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | multistep | cosine
    milestones: tuple[int, ...] = ()  # multistep: epochs at which the rate drops 10x
    min_lr: float = 0.0  # cosine: the final rate
    warmup_iterations: int = 0
    grad_clip: float | None = None
    accumulation: int = 1  # micro-batches per optimizer step
    augment: str = "none"  # none | crop_flip | trivial_augment
    eval_batch_size: int = 512
    eval_batches: int = 0  # language models: batches per evaluation (0 = the whole split)
    eval_interval: int = 0  # language models: evaluate every N iterations (0 = only at the end)

    @property
    def is_iterative(self) -> bool:
        return self.iterations > 0

    @property
    def length(self) -> int:
        """Epochs, or iterations for an iteration-based recipe."""
        return self.iterations if self.is_iterative else self.epochs

    def step_plan(self, batches_per_epoch: int) -> tuple[int, int, set[int]]:
        """(optimizer steps in all, steps per epoch, the steps after which to validate on the way).

        An iteration-based recipe validates every ``eval_interval`` iterations and counts its whole
        length as one epoch; an epoch-based one validates after every epoch but the last."""
        if self.is_iterative:
            every = self.eval_interval or self.iterations + 1
            return self.iterations, self.iterations, set(range(self.eval_interval, self.iterations, every))
        per_epoch = math.ceil(batches_per_epoch / self.accumulation)
        return per_epoch * self.epochs, per_epoch, {per_epoch * (epoch + 1) for epoch in range(self.epochs - 1)}

    def epoch_at(self, step: int, steps_per_epoch: int) -> float | None:
        """The (fractional) epoch after optimizer step ``step``; None for iteration-based recipes."""
        return None if self.is_iterative else step / steps_per_epoch

    def progress(self, row: dict) -> float:
        """How far a training is (0..1) at one of its checkpoint records (``step`` and ``epoch``)."""
        return row["step"] / self.iterations if self.is_iterative else row["epoch"] / self.epochs

    def training_samples(self, samples_per_epoch: int) -> int:
        """Samples (forward + backward) of one whole training with this recipe."""
        if self.is_iterative:
            return self.iterations * self.batch_size * self.accumulation
        return self.epochs * samples_per_epoch

    def shortened(self, length: int) -> Recipe:
        """The recipe cut to ``length`` epochs or iterations (an iteration-based one still validates
        at least twice on the way)."""
        if not self.is_iterative:
            return replace(self, epochs=length)
        changes = {"iterations": length}
        if self.eval_interval:
            changes["eval_interval"] = max(1, min(self.eval_interval, length // 2))
        return replace(self, **changes)


@dataclass(frozen=True)
class GrafsSettings:
    """The architecture side of a GRAFS search on this task (the weight side is ``Task.search``)."""

    arch_lr: float
    start_shrinking: int  # epoch (or iteration) at which progressive shrinking starts
    warmstart: int  # epochs (or iterations) in which weight steps use the default activation


@dataclass(frozen=True)
class Metric:
    name: str  # accuracy | loss
    direction: str  # max | min

    def better(self, candidate: float, incumbent: float) -> bool:
        return candidate > incumbent if self.direction == "max" else candidate < incumbent

    @property
    def worst(self) -> float:
        return float("-inf") if self.direction == "max" else float("inf")


ACCURACY = Metric("accuracy", "max")
LOSS = Metric("loss", "min")


@dataclass(frozen=True)
class Task:
    name: str
    scale: str  # cpu | paper
    family: str
    model: str
    dataset: str
    recipe: Recipe
    search: Recipe
    grafs: GrafsSettings
    metric: Metric
    transfer: tuple[str, ...] = ()
    model_kwargs: tuple[tuple[str, object], ...] = ()
    description: str = ""
    default_activation: str = field(default="relu")

    @property
    def model_options(self) -> dict:
        return dict(self.model_kwargs)

    @property
    def block_size(self) -> int | None:
        """Tokens per sample of a language task (its model's context); None for other tasks."""
        return self.model_options.get("block_size")


TASKS: Registry[Task] = Registry("task")


def get_task(name: str) -> Task:
    return TASKS.get(name)


def scaled_task(task: Task, scale: dict[str, int], purpose: str) -> Task:
    """The task with its ``search`` (or ``retrain``) length shortened as a campaign's ``[scale]`` says
    (keys ``search_epochs``, ``search_iterations``, ``retrain_epochs``, ``retrain_iterations``)."""
    recipe = task.recipe if purpose == "retrain" else task.search
    length = scale.get(f"{purpose}_{'iterations' if recipe.is_iterative else 'epochs'}")
    if not length:
        return task
    shortened = recipe.shortened(length)
    if purpose == "retrain":
        return replace(task, recipe=shortened)
    return replace(task, search=shortened, grafs=_scaled_grafs(task.grafs, recipe, shortened.length))


def _scaled_grafs(settings: GrafsSettings, recipe: Recipe, new_length: int) -> GrafsSettings:
    """Shrinking start and warmstart in a shortened search: epochs stay as they are (the paper's
    one warmstart epoch, shrinking from epoch 2) unless the search got too short for them;
    iteration counts keep their share of the search."""
    start, warmstart = settings.start_shrinking, settings.warmstart
    if recipe.is_iterative:
        start = round(start * new_length / recipe.length)
        warmstart = round(warmstart * new_length / recipe.length)
    start = max(1, min(new_length - 1, start))
    return replace(settings, start_shrinking=start, warmstart=max(1, min(start, warmstart)))


def _register_family(search: Task, targets: list[Task]) -> None:
    TASKS.add(search.name, replace(search, transfer=tuple(t.name for t in targets)))
    for target in targets:
        TASKS.add(target.name, target)


def _variant(task: Task, name: str, description: str, **changes) -> Task:
    return replace(task, name=name, description=description, **changes)


# ----------------------------------------------------------------------------------------------
# paper scale: GRAFS_REFERENCE section 4, exactly
# ----------------------------------------------------------------------------------------------
_RESNET_RETRAIN = Recipe(
    "sgd",
    0.1,
    128,
    epochs=200,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="multistep",
    milestones=(100, 150),
    augment="crop_flip",
)
_RESNET_SEARCH = Recipe("sgd", 0.1, 64, epochs=50, momentum=0.9, weight_decay=1e-4, accumulation=2, augment="crop_flip")
_cifar_resnet20 = Task(
    "cifar10-resnet20",
    "paper",
    "resnet",
    "resnet20",
    "cifar10",
    _RESNET_RETRAIN,
    _RESNET_SEARCH,
    GrafsSettings(arch_lr=6e-4, start_shrinking=2, warmstart=1),
    ACCURACY,
    description="ResNet20 on CIFAR-10 (the paper's ResNet search task)",
    default_activation="relu",
)
_register_family(
    _cifar_resnet20,
    [
        _variant(_cifar_resnet20, f"{dataset}-{model}", f"{model} on {label}", model=model, dataset=dataset)
        for dataset, label in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"), ("svhn", "SVHN"))
        for model in ("resnet20", "resnet32", "resnet44", "resnet56")
        if (dataset, model) != ("cifar10", "resnet20")
    ],
)

_VIT_RETRAIN = Recipe("adam", 1e-3, 512, epochs=500, weight_decay=0.0, schedule="cosine", augment="trivial_augment")
_VIT_SEARCH = Recipe("adam", 1e-3, 128, epochs=50, schedule="cosine", accumulation=4, augment="trivial_augment")
_cifar_vit = Task(
    "cifar10-vit-tiny",
    "paper",
    "vit",
    "vit_tiny",
    "cifar10",
    _VIT_RETRAIN,
    _VIT_SEARCH,
    GrafsSettings(arch_lr=0.09, start_shrinking=2, warmstart=1),
    ACCURACY,
    model_kwargs=(("patch", (4, 4)),),
    description="ViT-Tiny on CIFAR-10 (the paper's ViT search task)",
    default_activation="gelu",
)
_register_family(
    _cifar_vit,
    [
        _variant(_cifar_vit, "cifar10-vit-small", "ViT-Small on CIFAR-10", model="vit_small"),
        _variant(_cifar_vit, "cifar100-vit-tiny", "ViT-Tiny on CIFAR-100", dataset="cifar100"),
        _variant(_cifar_vit, "cifar100-vit-small", "ViT-Small on CIFAR-100", model="vit_small", dataset="cifar100"),
    ],
)

# The reference's commands hold 640 sequences per optimizer step (search 4 x 160 micro-batches,
# retraining 16 x 40); 64 x 10 is the same step in fewer, larger micro-batches.
_GPT_RETRAIN = Recipe(
    "adamw",
    1e-3,
    64,
    iterations=10_000,
    betas=(0.9, 0.99),
    accumulation=10,
    weight_decay=0.1,
    schedule="cosine",
    min_lr=1e-4,
    warmup_iterations=100,
    grad_clip=1.0,
    eval_batch_size=64,
    eval_batches=200,
    eval_interval=500,
)
# The reference's search command runs no learning-rate warmup.
_GPT_SEARCH = replace(_GPT_RETRAIN, iterations=1000, eval_interval=100, warmup_iterations=0)
_tinystories_gpt = Task(
    "tinystories-gpt-mini",
    "paper",
    "gpt",
    "gpt_mini",
    "tinystories",
    _GPT_RETRAIN,
    _GPT_SEARCH,
    GrafsSettings(arch_lr=1e-3, start_shrinking=200, warmstart=101),
    LOSS,
    model_kwargs=(("block_size", 256), ("dropout", 0.2)),
    description="miniGPT (3L/3H/192) on TinyStories (the paper's GPT search task)",
    default_activation="gelu",
)
_register_family(
    _tinystories_gpt,
    [
        _variant(_tinystories_gpt, "tinystories-gpt-tiny", "tinyGPT (6L/6H/384) on TinyStories", model="gpt_tiny"),
        _variant(_tinystories_gpt, "tinystories-gpt-small", "smallGPT (9L/9H/576) on TinyStories", model="gpt_small"),
    ],
)

# ----------------------------------------------------------------------------------------------
# cpu scale: the same three families on offline data, sized for 2 CPU cores
# ----------------------------------------------------------------------------------------------
_RESNET1D_RECIPE = Recipe("adam", 3e-3, 128, epochs=15, weight_decay=1e-4, schedule="cosine")
# cpu searches are calibrated to their paper counterparts by one rule (README, "Calibrating the cpu
# searches"): the paper's shape of the search (warmstart and shrinking start at the same share of
# it) and its total architecture movement, arch_lr x architecture steps. ResNet20's search: 48
# trained epochs x 293 steps x 6e-4 = 8.44; here 48 x 43 steps, so arch_lr = 8.44 / 2,064.
_RESNET1D_SEARCH = Recipe("sgd", 0.05, 64, epochs=50, momentum=0.9, weight_decay=1e-4)
_mnist1d_resnet = Task(
    "mnist1d-resnet1d",
    "cpu",
    "resnet1d",
    "resnet1d_small",
    "mnist1d",
    _RESNET1D_RECIPE,
    _RESNET1D_SEARCH,
    GrafsSettings(arch_lr=4.09e-3, start_shrinking=2, warmstart=1),
    ACCURACY,
    description="small 1-D ResNet on MNIST-1D (cpu counterpart of ResNet20 / CIFAR-10)",
    default_activation="relu",
)
_register_family(
    _mnist1d_resnet,
    [
        _variant(_mnist1d_resnet, "mnist1d-resnet1d-large", "large 1-D ResNet on MNIST-1D", model="resnet1d_large"),
        _variant(
            _mnist1d_resnet,
            "mnist1d-shuffled-resnet1d",
            "small 1-D ResNet on MNIST-1D with shuffled time steps",
            dataset="mnist1d-shuffled",
        ),
    ],
)

_VIT_CPU_RECIPE = Recipe("adam", 2e-3, 64, epochs=15, weight_decay=0.0, schedule="cosine")
# ViT-Tiny's search moves the architecture 48 epochs x 74 steps x 0.09 = 320; here 48 x 26 steps.
_VIT_CPU_SEARCH = Recipe("adam", 2e-3, 32, epochs=50, schedule="cosine")
_digits_vit = Task(
    "digits-vit",
    "cpu",
    "vit",
    "vit_micro",
    "digits",
    _VIT_CPU_RECIPE,
    _VIT_CPU_SEARCH,
    GrafsSettings(arch_lr=0.256, start_shrinking=2, warmstart=1),
    ACCURACY,
    model_kwargs=(("patch", (2, 2)),),
    description="micro ViT on scikit-learn digits (cpu counterpart of ViT-Tiny / CIFAR-10)",
    default_activation="gelu",
)
_register_family(
    _digits_vit,
    [
        _variant(_digits_vit, "digits-vit-mini", "mini ViT on scikit-learn digits", model="vit_mini"),
        _variant(
            _digits_vit,
            "mnist1d-vit",
            "micro ViT on MNIST-1D (1-D patches of 4)",
            dataset="mnist1d",
            model_kwargs=(("patch", (1, 4)),),
        ),
    ],
)

_GPT_CPU_RECIPE = Recipe(
    "adamw",
    2e-3,
    32,
    iterations=600,
    betas=(0.9, 0.95),
    weight_decay=0.1,
    schedule="cosine",
    min_lr=2e-4,
    warmup_iterations=30,
    grad_clip=1.0,
    eval_batch_size=64,
    eval_batches=20,
    eval_interval=150,
)
# miniGPT's search moves the architecture 999 iterations x 1e-3 = 1.0; here 298 iterations.
_GPT_CPU_SEARCH = replace(_GPT_CPU_RECIPE, iterations=300, eval_interval=50)
_pydoc_gpt = Task(
    "pydoc-gpt",
    "cpu",
    "gpt",
    "gpt_nano",
    "pydoc-text",
    _GPT_CPU_RECIPE,
    _GPT_CPU_SEARCH,
    GrafsSettings(arch_lr=3.35e-3, start_shrinking=60, warmstart=31),
    LOSS,
    model_kwargs=(("block_size", 64), ("dropout", 0.0)),
    description="nano GPT on CPython's pydoc text, bytes as tokens (cpu counterpart of miniGPT / TinyStories)",
    default_activation="gelu",
)
_register_family(
    _pydoc_gpt,
    [
        _variant(_pydoc_gpt, "pydoc-gpt-micro", "micro GPT on CPython's pydoc text", model="gpt_micro"),
        _variant(_pydoc_gpt, "stdlib-gpt", "nano GPT on CPython's standard-library source", dataset="stdlib-text"),
    ],
)
