"""A batch as the search loop sees it: inputs, targets and how many samples they hold."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Batch:
    inputs: Tensor
    targets: Tensor

    @property
    def size(self) -> int:
        """Samples in the batch (sequences, for a language model): the unit of the search's cost."""
        return self.inputs.shape[0]
