"""The report's tables, as pure functions of the gathered units.

Each table comes twice: ``data`` holds the numbers (written as CSV), ``display`` the formatted
cells (Markdown, HTML, LaTeX). A cell averaged over fewer finished units than the campaign
declares says so (``n=2/3``) instead of passing for a complete result.

Seeds: a found activation is one per search seed (averaged over its evaluation seeds), so its
mean and standard deviation run over search seeds; a fixed activation's run over evaluation seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.campaign import Campaign, retrain_variants
from bench.tasks import Metric, get_task

MISSING = "–"
# Normalised transfer scores below this are shown as "< -1": when ReLU is within noise of the best,
# the scale (best - ReLU) is tiny and the raw quotient runs to -100 and beyond.
NORMALISED_FLOOR = -1.0


@dataclass(frozen=True)
class Entry:
    """One row of activations: a method's finds (at one budget multiple) or a fixed activation."""

    name: str
    label: str
    method: str  # the registered search method, or "fixed"
    variant: str
    budget_multiple: float | None = None
    searched_as: str | None = None  # a retraining variant (per-layer betas): the entry whose searches it retrains

    @property
    def search_entry(self) -> str:
        return self.searched_as or self.name

    @property
    def fixed(self) -> bool:
        return self.method == "fixed"


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    data: pd.DataFrame
    display: pd.DataFrame
    bold: pd.DataFrame | None = None
    notes: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------
def format_metric(value: float, metric: Metric) -> str:
    if not math.isfinite(value):
        return MISSING
    return f"{100 * value:.2f}" if metric.name == "accuracy" else f"{value:.3f}"


def format_number(value: float) -> str:
    if not math.isfinite(value):
        return MISSING
    magnitude = abs(value)
    if value == 0:
        return "0"
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if magnitude >= 1 else f"{value:.3f}"


def format_compact(value: float) -> str:
    """Counts and ranks: whole numbers without decimals, averages with one."""
    if not math.isfinite(value):
        return MISSING
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def completeness_mark(n: int, expected: int) -> str:
    return f" (n={n}/{expected})" if n < expected else ""


def format_cell(mean: float, std: float, n: int, expected: int, metric: Metric) -> str:
    if not math.isfinite(mean):
        return MISSING + completeness_mark(n, expected)
    text = format_metric(mean, metric)
    if math.isfinite(std):
        text += f" ± {format_metric(std, metric)}"
    return text + completeness_mark(n, expected)


def metric_note(tasks: list[str]) -> str:
    accuracy = [t for t in tasks if get_task(t).metric.name == "accuracy"]
    loss = [t for t in tasks if get_task(t).metric.name != "accuracy"]
    parts = []
    if accuracy:
        parts.append(f"test accuracy in % (higher is better) on {', '.join(accuracy)}")
    if loss:
        parts.append(f"test loss (lower is better) on {', '.join(loss)}")
    return "Metric: " + "; ".join(parts) + "."


# ----------------------------------------------------------------------------------------------
# Rows, columns and the per-seed scores everything is built from
# ----------------------------------------------------------------------------------------------
def _option_text(options: tuple) -> str:
    return ", ".join(f"{key}={value}" for key, value in options)


def entries(campaign: Campaign) -> list[Entry]:
    """The campaign's activations in report order: each method (black-box ones per budget), then fixed ones."""
    found = []
    for method in campaign.methods:
        options = _option_text(method.options)
        if method.is_grafs:
            found.append(Entry(method.label, method.label, method.method, options or "fixed mode"))
            continue
        variant = ", ".join(part for part in (method.method if method.label != method.method else "", options) if part)
        for multiple in sorted(campaign.budget_multiples):
            searched = f"{method.label} ({multiple:g}x)"
            found.append(Entry(searched, method.label, method.method, variant, multiple))
            for label, learnable_betas in retrain_variants(method):
                if learnable_betas:
                    per_layer = ", ".join(part for part in (variant, "betas learned per layer") if part)
                    found.append(Entry(f"{label} ({multiple:g}x)", label, method.method, per_layer, multiple, searched))
    return found + [Entry(name, name, "fixed", "fixed activation") for name in campaign.fixed]


