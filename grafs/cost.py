"""What a search or a training spent, in the units budgets are counted in."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Cost:
    """Wall seconds and samples pushed through the network.

    ``train_samples`` count forward + backward passes (weight and architecture steps alike),
    ``eval_samples`` forward-only passes; for language models a sample is one block of tokens.
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
