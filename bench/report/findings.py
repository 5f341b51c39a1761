"""The report's opening: what the tables say, in plain sentences built only from those tables.

A comparison on one task reads as "beats" or "loses to" only when the two bootstrap intervals do not
overlap, and as "ties with" otherwise; significance comes from the Holm-corrected Wilcoxon tests.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.campaign import Campaign
from bench.report.intervals import MIN_VERDICT_RUNS, Interval, comparable
from bench.report.stats import ALPHA, Friedman
from bench.report.tables import Entry, entries, format_metric
from bench.tasks import get_task


def _interval(row: pd.Series) -> Interval:
    return Interval(float(row["estimate"]), float(row["low"]), float(row["high"]))


def verdict(reference: Interval, rival: Interval, direction: str) -> str:
    """'beats', 'loses to' or 'ties with': beats only when the intervals do not overlap."""
    better_low, better_high = (reference.low, reference.high) if direction == "max" else (-reference.high,
                                                                                         -reference.low)
    rival_low, rival_high = (rival.low, rival.high) if direction == "max" else (-rival.high, -rival.low)
    if better_low > rival_high:
        return "beats"
    if better_high < rival_low:
        return "loses to"
    return "ties with"


def _text(interval: Interval, task: str, runs: int) -> str:
    metric = get_task(task).metric
    if runs < 2:
        return format_metric(interval.estimate, metric)
    return (f"{format_metric(interval.estimate, metric)} [{format_metric(interval.low, metric)}, "
            f"{format_metric(interval.high, metric)}]")


def _metric_phrase(task: str) -> str:
    metric = get_task(task).metric
    return "test accuracy in %, higher is better" if metric.name == "accuracy" else "test loss, lower is better"


def _rival_name(entry: Entry) -> str:
    return entry.name if entry.budget_multiple is None else f"{entry.label} at {entry.budget_multiple:g}x"


def task_sentences(estimates: pd.DataFrame, campaign: Campaign, reference: str) -> list[str]:
    """Per search task: GRAFS against each rival at each budget, and which activation is best."""
    lines = []
    table = estimates.set_index(["entry", "search_task"])
    rivals = [e for e in entries(campaign) if e.name != reference and e.searched_as is None]
    for task in campaign.tasks:
        direction = get_task(task).metric.direction
        if (reference, task) not in table.index or table.loc[(reference, task), "runs"] == 0:
            lines.append(f"On {task}, {reference} has no finished result, so nothing is compared.")
            continue
        own = table.loc[(reference, task)]
        groups: dict[str, list[str]] = {"beats": [], "ties with": [], "loses to": [], "is not judged against": []}
        for rival in rivals:
            row = table.loc[(rival.name, task)]
            if row["runs"] == 0:
                continue
            word = verdict(_interval(own), _interval(row), direction) if comparable(int(own["runs"]), int(
                row["runs"])) else "is not judged against"
            groups[word].append(f"{_rival_name(rival)} ({_text(_interval(row), task, int(row['runs']))})")
        parts = [f"{word} {', '.join(names)}" for word, names in groups.items() if names]
        score = _text(_interval(own), task, int(own["runs"]))
        basis = (f"{own['estimator']} of {int(own['runs'])} runs, 95 % bootstrap interval" if own["runs"] > 1
                 else "one run, a point estimate")
        sentence = f"On {task} ({_metric_phrase(task)}), {reference} scores {score} ({basis})"
        lines.append(sentence + (": it " + "; it ".join(parts) + "." if parts else "."))
        if groups["is not judged against"]:
            lines.append(f"On {task}, a side with fewer than {MIN_VERDICT_RUNS} runs (other than a fixed "
                         "activation's single run) gives no verdict: its bootstrap interval is not a confidence "
                         "statement; the values above are point estimates.")
        scored = estimates[(estimates["search_task"] == task) & (estimates["runs"] > 0)]
        best = scored.loc[scored["estimate"].idxmax() if direction == "max" else scored["estimate"].idxmin()]
        if "relu" in set(scored["entry"]):
            relu = scored[scored["entry"] == "relu"].iloc[0]
            if best["entry"] == "relu":
                relu_text = _text(_interval(relu), task, int(relu["runs"]))
                lines.append(f"On {task}, ReLU is the best activation ({relu_text}).")
            else:
                lines.append(f"On {task}, ReLU is not the best: {best['entry']} scores highest "
                             f"({_text(_interval(best), task, int(best['runs']))} against ReLU's "
                             f"{_text(_interval(relu), task, int(relu['runs']))}).")
    return lines


def findings(estimates: pd.DataFrame, tests: pd.DataFrame, friedman: Friedman | None, aggregate: pd.DataFrame,
             improvement: pd.DataFrame, fidelity: pd.DataFrame, relu_best: list[str], campaign: Campaign,
             reference: str | None) -> list[str]:
    """The Findings section's sentences, from the interval, test, aggregate, improvement and fidelity tables."""
    if not reference:
        return ["The campaign has no default GRAFS method, so no comparison against GRAFS is made; the tables "
                "below compare the activations it has."]
    lines = ["A comparison on one task reads 'beats' or 'loses to' only where the two 95 % bootstrap intervals "
             "do not overlap, otherwise 'ties with' (runs: search seeds for searched methods, evaluation seeds "
             "for fixed activations)."]
    lines += task_sentences(estimates, campaign, reference)
    if relu_best:
        lines.append(f"ReLU is the best activation on the evaluated task(s) {', '.join(relu_best)} (transfer table).")
    scored = aggregate[aggregate["runs"] > 0].sort_values("estimate", ascending=False, kind="stable")
    if not scored.empty:
        def text(row) -> str:
            return f"{row['entry']} {row['estimate']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"

        own = scored[scored["entry"] == reference]
        leaders = ", ".join(text(row) for _, row in scored.head(3).iterrows())
        mine = f"{text(own.iloc[0])}" if len(own) else f"{reference} has no normalised score"
        lines.append(f"Normalised over the search tasks (ReLU 0, best 1; {scored.iloc[0]['estimator']} with 95 % "
                     f"bootstrap interval): {mine}; the three highest are {leaders}.")
    lines += _improvement_sentences(improvement, reference)
    lines += _significance_sentences(tests, friedman, reference)
    lines += _fidelity_sentences(fidelity)
    return lines


