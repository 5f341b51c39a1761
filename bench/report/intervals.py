"""Interval estimates over seeds, as Agarwal et al. (2021, "Deep reinforcement learning at the edge of the
statistical precipice") recommend, computed with numpy and scipy (their rliable library is archived).

Every interval is a 95 % percentile interval of a stratified bootstrap: a task's runs (its seeds) are
resampled with replacement within that task, ``RESAMPLES`` times, from a generator seeded by the
quantity's name, so the same tables always give the same intervals. Point estimates are the
interquartile mean (IQM, the mean of the middle half) where a group has at least ``MIN_IQM_RUNS``
runs, the mean below that (trimming a quarter of fewer than four runs removes nothing).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.campaign import Campaign
from bench.report.tables import MISSING, NORMALISED_FLOOR, Table, entries, format_metric, metric_note
from bench.tasks import get_task

RESAMPLES = 2000
CONFIDENCE = 0.95
MIN_IQM_RUNS = 4
MIN_CORRELATION_POINTS = 4
# Below this many runs a percentile bootstrap has too few distinct resamples to be a confidence statement
# (two runs give three): a comparison gets a verdict only when each side has at least this many runs, or
# one run (a fixed activation's single evaluation seed, taken as a point) against at least this many.
MIN_VERDICT_RUNS = 3
PROFILE_THRESHOLDS = np.linspace(NORMALISED_FLOOR, 1.25, 91)

Strata = list[np.ndarray]  # one array of runs per task; statistics get arrays of shape (resamples, runs)


def comparable(first_runs: int, second_runs: int) -> bool:
    """Whether two groups of runs have enough runs for their intervals to decide a comparison."""
    enough = [runs >= MIN_VERDICT_RUNS for runs in (first_runs, second_runs)]
    points = [runs == 1 for runs in (first_runs, second_runs)]
    return (enough[0] or points[0]) and (enough[1] or points[1]) and any(enough)


def estimator(runs: int) -> str:
    return "IQM" if runs >= MIN_IQM_RUNS else "mean"


def iqm(values: np.ndarray) -> np.ndarray:
    """The interquartile mean along the last axis (the mean below ``MIN_IQM_RUNS`` values)."""
    return stats.trim_mean(values, 0.25 if values.shape[-1] >= MIN_IQM_RUNS else 0.0, axis=-1)


def _generator(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def resample(strata: Strata, rng: np.random.Generator) -> Strata:
    """Each stratum resampled with replacement within itself: arrays of shape (RESAMPLES, its runs)."""
    return [values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))] for values in strata]


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def bootstrap(statistic: Callable[[Strata], np.ndarray], strata: Strata, key: str) -> Interval:
    """``statistic`` of the strata and its stratified-bootstrap percentile interval."""
    point = float(statistic([values[None, :] for values in strata])[0])
    samples = statistic(resample(strata, _generator(key)))
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.nanpercentile(samples, [tail, 100 - tail]) if np.isfinite(samples).any() else (math.nan,) * 2
    return Interval(point, float(low), float(high))


def pooled_iqm(strata: Strata) -> np.ndarray:
    return iqm(np.concatenate(strata, axis=-1))


def profile(strata: Strata, thresholds: np.ndarray = PROFILE_THRESHOLDS) -> np.ndarray:
    """Per resample and threshold, the share of runs scoring above it, each task weighted equally."""
    shares = [(values[..., None] > thresholds).mean(axis=-2) for values in strata]
    return np.mean(shares, axis=0)


def profile_band(strata: Strata, key: str) -> pd.DataFrame:
    """The performance profile and its pointwise interval on ``PROFILE_THRESHOLDS``."""
    point = profile([values[None, :] for values in strata])[0]
    samples = profile(resample(strata, _generator(key)))
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return pd.DataFrame({"threshold": PROFILE_THRESHOLDS, "share": point, "low": low, "high": high})


def improvement_probability(first: Strata, second: Strata, key: str) -> Interval:
    """P(a run of ``first`` scores above a run of ``second`` on the same task; ties count half),
    averaged over tasks; both sides resampled independently within each task."""
    def probability(xs: Strata, ys: Strata) -> np.ndarray:
        per_task = [((x[:, :, None] > y[:, None, :]) + 0.5 * (x[:, :, None] == y[:, None, :])).mean(axis=(1, 2))
                    for x, y in zip(xs, ys, strict=True)]
        return np.mean(per_task, axis=0)

    point = float(probability([x[None, :] for x in first], [y[None, :] for y in second])[0])
    rng = _generator(key)
    samples = probability(resample(first, rng), resample(second, rng))
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(point, float(low), float(high))


def interval_text(interval: Interval, format_value: Callable[[float], str], runs: int) -> str:
    if not math.isfinite(interval.estimate):
        return MISSING
    if runs < 2:
        return f"{format_value(interval.estimate)} (1 run)"
    return f"{format_value(interval.estimate)} [{format_value(interval.low)}, {format_value(interval.high)}]"


def _oriented(scores: pd.DataFrame) -> pd.DataFrame:
    """Finished search-task scores, negated for losses so that higher is better everywhere."""
    own = scores[(scores["search_task"] == scores["task"])].dropna(subset=["value"]).copy()
    # astype: mapping no scores at all would keep the task column's string dtype, which cannot multiply
    sign = own["task"].map(lambda task: 1.0 if get_task(task).metric.direction == "max" else -1.0).astype(float)
    return own.assign(value=own["value"].astype(float) * sign)


# ----------------------------------------------------------------------------------------------
# Per task: each method's estimate with its interval
# ----------------------------------------------------------------------------------------------
def task_estimates(scores: pd.DataFrame, campaign: Campaign) -> Table:
    own = scores[scores["search_task"] == scores["task"]].dropna(subset=["value"])
    rows = []
    for entry in entries(campaign):
        for task in campaign.tasks:
            values = own[(own["entry"] == entry.name) & (own["task"] == task)]["value"].to_numpy(dtype=float)
            interval = bootstrap(pooled_iqm, [values], f"estimate/{entry.name}/{task}") if len(values) else \
                Interval(math.nan, math.nan, math.nan)
            rows.append({"entry": entry.name, "search_task": task, "estimator": estimator(len(values)),
                         "runs": len(values), "estimate": interval.estimate, "low": interval.low,
                         "high": interval.high})
    data = pd.DataFrame(rows)
    shown = []
    for entry in entries(campaign):
        part = data[data["entry"] == entry.name].set_index("search_task")
        row = {"Method": entry.name,
               "Estimator (runs)": ", ".join(sorted({f"{e} ({n})" for e, n in zip(part["estimator"], part["runs"],
                                                                                   strict=True) if n}))}
        for task in campaign.tasks:
            metric = get_task(task).metric
            cell = part.loc[task]
            row[task] = interval_text(Interval(cell["estimate"], cell["low"], cell["high"]),
                                      lambda v, m=metric: format_metric(v, m), int(cell["runs"]))
        shown.append(row)
    notes = (
        metric_note(list(campaign.tasks)) + f" Per search task, the found activation retrained on it: the "
        f"interquartile mean (IQM) over runs where a method has at least {MIN_IQM_RUNS}, the mean where it has "
        f"fewer, and in brackets the {CONFIDENCE * 100:.0f} % stratified-bootstrap interval ({RESAMPLES} resamples). "
        "A run of a search method is one search seed (its find retrained, averaged over evaluation seeds); "
        "a run of a fixed activation is one evaluation seed.",
    )
    title = f"Per task: IQM (or mean) with {CONFIDENCE * 100:.0f} % bootstrap intervals"
    return Table("interval_estimates", title, data, pd.DataFrame(shown), None, notes)


# ----------------------------------------------------------------------------------------------
# Over tasks: normalised scores, their aggregate, profiles, probability of improvement
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Normalised:
    runs: dict[str, dict[str, np.ndarray]]  # entry -> task -> normalised runs
    tasks: list[str]  # the tasks with a scale (ReLU and a better activation)
    skipped: dict[str, str]  # task -> why it has no scale

    def strata(self, entry: str) -> Strata | None:
        """The entry's runs per task, or None where it misses a task (aggregates need every task)."""
        per_task = self.runs.get(entry, {})
        if not self.tasks or any(len(per_task.get(task, ())) == 0 for task in self.tasks):
            return None
        return [per_task[task] for task in self.tasks]


