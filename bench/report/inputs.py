"""The inputs of a report: a campaign folder's ``campaign.json`` and its gathered tables, nothing else.

Every unit the campaign declares becomes one row, joined with what ``gather`` recorded for it,
so a unit that failed, is still pending or never reached the tables is visible as such instead
of silently shrinking a mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.campaign import Campaign, SearchSpec, Unit
from bench.folder import CampaignFolder, MergedPart
from grafs.errors import UserError

NOT_GATHERED = "not gathered"
# Columns the report reads; gather writes them only for finished units, so they may be absent.
RESULT_COLUMNS = (
    "state", "method", "status", "error", "formula", "genotype", "cost_wall_seconds", "cost_epoch_equivalents",
    "cost_full_trainings", "budget_spent_share", "candidates", "val_metric", "test_metric", "proxy_score",
    "incumbent_step", "config_population", "config_offspring",
)
TRACE_COLUMNS = (
    "unit_id", "label", "task", "seed", "budget_multiple", "step", "status", "incumbent_score", "wall_seconds",
    "epoch_equivalents", "formula", "trial", "score",
)
CURVE_COLUMNS = ("unit_id", "activation", "x", "y")


@dataclass(frozen=True)
class ReportInputs:
    out: Path
    campaign: Campaign
    record: dict  # campaign.json's "campaign" object, as written
    units: pd.DataFrame  # one row per declared unit, with its gathered results
    trace: pd.DataFrame
    curves: pd.DataFrame  # f(x) of the found activations (by unit_id) and the comparison activations
    part: str | None = None  # the part of the campaign the folder holds (None: all of it)
    merged: tuple[MergedPart, ...] = ()  # a merged folder: the part folders its tables come from


def _declared(units: list[Unit]) -> pd.DataFrame:
    rows = []
    for unit in units:
        spec = unit.spec
        search = isinstance(spec, SearchSpec)
        rows.append({
            "unit_id": unit.id,
            "kind": unit.kind,
            "label": spec.label,
            "task": spec.task,
            "seed": spec.seed,
            "budget_multiple": spec.budget_multiple,
            "search_task": spec.task if search else spec.search_task,
            "search_seed": spec.seed if search else spec.search_seed,
            "fixed": None if search else spec.activation.fixed,
            # Which of its search's candidates a retraining trains: 1 is the search's find, more a runner-up.
            "candidate_rank": None if search or spec.activation.search is None else spec.activation.rank or 1,
            "depends_on": unit.depends_on,
        })
    return pd.DataFrame(rows, columns=[
        "unit_id", "kind", "label", "task", "seed", "budget_multiple", "search_task", "search_seed", "fixed",
        "candidate_rank", "depends_on",
    ])


def load_inputs(out: Path) -> ReportInputs:
    """Read ``out``; a folder that is not a gathered campaign is a one-line :class:`UserError`."""
    out = Path(out)
    folder = CampaignFolder(out)
    record = folder.read_record()
    tables = folder.tables_dir
    if not (tables / "units.parquet").is_file():
        raise UserError(f"{out} has no gathered tables (tables/units.parquet); run `grafs-bench gather {out}` first")
    gathered = pd.read_parquet(tables / "units.parquet")
    units = _declared(record.units)
    results = gathered.drop(columns=[c for c in units.columns if c != "unit_id" and c in gathered.columns])
    units = units.merge(results, on="unit_id", how="left", validate="one_to_one")
    units = units.reindex(columns=list(dict.fromkeys([*units.columns, *RESULT_COLUMNS])))
    units["state"] = units["state"].astype(object).where(units["state"].notna(), NOT_GATHERED)
    trace = pd.read_parquet(path) if (path := tables / "trace.parquet").is_file() else pd.DataFrame()
    trace = trace.reindex(columns=list(dict.fromkeys([*trace.columns, *TRACE_COLUMNS])))
    path = tables / "activation_curves.parquet"
    curves = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=list(CURVE_COLUMNS))
    return ReportInputs(out=out, campaign=record.campaign, record=record.raw, units=units, trace=trace, curves=curves,
                        part=record.part, merged=record.merged)
