"""What a finished run leaves in its folder: the files of a training or of a search."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from bench.data.base import Dataset
from bench.tasks import Task
from bench.training import TrainResult
from grafs.files import write_json_atomic, write_text_atomic
from grafs.genotype import Genotype

if TYPE_CHECKING:
    from bench.searchers import SearchOutcome


def save_train_result(result: TrainResult, out: Path, genotype: Genotype | None = None) -> Path:
    """metrics.json (status, metrics, cost), history.json and, for a genotype, genotype.json."""
    out.mkdir(parents=True, exist_ok=True)
    if genotype is not None:
        genotype.save(out / "genotype.json")
    write_json_atomic(out / "history.json", result.history)
    write_json_atomic(out / "metrics.json", result.to_dict())
    return out


def save_search_outcome(outcome: SearchOutcome, out: Path, task: Task, data: Dataset, seed: int) -> dict:
    """What any search (GRAFS, a baseline, a fixed activation) leaves: genotype.json, activation.png,
    trace.json and trace.csv (the anytime trace), GRAFS's history.json, and result.json, written last."""
    from bench.plots import plot_activation

    out.mkdir(parents=True, exist_ok=True)
    if outcome.genotype is not None:
        outcome.genotype.save(out / "genotype.json")
        label = "GRAFS" if outcome.method == "grafs" else outcome.method
        plot_activation(outcome.genotype, out / "activation.png", label=f"{label} ({task.name}, seed {seed})")
    if outcome.history:
        write_json_atomic(out / "history.json", outcome.history)
    write_json_atomic(out / "trace.json", outcome.trace)
    write_text_atomic(out / "trace.csv", trace_csv(outcome.trace))
    summary = outcome.summary(task, data, seed)
    write_json_atomic(out / "result.json", summary)
    return summary


def trace_csv(rows: list[dict]) -> str:
    """An anytime trace as CSV: one row per candidate (or round), empty cells for missing values."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()