def normalise(scores: pd.DataFrame, campaign: Campaign) -> Normalised:
    """Per search task, each run as (score - ReLU) / (best - ReLU) with the means of ReLU and of the best
    activation on that task (as the normalised transfer table does), floored at ``NORMALISED_FLOOR``."""
    own = _oriented(scores)
    runs: dict[str, dict[str, np.ndarray]] = {}
    tasks, skipped = [], {}
    for task in campaign.tasks:
        part = own[own["task"] == task]
        means = part.groupby("entry")["value"].mean()
        if "relu" not in means.index:
            skipped[task] = "no ReLU result"
            continue
        relu, best = float(means["relu"]), float(means.max())
        if not best > relu:
            skipped[task] = "ReLU is the best activation, so there is no scale from ReLU to the best"
            continue
        tasks.append(task)
        for entry, values in part.groupby("entry")["value"]:
            normalised = ((values.to_numpy(dtype=float) - relu) / (best - relu)).clip(min=NORMALISED_FLOOR)
            runs.setdefault(str(entry), {})[task] = normalised
    return Normalised(runs, tasks, skipped)


def _scope_note(normalised: Normalised) -> str:
    skipped = "; ".join(f"{task}: {why}" for task, why in normalised.skipped.items())
    return (f"Scores normalised per search task (ReLU's mean 0, the best activation's mean 1, floored at "
            f"{NORMALISED_FLOOR:g}), over the tasks {', '.join(normalised.tasks) or 'none'}"
            + (f" (left out: {skipped})." if skipped else "."))