def default_grafs(campaign: Campaign) -> str | None:
    """The label of GRAFS as published: the method black-box budgets and targets are matched to."""
    return next((m.label for m in campaign.methods if m.is_default_grafs), None)


def columns(campaign: Campaign) -> list[tuple[str, str]]:
    """(search task, evaluated task) pairs: each search task, then its transfer targets."""
    return [(task, target) for task in campaign.tasks for target in campaign.targets_of(get_task(task))]


def named_columns(campaign: Campaign) -> list[tuple[str, str, str]]:
    """(search task, evaluated task, column name); a target shared by two search tasks names both."""
    pairs = columns(campaign)
    counts = pd.Series([target for _, target in pairs], dtype=object).value_counts()
    return [(task, target, target if counts[target] == 1 else f"{target} [{task}]") for task, target in pairs]


def with_entries(units: pd.DataFrame, campaign: Campaign) -> pd.DataFrame:
    """``units`` plus the name of the entry each unit belongs to."""
    by_key = {(e.label, e.budget_multiple): e.name for e in entries(campaign) if not e.fixed}

    def name(row) -> str | None:
        if isinstance(row.fixed, str):
            return row.fixed
        if pd.notna(row.candidate_rank) and row.candidate_rank > 1:  # a runner-up: proxy fidelity only
            return None
        multiple = None if pd.isna(row.budget_multiple) else float(row.budget_multiple)
        return by_key.get((row.label, multiple))

    units = units.copy()
    units["entry"] = [name(row) for row in units.itertuples()] if len(units) else []
    return units


def _finished_metric(units: pd.DataFrame) -> pd.Series:
    """The test metric of finished units; NaN for unfinished or diverged ones."""
    value = pd.to_numeric(units["test_metric"], errors="coerce").astype(float)
    return value.where(np.isfinite(value) & (units["state"] == "done"))


def replicate_scores(units: pd.DataFrame, campaign: Campaign) -> pd.DataFrame:
    """One row per (entry, search task, evaluated task, replicate): the test metric averaged over
    the replicate's finished retrainings, with ``n`` finished and ``expected`` declared units."""
    retrains = units[units["kind"] == "retrain"].copy()
    retrains["value"] = _finished_metric(retrains)
    is_fixed = retrains["fixed"].notna()
    frames = []
    for task, target in columns(campaign):
        found = retrains[~is_fixed & (retrains["search_task"] == task) & (retrains["task"] == target)]
        fixed = retrains[is_fixed & (retrains["task"] == target)]
        for part, replicate in ((found, "search_seed"), (fixed, "seed")):
            if part.empty:
                continue
            grouped = part.assign(replicate=part[replicate].astype(int)).groupby(["entry", "replicate"], sort=True)
            frame = grouped.agg(value=("value", "mean"), n=("value", "count"), expected=("value", "size"))
            frames.append(frame.reset_index().assign(search_task=task, task=target))
    order = ["entry", "search_task", "task", "replicate", "value", "n", "expected"]
    if not frames:
        return pd.DataFrame(columns=order)
    return pd.concat(frames, ignore_index=True)[order]


