"""The settings of a GRAFS search, importable without torch.

:class:`SearchOptions` are the switches a user chooses per search (the method's options: the
command line, campaign files and result records all derive from this one declaration);
:class:`SearchConfig` adds the settings that come with the task (architecture learning rate,
shrinking start, warmstart length) and the published constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from grafs.errors import unknown_name

MODES = ("fixed", "reference")
SPACES = ("standard", "extended")


@dataclass(frozen=True)
class SearchOptions:
    """The switches of one search. The four contributions (warmstart, bounds, shrinking and
    per-site samples) can be ablated one by one; ``reference`` mode re-runs the published code's defects."""

    mode: str = field(default="fixed", metadata={"help": "fixed, or reference (the published code's defects 1-3)",
                                                  "choices": MODES})
    warmstart: bool = field(default=True, metadata={"help": "weight steps use the default activation at first"})
    bounded: bool = field(default=True, metadata={"help": "clamped operations (INF = 10)"})
    shrinking: bool = field(default=True, metadata={"help": "progressive shrinking of the candidate operations"})
    shared_sample: bool = field(
        default=False, metadata={"help": "one Dirichlet sample per forward pass instead of one per activation site"}
    )
    fast: bool = field(default=True, metadata={"help": "the fused cell (C kernel on CPU) instead of the plain one"})
    space: str = field(default="standard", metadata={"help": "operation space: standard or extended",
                                                      "choices": SPACES})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise unknown_name("search mode", self.mode, MODES)
        if self.space not in SPACES:
            raise unknown_name("operation space", self.space, SPACES)


@dataclass(frozen=True)
class SearchConfig(SearchOptions):
    """Everything one search runs with: the switches plus the task's architecture settings."""

    arch_lr: float = 6e-4
    start_shrinking: int = 2
    warmstart_rounds: int = 1
    arch_weight_decay: float = 1e-3
    arch_betas: tuple[float, float] = (0.5, 0.999)
    max_consecutive_skips: int = 25
    bn_recalibration_batches: int = 20  # fixed mode: batches re-estimating BatchNorm statistics per score

    @classmethod
    def of(cls, options: SearchOptions, **settings) -> SearchConfig:
        """``options`` completed by task ``settings`` (arch_lr, start_shrinking, warmstart_rounds, ...)."""
        return cls(**{name: getattr(options, name) for name in SearchOptions.__dataclass_fields__}, **settings)