def aggregate(normalised: Normalised, campaign: Campaign) -> Table:
    rows = []
    for entry in entries(campaign):
        strata = normalised.strata(entry.name)
        runs = 0 if strata is None else sum(len(s) for s in strata)
        if strata is None:
            interval, mean = Interval(math.nan, math.nan, math.nan), math.nan
        else:
            interval = bootstrap(pooled_iqm, strata, f"aggregate/{entry.name}")
            mean = float(np.mean([s.mean() for s in strata]))
        rows.append({"entry": entry.name, "budget_multiple": entry.budget_multiple, "tasks": len(normalised.tasks),
                     "runs": runs, "estimator": estimator(runs), "estimate": interval.estimate, "low": interval.low,
                     "high": interval.high, "mean_over_tasks": mean})
    data = pd.DataFrame(rows)
    display = pd.DataFrame({
        "Method": data["entry"],
        "Budget": [_budget_text(m) for m in data["budget_multiple"]],
        "Runs": data["runs"].astype(str),
        "Normalised score [95 % CI]": [
            interval_text(Interval(r.estimate, r.low, r.high), _normalised_value, r.runs)
            + ("" if r.runs < 2 else f" ({r.estimator})") for r in data.itertuples()],
        "Mean over tasks": [MISSING if not math.isfinite(v) else _normalised_value(v) for v in data["mean_over_tasks"]],
    })
    bold = pd.DataFrame(False, index=display.index, columns=display.columns)
    bold["Normalised score [95 % CI]"] = data["estimate"] == data["estimate"].max()
    notes = (
        _scope_note(normalised) + " Runs of all tasks pooled into one IQM (the mean below "
        f"{MIN_IQM_RUNS} runs); the interval resamples runs within each task. 'Mean over tasks' averages each "
        "task's mean. A method missing a task is left blank.",
    )
    return Table("normalised_aggregate", "Over tasks: normalised score with bootstrap intervals", data, display,
                 bold, notes)


def _normalised_value(value: float) -> str:
    return f"{value + 0.0:.2f}"


def _budget_text(multiple: float | None) -> str:
    return "own cost" if multiple is None or pd.isna(multiple) else f"{multiple:g}x GRAFS"


def _comparison_pairs(campaign: Campaign, reference: str | None) -> list[tuple[str, str]]:
    names = [e.name for e in entries(campaign)]
    pairs = [(reference, other) for other in names if reference and other != reference]
    if "relu" in names:
        pairs += [(name, "relu") for name in names if name not in ("relu", reference)]
    return pairs