def cells(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over replicates per (entry, search task, evaluated task)."""
    grouped = scores.groupby(["entry", "search_task", "task"], sort=True)
    return grouped.agg(mean=("value", "mean"), std=("value", "std"), n=("n", "sum"), expected=("expected", "sum"))


def _cell(table: pd.DataFrame, key: tuple[str, str, str]) -> tuple[float, float, int, int]:
    if key not in table.index:
        return math.nan, math.nan, 0, 0
    row = table.loc[key]
    return float(row["mean"]), float(row["std"]), int(row["n"]), int(row["expected"])


def _rank(values: pd.Series, metric: Metric) -> pd.Series:
    """Rank 1 is best; ties share the average rank; missing values get no rank."""
    return values.rank(ascending=metric.direction == "min", method="average")


# ----------------------------------------------------------------------------------------------
# Candidates: distinct functions a search evaluated
# ----------------------------------------------------------------------------------------------
def candidates(units: pd.DataFrame, trace: pd.DataFrame) -> pd.Series:
    """Per search unit: ``candidates`` as gathered, else the distinct formulas its trace evaluated
    (a black-box duplicate is not a new function; a GRAFS round counts its discretized cell)."""
    searches = units[units["kind"] == "search"].set_index("unit_id")
    result = pd.to_numeric(searches["candidates"], errors="coerce").astype(float)
    if not trace.empty:
        evaluated = trace[(trace["status"] != "duplicate") & trace["formula"].notna()]
        distinct = evaluated.groupby("unit_id")["formula"].nunique().astype(float)
        result = result.fillna(distinct.reindex(result.index))
    return result.where(searches["state"] == "done")


def search_details(units: pd.DataFrame, trace: pd.DataFrame) -> pd.DataFrame:
    """Per finished black-box search: ``generations`` completed and whether its incumbent came from the
    initial random sample (searches with a population), and ``stopped_rung_<r>``: candidates a
    multi-fidelity search stopped after r checkpoints (trace rows with status "pruned" and their "resource")."""
    searches = units[(units["kind"] == "search") & (units["state"] == "done") & (units["method"] != "grafs")]
    details = pd.DataFrame(index=pd.Index(searches["unit_id"], name="unit_id"))
    if trace.empty:
        return details
    own = trace[trace["unit_id"].isin(details.index)]
    trials = own.groupby("unit_id").size().reindex(details.index).astype(float)
    population = pd.to_numeric(searches.set_index("unit_id")["config_population"], errors="coerce")
    offspring = pd.to_numeric(searches.set_index("unit_id")["config_offspring"], errors="coerce")
    # NSGA-II and regularized evolution count a generation per population of trials; PANGAEA breeds
    # generations of ``offspring`` after its initial population.
    steady = np.floor(trials / population)
    bred = 1 + np.floor((trials - population).clip(lower=0) / offspring)
    details["generations"] = bred.where(offspring.notna() & (trials >= population), steady)
    incumbent = pd.to_numeric(searches.set_index("unit_id")["incumbent_step"], errors="coerce")
    details["from_initial_sample"] = (incumbent < population).where(population.notna() & incumbent.notna())
    if "resource" in own.columns:  # the checkpoints a multi-fidelity candidate ran: the rung it reached
        pruned = own[own["status"] == "pruned"]
        counts = pruned.groupby(["unit_id", "resource"]).size().unstack(fill_value=0)
        for rung in counts.columns:
            details[f"stopped_rung_{rung:g}"] = counts[rung].reindex(details.index).fillna(0).astype(float)
    return details


def _rung_text(row: pd.Series, rungs: list[str]) -> str:
    parts = [f"r{name.removeprefix('stopped_rung_')}: {format_compact(row[name])}" for name in rungs
             if math.isfinite(row[name])]
    return ", ".join(parts) or MISSING


def relu_best_columns(means: pd.DataFrame, campaign: Campaign) -> list[str]:
    """The evaluated-task columns of ``means`` (rows: activations) in which ReLU has the best mean."""
    if "relu" not in means.index:
        return []
    names = []
    for _, target, name in named_columns(campaign):
        column = means[name].astype(float)
        best = column.max() if get_task(target).metric.direction == "max" else column.min()
        if math.isfinite(column["relu"]) and column["relu"] == best:
            names.append(name)
    return names


# ----------------------------------------------------------------------------------------------
# The tables
# ----------------------------------------------------------------------------------------------
def efficiency(units: pd.DataFrame, trace: pd.DataFrame, campaign: Campaign) -> Table:
    """Per search task and method: search cost, candidates, the found activation's test metric, rank."""
    table = cells(replicate_scores(units, campaign))
    counted = candidates(units, trace)
    details = search_details(units, trace)
    rungs = [c for c in details.columns if c.startswith("stopped_rung_")]
    searches = units[units["kind"] == "search"]
    costs = {
        "seconds": "cost_wall_seconds", "epoch_equivalents": "cost_epoch_equivalents",
        "full_trainings": "cost_full_trainings",
    }
    rows = []
    for task in campaign.tasks:
        metric = get_task(task).metric
        block = []
        for entry in entries(campaign):
            row = {"search_task": task, "method": entry.name, "variant": entry.variant,
                   "budget_multiple": entry.budget_multiple}
            if entry.fixed:
                row.update({f"{key}_{stat}": 0.0 for key in costs for stat in ("mean", "std")})
                row.update(candidates=math.nan, searches=0, searches_expected=0, budget_used=math.nan,
                           generations=math.nan, incumbents_from_initial_sample=math.nan,
                           **{name: math.nan for name in rungs})
            else:
                group = searches[(searches["task"] == task) & (searches["entry"] == entry.search_entry)]
                done = group[group["state"] == "done"]
                for key, column in costs.items():
                    values = pd.to_numeric(done[column], errors="coerce").astype(float)
                    row[f"{key}_mean"] = _mean(values)
                    row[f"{key}_std"] = float(values.std()) if len(values) > 1 else math.nan
                row.update(
                    candidates=float(counted.reindex(done["unit_id"]).mean()) if len(done) else math.nan,
                    searches=len(done), searches_expected=len(group),
                    budget_used=_mean(pd.to_numeric(done["budget_spent_share"], errors="coerce").astype(float)),
                )
                own = details.reindex(done["unit_id"])
                known = own["from_initial_sample"].dropna() if "from_initial_sample" in own else pd.Series()
                row.update(
                    generations=_mean(own["generations"].dropna()) if "generations" in own else math.nan,
                    incumbents_from_initial_sample=float(known.sum()) if len(known) else math.nan,
                    incumbents_known=len(known),
                    **{name: _mean(own[name].dropna()) for name in rungs},
                )
            mean, std, n, expected = _cell(table, (entry.name, task, task))
            row.update(test_metric_mean=mean, test_metric_std=std, test_n=n, test_expected=expected)
            block.append(row)
        block_frame = pd.DataFrame(block)
        block_frame["rank"] = _rank(block_frame["test_metric_mean"], metric)
        rows.append(block_frame)
    data = pd.concat(rows, ignore_index=True)

    def cost(row, key: str) -> str:
        return format_number(row[f"{key}_mean"]) + completeness_mark(row["searches"], row["searches_expected"])

    display = pd.DataFrame({
        "Search task": data["search_task"],
        "Method": data["method"],
        "Variant": data["variant"].replace("", MISSING),
        "Cost (s)": [cost(r, "seconds") for _, r in data.iterrows()],
        "Epoch-eq.": [cost(r, "epoch_equivalents") for _, r in data.iterrows()],
        "Full trainings": [cost(r, "full_trainings") for _, r in data.iterrows()],
        "Budget used": [MISSING if not math.isfinite(v) else f"{v:.2f}x" for v in data["budget_used"]],
        "Candidates": [format_compact(v) for v in data["candidates"]],
        **({"Generations": [format_compact(v) for v in data["generations"]],
            "Incumbent from": [MISSING if not math.isfinite(v) else f"initial sample {v:.0f}/{n:.0f}"
                               for v, n in zip(data["incumbents_from_initial_sample"],
                                               data["incumbents_known"].fillna(0), strict=True)]}
           if data["generations"].notna().any() else {}),
        **({"Stopped per rung": [_rung_text(r, rungs) for _, r in data.iterrows()]} if rungs else {}),
        "Test metric": [
            format_cell(r["test_metric_mean"], r["test_metric_std"], r["test_n"], r["test_expected"],
                        get_task(r["search_task"]).metric)
            for _, r in data.iterrows()
        ],
        "Rank": [format_compact(v) for v in data["rank"]],
    })
    bold = pd.DataFrame(False, index=display.index, columns=display.columns)
    bold["Test metric"] = data["rank"] == 1
    notes = (
        metric_note(list(campaign.tasks)) + " Test metric: the found activation retrained on the search task, "
        "mean ± std over search seeds (fixed activations: over evaluation seeds). Rank 1 is best within a task.",
        "Cost: mean over search seeds of the search's wall seconds, its epoch-equivalents (sample passes / "
        "training-split size) and its training samples as a multiple of one full training of the search model. "
        "Candidates: distinct functions evaluated per search. Black-box budgets are multiples of the GRAFS "
        "search of the same task and seed. Fixed activations need no search.",
        "Budget used: what a black-box search spent over its budget, in the campaign's budget unit, mean over "
        "seeds; above 1.00x its last step ran past the budget (a candidate's training, or a method's set-up "
        "such as the surrogate's pool features, which are computed before the first prediction).",
    )
    if data["generations"].notna().any():
        notes += (
            "Generations: populations of trials an evolutionary search completed (PANGAEA: its initial population, "
            "then one per offspring batch), mean over seeds. Incumbent from: in how many seeds the find came from the "
            "initial random sample (the first population of trials) rather than from evolution. NSGA-II "
            "('evolution') draws its first generation with Optuna's random sampler under the search seed, the "
            "same candidates random search evaluates first, so where its incumbent comes from that sample, its "
            "find equals random search's at the same seed and budget.",
        )
    if rungs:
        notes += ("Stopped per rung: candidates a multi-fidelity search stopped (pruned) at each rung r, mean "
                  "over seeds.",)
    return Table("efficiency", "Efficiency: search cost and the found activation's test metric", data, display,
                 bold, notes)


def time_to_target(units: pd.DataFrame, campaign: Campaign) -> Table:
    """Per black-box method and task: the smallest budget multiple whose mean test metric matches GRAFS's."""
    table = cells(replicate_scores(units, campaign))
    reference = default_grafs(campaign)
    multiples = sorted(campaign.budget_multiples)
    blackbox = list(dict.fromkeys(m.label for m in campaign.methods if not m.is_grafs))
    rows, shown = [], []
    for task in campaign.tasks:
        metric = get_task(task).metric
        target, _, target_n, target_expected = _cell(table, (reference, task, task))
        for label in blackbox:
            row = {"search_task": task, "method": label, "grafs_mean": target,
                   "grafs_complete": target_n == target_expected > 0}
            cells_shown = {}
            needed, complete = math.nan, row["grafs_complete"]
            for multiple in multiples:
                mean, _, n, expected = _cell(table, (f"{label} ({multiple:g}x)", task, task))
                row[f"mean_{multiple:g}x"] = mean
                cells_shown[f"{multiple:g}x"] = format_metric(mean, metric) + completeness_mark(n, expected)
                if math.isnan(needed):
                    complete = complete and n == expected > 0
                    if _matches(mean, target, metric):
                        needed = multiple
            row.update(needed_multiple=needed, largest_multiple=multiples[-1], complete=complete)
            rows.append(row)
            if not math.isfinite(target):
                text = MISSING
            else:
                text = f"{needed:g}x" if math.isfinite(needed) else f"> {multiples[-1]:g}x"
                if not complete:
                    text += " (incomplete)"
            shown.append({
                "Search task": task, "Method": label,
                f"GRAFS ({reference})": format_metric(target, metric) + completeness_mark(target_n, target_expected),
                **cells_shown, "Budget to match GRAFS": text,
            })
    columns_ = ["Search task", "Method", f"GRAFS ({reference})", *(f"{m:g}x" for m in multiples),
                "Budget to match GRAFS"]
    notes = (
        "The smallest budget multiple (of the GRAFS search's cost) at which the method's found activation, "
        "retrained, reaches GRAFS's mean test metric on the search task; '> k x' when it never does within "
        "the largest budget. 'incomplete' when a mean it rests on misses units. The multiples are the budgets "
        "granted; the efficiency table's 'Budget used' says where a method spent more.",
    )
    return Table("time_to_target", "Time to target: the budget a black-box method needs to match GRAFS",
                 pd.DataFrame(rows), pd.DataFrame(shown, columns=columns_), None, notes)


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def _matches(value: float, target: float, metric: Metric) -> bool:
    return math.isfinite(value) and math.isfinite(target) and (value == target or metric.better(value, target))


def transfer(units: pd.DataFrame, campaign: Campaign) -> tuple[Table, Table]:
    """Activations x (search task and transfer targets): the table and its ReLU-to-best normalisation."""
    table = cells(replicate_scores(units, campaign))
    transferred = [e for e in entries(campaign) if campaign.transfers(e.budget_multiple)]
    order = [e.name for e in transferred if e.fixed] + [e.name for e in transferred if not e.fixed]
    named = named_columns(campaign)
    names = [name for _, _, name in named]
    means = pd.DataFrame(index=order, columns=names, dtype=float)
    display = pd.DataFrame(index=order, columns=names, dtype=object)
    incomplete = pd.DataFrame(False, index=order, columns=names)
    data_columns = {}
    for task, target, name in named:
        metric = get_task(target).metric
        for entry in order:
            mean, std, n, expected = _cell(table, (entry, task, target))
            means.loc[entry, name] = mean
            display.loc[entry, name] = format_cell(mean, std, n, expected, metric)
            incomplete.loc[entry, name] = n < expected or expected == 0
            data_columns.setdefault(f"{name} mean", []).append(mean)
            data_columns.setdefault(f"{name} std", []).append(std)
            data_columns.setdefault(f"{name} n", []).append(n)
            data_columns.setdefault(f"{name} expected", []).append(expected)
    ranks = pd.DataFrame(
        {name: _rank(means[name], get_task(target).metric) for _, target, name in named}, index=order
    )
    average_rank = ranks.mean(axis=1)
    best = pd.DataFrame({name: ranks[name] == ranks[name].min() for name in names}, index=order)
    display["Average rank"] = [
        format_compact(r) if not math.isfinite(r) else f"{r:.2f}" + (" (incomplete)" if incomplete.loc[e].any() else "")
        for e, r in average_rank.items()
    ]
    bold = best.assign(**{"Average rank": average_rank == average_rank.min()})
    data = pd.DataFrame({"activation": order, **data_columns, "average_rank": average_rank.to_numpy()})
    targets = {task: [name for t, target, name in named if t == task and target != task] for task in campaign.tasks}
    search_note = "; ".join(f"{task} (search task) -> {', '.join(targets[task]) or 'no targets'}" for task in targets)
    notes = (
        metric_note(list(dict.fromkeys(target for _, target, _ in named))) + " Mean ± std over seeds; best per column "
        "in bold; the average rank runs over the columns (1 is best).",
        f"Columns: {search_note}. A method's row uses, in each column, the activations it found on that "
        "column's search task.",
    )
    if campaign.transfer_multiples is not None:
        shown_multiples = ", ".join(f"{m:g}x" for m in sorted(campaign.transfer_multiples)) or "none"
        notes += (f"Black-box methods appear with their finds at the budgets retrained on the transfer targets "
                  f"({shown_multiples}); the efficiency table has every budget on the search task.",)
    shown = display.reset_index(names="Activation")
    transfer_table = Table("transfer", "Transfer: test metric on the search task and its transfer targets", data,
                           shown, bold.reset_index(drop=True).assign(Activation=False)[shown.columns], notes)
    return transfer_table, normalised_transfer(means, incomplete, campaign, order)


def normalised_transfer(means: pd.DataFrame, incomplete: pd.DataFrame, campaign: Campaign, order: list[str]) -> Table:
    """Per column, ReLU -> 0 and the best activation -> 1 (negative: worse than ReLU)."""
    named = named_columns(campaign)
    names = [name for _, _, name in named]
    values = pd.DataFrame(np.nan, index=order, columns=names)
    notes = [f"Per column, ReLU is 0 and the best activation 1; negative values are worse than ReLU, shown as "
             f"< {NORMALISED_FLOOR:g} when more than the best's gain over ReLU below it (the CSV keeps the exact "
             f"value). Mean: the average over the columns, each value floored at {NORMALISED_FLOOR:g}, so one "
             "column where ReLU is within noise of the best cannot swamp it."]
    if "relu" in means.index:
        relu_best = relu_best_columns(means, campaign)
        for _, target, name in named:
            column = means[name]
            relu = column["relu"]
            best = column.max() if get_task(target).metric.direction == "max" else column.min()
            if math.isfinite(relu) and math.isfinite(best) and name not in relu_best:
                values[name] = (column - relu) / (best - relu)
        if relu_best:
            notes.append(f"ReLU is the best activation on {', '.join(relu_best)}: a scale from ReLU to the best "
                         "is empty there, so that column shows – and stays out of the mean.")
    else:
        notes.append("The campaign retrains no ReLU, so nothing is normalised.")
    values["Mean"] = values[names].clip(lower=NORMALISED_FLOOR).mean(axis=1)
    display = values.map(normalised_text)
    marked = incomplete.reindex(index=order, columns=names).fillna(True)
    for name in names:
        display[name] = [_dagger(text, marked.loc[e, name]) for e, text in display[name].items()]
    display["Mean"] = [_dagger(text, marked.loc[e].any()) for e, text in display["Mean"].items()]
    if marked.to_numpy().any():
        notes.append("† computed from an incomplete group (see the transfer table's n=k/N).")
    bold = values.eq(values.max(axis=0), axis=1) & values.notna()
    data = values.reset_index(names="activation")
    shown = display.reset_index(names="Activation")
    return Table("transfer_normalised", "Transfer, normalised between ReLU (0) and the best activation (1)", data,
                 shown, bold.reset_index(drop=True).assign(Activation=False)[shown.columns], tuple(notes))


def normalised_text(value: float) -> str:
    if not math.isfinite(value):
        return MISSING
    if value < NORMALISED_FLOOR:
        return f"< {NORMALISED_FLOOR:g}"
    return f"{value + 0.0:.2f}"  # + 0.0: no "-0.00"


def _dagger(text: str, incomplete: bool) -> str:
    return text + "†" if incomplete and text != MISSING else text


def found_activations(units: pd.DataFrame, campaign: Campaign) -> Table:
    """Every search's found activation (formula) and its retrained test metric on the search task."""
    scores = replicate_scores(units, campaign).set_index(["entry", "search_task", "task", "replicate"])
    searches = units[units["kind"] == "search"]
    rows, shown = [], []
    for task in campaign.tasks:
        metric = get_task(task).metric
        for entry in entries(campaign):
            if entry.fixed:
                continue
            group = searches[(searches["task"] == task) & (searches["entry"] == entry.search_entry)].sort_values("seed")
            for unit in group.itertuples():
                key = (entry.name, task, task, int(unit.seed))
                value = float(scores.loc[key, "value"]) if key in scores.index else math.nan
                formula = unit.formula if unit.state == "done" and isinstance(getattr(unit, "formula", None), str) \
                    else None
                rows.append({"search_task": task, "method": entry.name, "seed": int(unit.seed),
                             "unit_id": unit.unit_id, "state": unit.state, "formula": formula, "test_metric": value})
                shown.append({"Search task": task, "Method": entry.name, "Seed": str(int(unit.seed)),
                              "Test metric": format_metric(value, metric),
                              "f(x)": formula if formula else f"({unit.state})"})
    columns_ = ["Search task", "Method", "Seed", "Test metric", "f(x)"]
    return Table("found_activations", "Found activations", pd.DataFrame(rows),
                 pd.DataFrame(shown, columns=columns_), None,
                 (metric_note(list(campaign.tasks)) + " Retrained on the search task, mean over evaluation seeds.",))


def _seeds(unit) -> str:
    if unit.kind == "search":
        return f"search {int(unit.seed)}"
    if isinstance(unit.fixed, str):
        return f"evaluation {int(unit.seed)}"
    return f"search {int(unit.search_seed)}, evaluation {int(unit.seed)}"


def completeness(units: pd.DataFrame) -> Table:
    """Every unit that is not finished with status ok: failed, running, pending, never gathered, diverged."""
    problem = (units["state"] != "done") | (units["status"].notna() & (units["status"] != "ok"))
    rows = units[problem]

    states = units.set_index("unit_id")["state"].to_dict()
    depends = units.set_index("unit_id")["depends_on"].to_dict()

    def failed_cause(unit_id: str) -> str | None:
        for dependency in depends.get(unit_id, ()):
            if states.get(dependency) == "failed":
                return dependency
            cause = failed_cause(dependency)
            if cause:
                return cause
        return None

    def detail(row) -> str:
        if row.state == "done":
            return f"finished with status {row.status}; its metric is left out of the means"
        if isinstance(row.error, str) and row.error:
            return row.error.splitlines()[0][:160]
        cause = failed_cause(row.unit_id)
        return f"blocked: unit {cause} failed" if cause else ""

    details = [detail(row) for row in rows.itertuples()]
    data = rows[["unit_id", "kind", "label", "task", "seed", "state"]].assign(
        status=rows["status"], detail=details).reset_index(drop=True)
    display = pd.DataFrame({
        "Unit": data["unit_id"], "Kind": data["kind"], "Method": data["label"], "Task": data["task"],
        "Seed": [_seeds(row) for row in rows.itertuples()], "State": data["state"], "Detail": data["detail"],
    })
    return Table("completeness", "Units missing from the results", data, display)
