"""What a finished run leaves in its folder."""

from __future__ import annotations

from pathlib import Path

from bench.training import TrainResult
from grafs.files import write_json_atomic
from grafs.genotype import Genotype


def save_train_result(result: TrainResult, out: Path, genotype: Genotype | None = None) -> Path:
    """metrics.json (status, metrics, cost), history.json and, for a genotype, genotype.json."""
    out.mkdir(parents=True, exist_ok=True)
    if genotype is not None:
        genotype.save(out / "genotype.json")
    write_json_atomic(out / "history.json", result.history)
    write_json_atomic(out / "metrics.json", result.to_dict())
    return out