def improvement(scores: pd.DataFrame, campaign: Campaign, reference: str | None) -> Table:
    """P(first > second) for GRAFS against each rival and for each method against ReLU, on oriented
    search-task scores (no normalisation needed: the probability compares runs within a task)."""
    own = _oriented(scores)
    grouped = {key: part["value"].to_numpy(dtype=float) for key, part in own.groupby(["entry", "task"])}
    rows = []
    for first, second in _comparison_pairs(campaign, reference):
        tasks = [t for t in campaign.tasks if (first, t) in grouped and (second, t) in grouped]
        if tasks:
            interval = improvement_probability([grouped[(first, t)] for t in tasks],
                                               [grouped[(second, t)] for t in tasks], f"improvement/{first}/{second}")
        else:
            interval = Interval(math.nan, math.nan, math.nan)
        decidable = all(comparable(len(grouped[(first, t)]), len(grouped[(second, t)])) for t in tasks)
        rows.append({"first": first, "second": second, "tasks": len(tasks), "probability": interval.estimate,
                     "low": interval.low, "high": interval.high,
                     "reading": _reading(interval) if decidable or not tasks else "too few runs"})
    data = pd.DataFrame(rows, columns=["first", "second", "tasks", "probability", "low", "high", "reading"])
    display = pd.DataFrame({
        "Comparison": [f"{a} over {b}" for a, b in zip(data["first"], data["second"], strict=True)],
        "Tasks": data["tasks"].astype(str),
        "P(improvement) [95 % CI]": [
            _normalised_value(r.probability) if r.reading == "too few runs" else
            interval_text(Interval(r.probability, r.low, r.high), _normalised_value, 2) for r in data.itertuples()],
        "Reading": data["reading"],
    })
    notes = (
        "P(improvement): the probability that a run of the first method scores better on the search task than "
        "a run of the second (ties count half), averaged over search tasks; 0.5 is no difference. Bootstrap "
        "intervals resample each method's runs within each task. Reading: 'better' or 'worse' when the interval "
        "excludes 0.5, else 'no clear difference'; 'too few runs' (point value only) when a side has fewer than "
        f"{MIN_VERDICT_RUNS} runs on a task, unless it is a single run (a fixed activation's one evaluation seed, "
        f"taken as a point) against at least {MIN_VERDICT_RUNS}.",
    )
    return Table("improvement_probability", "Probability of improvement with bootstrap intervals", data, display,
                 None, notes)


def _reading(interval: Interval) -> str:
    if not math.isfinite(interval.estimate):
        return MISSING
    if interval.low > 0.5:
        return "better"
    if interval.high < 0.5:
        return "worse"
    return "no clear difference"


def rank_by_budget(blocks: pd.DataFrame, campaign: Campaign) -> Table:
    """Average rank per budget multiple, among GRAFS, each black-box method at that multiple and the fixed
    activations, over blocks (search task, search seed) on the search task."""
    found = [e for e in entries(campaign) if not e.fixed and e.searched_as is None]
    own = blocks[blocks.index.get_level_values("search_task") == blocks.index.get_level_values("task")]
    labels = list(dict.fromkeys([e.label for e in found] + list(campaign.fixed)))
    multiples = sorted(campaign.budget_multiples)
    data = pd.DataFrame(index=labels, dtype=float)
    counts = {}
    for multiple in multiples:
        chosen = {e.name: e.label for e in found if e.budget_multiple in (None, multiple)}
        chosen.update({name: name for name in campaign.fixed})
        complete = own[[c for c in own.columns if c in chosen]].dropna(axis=0, how="any")
        counts[multiple] = len(complete)
        if complete.shape[1] < 2 or complete.empty:
            data[f"{multiple:g}x"] = math.nan
            continue
        ranks = pd.DataFrame(stats.rankdata(-complete.to_numpy(), axis=1), columns=complete.columns).mean(axis=0)
        data[f"{multiple:g}x"] = pd.Series({chosen[c]: r for c, r in ranks.items()})
    display = data.map(lambda v: MISSING if not math.isfinite(v) else f"{v:.2f}").reset_index(names="Method")
    bold = data.eq(data.min(axis=0), axis=1).reset_index(drop=True).assign(Method=False)[display.columns]
    notes = (
        "At each budget multiple, every activation is ranked (1 is best, ties share the average rank) within each "
        "block that has a score for all of them; a block is one search task and search seed, scored on the search "
        "task (fixed activations contribute their mean over evaluation seeds to every block). GRAFS, at its own "
        "cost, is in every column. Blocks per column: "
        + ", ".join(f"{m:g}x: {counts[m]}" for m in multiples) + ".",
    )
    return Table("rank_by_budget", "Average rank at each budget multiple", data.reset_index(names="method"), display,
                 bold, notes)


