"""Gather: the unit folders of a campaign -> tidy tables (parquet), the only input of reports.

``units.parquet``   one row per unit (searches and retrainings), finished or not
``trace.parquet``   one row per search trace point (a GRAFS epoch or a black-box trial)
``history.parquet`` one row per evaluation during a retraining
``activation_curves.parquet`` f(x) of every finished search's activation (``unit_id``) and of the
                    comparison activations (``activation``) on a fixed grid of x, so that reports draw
                    them without building a network

Columns that measure time (``*wall_seconds*``, ``started``, ``finished``) depend on the machine,
and Optuna's trial numbers (``trial``, ``duplicate_of``) on whether a search was interrupted and
resumed; all others are a deterministic function of the campaign and its seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.activations import fixed_activation
from bench.campaign import SearchSpec, Unit
from bench.folder import CampaignFolder
from bench.plots import COMPARISON, activation_grid, activation_values
from bench.tasks import get_task
from bench.units import ranked_candidates
from grafs.files import atomic_path
from grafs.genotype import Genotype

EXECUTION_COLUMNS = ("started", "finished", "trial", "duplicate_of")


def _read(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _unit_row(unit: Unit, state: str, folder: Path, searches: dict[str, list[dict]]) -> dict:
    """One unit's row; ``searches`` holds the ranked candidates of the black-box searches gathered so far."""
    spec = unit.spec
    search = isinstance(spec, SearchSpec)
    row = {
        "unit_id": unit.id,
        "kind": unit.kind,
        "state": state,
        "label": spec.label,
        "method": spec.method if search else "retrain",
        "task": spec.task,
        "seed": spec.seed,
        "budget_multiple": spec.budget_multiple,
        "search_task": spec.task if search else spec.search_task,
        "search_seed": spec.seed if search else spec.search_seed,
        "source": None if search else json.dumps(spec.activation.to_dict()),
        "options": json.dumps(spec.options if search else {}, sort_keys=True),
    }
    failed = _read(folder / "failed.json")
    row["error"] = failed["error"] if failed and state != "done" else None
    if state != "done":
        return row
    if search:
        result = _read(folder / "result.json") or {}
        cost = result.get("cost", {})
        budget = result.get("budget") or {}
        row.update(
            status=result.get("status"),
            best_score=result.get("best_score"),
            formula=result.get("formula"),
            genotype=json.dumps(result.get("genotype")),
            betas=result.get("betas"),
            cost_wall_seconds=cost.get("wall_seconds"),
            cost_sample_passes=cost.get("sample_passes"),
            cost_epoch_equivalents=cost.get("epoch_equivalents"),
            cost_full_trainings=cost.get("full_trainings"),
            budget_unit=budget.get("unit"),
            budget_limit_seconds=(budget.get("limits") or {}).get("seconds"),
            budget_limit_sample_passes=(budget.get("limits") or {}).get("sample_passes"),
            budget_spent_share=(budget.get("spent_share") or {}).get(budget.get("unit")),
            candidates=(result.get("evaluations") or {}).get("trained"),
            **{f"config_{key}": value for key, value in (result.get("config") or {}).items()
               if not isinstance(value, (dict, list))},
        )
        if spec.method != "grafs":
            ranked = ranked_candidates(_read(folder / "trace.json") or [], get_task(spec.task).metric)
            searches[unit.id] = ranked
            # Its position among the candidates (Optuna's trial numbers also count interrupted trials).
            row["incumbent_step"] = ranked[0]["step"] if ranked else None
    else:
        metrics = _read(folder / "metrics.json") or {}
        values = metrics.get("metrics", {})
        cost = metrics.get("cost", {})
        genotype = _read(folder / "genotype.json")
        row.update(
            status=metrics.get("status"),
            activation=metrics.get("activation"),
            genotype=json.dumps(genotype) if genotype else None,
            val_metric=values.get("val_metric"),
            test_metric=values.get("test_metric"),
            val_loss=values.get("val_loss"),
            test_loss=values.get("test_loss"),
            val_accuracy=values.get("val_accuracy"),
            test_accuracy=values.get("test_accuracy"),
            cost_wall_seconds=cost.get("wall_seconds"),
            cost_sample_passes=cost.get("sample_passes"),
        )
        source = spec.activation
        ranked = searches.get(source.search)
        if ranked:  # a black-box find: its rank among the search's candidates and its proxy score
            rank = source.rank or 1
            row.update(candidate_rank=rank, proxy_score=ranked[rank - 1]["score"] if rank <= len(ranked) else None)
    return row


def activation_curves(unit_rows: list[dict]) -> pd.DataFrame:
    """f(x) on a grid of 201 points in [-5, 5] for every finished search's genotype and the comparison activations."""
    x = activation_grid()[::4]
    frames = [pd.DataFrame({"unit_id": None, "activation": name, "x": x.numpy(),
                            "y": fixed_activation(name)(x).detach().numpy()}) for name in COMPARISON]
    for row in unit_rows:
        if row["kind"] == "search" and row["state"] == "done" and row.get("genotype") not in (None, "null"):
            y = activation_values(Genotype.from_dict(json.loads(row["genotype"])), x)
            frames.append(pd.DataFrame({"unit_id": row["unit_id"], "activation": None, "x": x.numpy(), "y": y.numpy()}))
    return pd.concat(frames, ignore_index=True)


def gather(out: Path) -> dict[str, pd.DataFrame]:
    """Build the tables from ``out``'s unit folders and write them to ``out/tables``."""
    campaign = CampaignFolder(out)
    units = campaign.read_run_record().units
    states = {uid: state for state, ids in campaign.status(units).items() for uid in ids}
    unit_rows, trace_rows, history_rows = [], [], []
    searches: dict[str, list[dict]] = {}
    for unit in units:  # in expansion order: a search before the retrainings of its candidates
        folder = campaign.unit_dir(unit.id)
        row = _unit_row(unit, states[unit.id], folder, searches)
        unit_rows.append(row)
        if row["state"] != "done":
            continue
        keys = {k: row[k] for k in ("unit_id", "label", "task", "seed", "budget_multiple")}
        if unit.kind == "search":
            for point in _read(folder / "trace.json") or []:
                trace_rows.append({**keys, **{k: v for k, v in point.items() if not isinstance(v, (dict, list))}})
        else:
            for point in _read(folder / "history.json") or []:
                history_rows.append({**keys, "search_task": row["search_task"], **point})
    tables = {
        "units": pd.DataFrame(unit_rows).sort_values("unit_id", kind="stable").reset_index(drop=True),
        "trace": _frame(trace_rows, ["unit_id", "step"]),
        "history": _frame(history_rows, ["unit_id", "step"]),
        "activation_curves": activation_curves(unit_rows),
    }
    folder = campaign.tables_dir
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        with atomic_path(folder / f"{name}.parquet") as temporary:
            table.to_parquet(temporary, index=False)
    return tables


def _frame(rows: list[dict], order: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def deterministic_view(table: pd.DataFrame) -> pd.DataFrame:
    """The table without its timing and bookkeeping columns: equal across re-runs of a campaign."""
    execution = [c for c in table.columns if c in EXECUTION_COLUMNS or "seconds" in c]
    return table.drop(columns=execution)