def _improvement_sentences(improvement: pd.DataFrame, reference: str) -> list[str]:
    lines = []
    against = improvement[improvement["first"] == reference]
    for reading, word in (("better", "more likely than not to beat"), ("worse", "more likely than not to lose to")):
        names = [f"{r.second} ({r.probability:.2f} [{r.low:.2f}, {r.high:.2f}])"
                 for r in against.itertuples() if r.reading == reading]
        if names:
            lines.append(f"Probability of improvement: a run of {reference} is {word} a run of {', '.join(names)}.")
    unclear = against[against["reading"] == "no clear difference"]["second"].tolist()
    if unclear:
        lines.append(f"Against {', '.join(unclear)} the probability of improvement of {reference} has an interval "
                     "that includes 0.5: no clear difference.")
    others = improvement[(improvement["second"] == "relu") & (improvement["first"] != reference)]
    over_relu = others[others["reading"] == "better"]
    under_relu = others[others["reading"] == "worse"]
    if len(over_relu) or len(under_relu):
        parts = []
        if len(over_relu):
            parts.append(f"beat ReLU more likely than not: {', '.join(over_relu['first'])}")
        if len(under_relu):
            parts.append(f"lose to ReLU more likely than not: {', '.join(under_relu['first'])}")
        lines.append("Other methods that " + "; that ".join(parts) + ".")
    return lines


def _significance_sentences(tests: pd.DataFrame, friedman: Friedman | None, reference: str) -> list[str]:
    significant = tests[tests["significant"]]
    if tests.empty or not tests["p"].notna().any():
        return ["No pairwise Wilcoxon test was possible (Statistics says why)."]
    lines = []
    if significant.empty:
        lines.append(f"No difference between {reference} and another activation is significant (Wilcoxon signed-rank "
                     f"over blocks, Holm-adjusted p < {ALPHA}).")
    else:
        better = [r.other for r in significant.itertuples() if r.wins > r.losses]
        worse = [r.other for r in significant.itertuples() if r.wins <= r.losses]
        parts = ([f"better than {', '.join(better)}"] if better else []) + (
            [f"worse than {', '.join(worse)}"] if worse else [])
        lines.append(f"Significant (Wilcoxon signed-rank over blocks, Holm-adjusted p < {ALPHA}): {reference} is "
                     + " and ".join(parts) + "; every other difference is not significant.")
    if friedman is not None:
        lines.append(f"The Friedman test over {friedman.blocks} blocks "
                     + ("finds" if friedman.significant else "does not find")
                     + f" a difference among the {friedman.entries} activations (p = {friedman.p:.3g}).")
    else:
        lines.append("The campaign has too few activations or blocks for a Friedman test (Statistics says why).")
    return lines


def _fidelity_sentences(fidelity: pd.DataFrame) -> list[str]:
    pooled = fidelity.groupby("search_task", sort=False).head(1)  # all black-box methods together, listed first
    lines = []
    for row in pooled.itertuples():
        if math.isfinite(row.spearman):
            lines.append(f"Proxy fidelity on {row.search_task}: over {row.points} retrained candidates "
                         f"({row.methods}), "
                         f"Spearman {row.spearman:.2f} [{row.spearman_low:.2f}, {row.spearman_high:.2f}], Kendall "
                         f"{row.kendall:.2f} [{row.kendall_low:.2f}, {row.kendall_high:.2f}] between proxy and "
                         "retrained test scores.")
        else:
            lines.append(f"Proxy fidelity on {row.search_task}: too few retrained candidates ({row.points}) for a "
                         "rank correlation.")
    return lines