# ----------------------------------------------------------------------------------------------
# Proxy fidelity: do black-box proxy scores rank candidates as full training does?
# ----------------------------------------------------------------------------------------------
def proxy_points(units: pd.DataFrame, campaign: Campaign) -> pd.DataFrame:
    """Per retrained black-box candidate at the largest budget on its search task: its proxy score and its
    test metric (mean over evaluation seeds). A method's retraining variants (PANGAEA's per-layer betas)
    train another model than the one its proxy scored, so only the methods' own labels count."""
    largest = max(campaign.budget_multiples)
    scored = {method.label for method in campaign.methods if not method.is_grafs}
    retrains = units[(units["kind"] == "retrain") & units["fixed"].isna() & (units["task"] == units["search_task"])
                     & (units["budget_multiple"] == largest) & (units["state"] == "done")
                     & units["label"].isin(scored)].copy()
    retrains["proxy"] = pd.to_numeric(retrains["proxy_score"], errors="coerce")
    retrains["test"] = pd.to_numeric(retrains["test_metric"], errors="coerce")
    retrains = retrains[np.isfinite(retrains["proxy"]) & np.isfinite(retrains["test"])]
    columns_ = ["search_task", "label", "search_seed", "candidate_rank", "proxy", "test"]
    if retrains.empty:
        return pd.DataFrame(columns=columns_)
    points = retrains.groupby(["search_task", "label", "search_seed", "candidate_rank"], as_index=False, sort=True)
    return points.agg(proxy=("proxy", "first"), test=("test", "mean"))[columns_]


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(axis=-1, keepdims=True), ry - ry.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=-1) / np.sqrt((rx**2).sum(axis=-1) * (ry**2).sum(axis=-1))


def _kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b along the last axis (as scipy.stats.kendalltau computes it, vectorised)."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum(axis=(-2, -1)) / np.sqrt(np.abs(sx).sum(axis=(-2, -1)) * np.abs(sy).sum(axis=(-2, -1)))


def _correlation(function, x: np.ndarray, y: np.ndarray, key: str) -> Interval:
    def statistic(strata: Strata) -> np.ndarray:
        pairs = strata[0]
        return function(pairs.real, pairs.imag)

    # x and y travel together as one complex number so that one resample index moves both.
    return bootstrap(statistic, [x + 1j * y], key)


def proxy_fidelity(points: pd.DataFrame, campaign: Campaign) -> Table:
    rows = []
    for task in campaign.tasks:
        part = points[points["search_task"] == task]
        groups = [(label, p) for label, p in part.groupby("label", sort=False)]
        if len(groups) > 1:
            groups.insert(0, ("all black-box methods", part))
        for label, group in groups:
            x, y = group["proxy"].to_numpy(dtype=float), group["test"].to_numpy(dtype=float)
            row = {"search_task": task, "methods": label, "points": len(group)}
            for name, function, scipy_function in (("spearman", _spearman, stats.spearmanr),
                                                    ("kendall", _kendall, stats.kendalltau)):
                if len(group) >= MIN_CORRELATION_POINTS and np.ptp(x) > 0 and np.ptp(y) > 0:
                    interval = _correlation(function, x, y, f"fidelity/{task}/{label}/{name}")
                    point = float(scipy_function(x, y).statistic)
                    interval = Interval(point, interval.low, interval.high)
                else:
                    interval = Interval(math.nan, math.nan, math.nan)
                row.update({name: interval.estimate, f"{name}_low": interval.low, f"{name}_high": interval.high})
            rows.append(row)
    data = pd.DataFrame(rows, columns=["search_task", "methods", "points", "spearman", "spearman_low",
                                       "spearman_high", "kendall", "kendall_low", "kendall_high"])
    display = pd.DataFrame({
        "Search task": data["search_task"], "Methods": data["methods"], "Points": data["points"].astype(str),
        "Spearman [95 % CI]": [interval_text(Interval(r.spearman, r.spearman_low, r.spearman_high),
                                             _normalised_value, r.points) for r in data.itertuples()],
        "Kendall [95 % CI]": [interval_text(Interval(r.kendall, r.kendall_low, r.kendall_high),
                                            _normalised_value, r.points) for r in data.itertuples()],
    })
    largest = max(campaign.budget_multiples)
    notes = (
        f"Rank correlation between a candidate's proxy score (what the black-box search measured: a short "
        f"training scored on the last 25 % of the training split) and its test metric after retraining on the "
        f"search task, over the candidates retrained from the searches at the largest budget ({largest:g}x): "
        f"each search's top {campaign.top_k} by proxy score (the campaign's [evaluation] top_k). Near 1: the "
        "proxy ranks candidates as full training does. Intervals resample candidates. "
        f"No value (–) below {MIN_CORRELATION_POINTS} points or when either score is constant.",
    )
    return Table("proxy_fidelity", "Proxy fidelity: rank correlation of proxy scores and retrained test scores",
                 data, display, None, notes)
