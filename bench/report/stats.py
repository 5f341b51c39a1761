"""Paired statistics over blocks: Wilcoxon signed-rank with Holm correction, Friedman, Nemenyi.

A block is one (search task, evaluated task, search seed): every activation has one score in it.
A found activation contributes the retrained metric of the activation that seed found (averaged
over evaluation seeds), a fixed activation its mean over evaluation seeds. Losses are negated, so
a higher score is better everywhere; the tests use ranks only, so tasks of different scales mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.campaign import Campaign
from bench.report.tables import MISSING, Table, columns, entries
from bench.tasks import get_task

ALPHA = 0.05
# Demsar (2006) and scipy's friedmanchisquare: the chi-squared approximation of Friedman's statistic and
# Nemenyi's critical difference are reliable from about ten blocks.
MIN_BLOCKS = 10
MIN_ENTRIES = 3
BLOCK = ("a block is one search task, evaluated task and search seed: the activations each of that seed's "
         "searches found, retrained on the evaluated task, and every fixed activation's mean there")


def blocks(scores: pd.DataFrame, campaign: Campaign) -> pd.DataFrame:
    """Rows (search task, task, seed), columns the entries in report order, oriented scores (higher is better)."""
    order = [e.name for e in entries(campaign)]
    fixed = {e.name for e in entries(campaign) if e.fixed}
    frame = scores.dropna(subset=["value"]).copy()
    if frame.empty:
        return pd.DataFrame(columns=order, index=pd.MultiIndex.from_tuples([], names=["search_task", "task", "seed"]))
    sign = frame["task"].map(lambda task: 1.0 if get_task(task).metric.direction == "max" else -1.0)
    frame["value"] = frame["value"] * sign
    found = frame[~frame["entry"].isin(fixed)].rename(columns={"replicate": "seed"})
    keys = ["entry", "search_task", "task"]
    constant = frame[frame["entry"].isin(fixed)].groupby(keys, as_index=False)["value"].mean()
    spread = constant.merge(pd.DataFrame({"seed": list(campaign.seeds)}), how="cross")
    long = pd.concat([found[["entry", "search_task", "task", "seed", "value"]], spread], ignore_index=True)
    wide = long.pivot_table(index=["search_task", "task", "seed"], columns="entry", values="value", aggfunc="first")
    rows = [(task, target, seed) for task, target in columns(campaign) for seed in campaign.seeds]
    index = pd.MultiIndex.from_tuples(rows, names=["search_task", "task", "seed"])
    return wide.reindex(index=index, columns=order)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment; NaN p-values stay NaN and do not count as tests."""
    finite = [(p, i) for i, p in enumerate(pvalues) if math.isfinite(p)]
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[i] = running
    return adjusted


def wilcoxon_against(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank tests of ``reference`` against every other entry, Holm-adjusted."""
    rows = []
    for other in table.columns:
        if other == reference or reference not in table.columns:
            continue
        pair = table[[reference, other]].dropna()
        difference = (pair[reference] - pair[other]).to_numpy()
        wins, losses = int((difference > 0).sum()), int((difference < 0).sum())
        statistic = p = math.nan
        if wins + losses > 0:
            result = stats.wilcoxon(difference, zero_method="wilcox", alternative="two-sided")
            statistic, p = float(result.statistic), float(result.pvalue)
        rows.append({"reference": reference, "other": other, "blocks": len(pair), "wins": wins,
                     "ties": len(pair) - wins - losses, "losses": losses, "statistic": statistic, "p": p})
    frame = pd.DataFrame(rows, columns=["reference", "other", "blocks", "wins", "ties", "losses", "statistic", "p"])
    frame["p_holm"] = holm(frame["p"].tolist())
    frame["significant"] = frame["p_holm"] < ALPHA
    return frame


@dataclass(frozen=True)
class Friedman:
    entries: int
    blocks: int
    statistic: float
    p: float
    average_ranks: pd.Series  # 1 is best
    critical_difference: float  # Nemenyi, at ALPHA
    complete: pd.DataFrame  # the blocks in which every entry has a score (rows) x entries, higher is better

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p) and self.p < ALPHA


def friedman(table: pd.DataFrame) -> Friedman | None:
    """The Friedman test over the blocks in which every entry has a score; None below ``MIN_ENTRIES``
    entries or ``MIN_BLOCKS`` such blocks."""
    complete = table.dropna(axis=0, how="any")
    k, n = complete.shape[1], complete.shape[0]
    if k < MIN_ENTRIES or n < MIN_BLOCKS:
        return None
    ranks = pd.DataFrame(stats.rankdata(-complete.to_numpy(), axis=1), columns=complete.columns)
    statistic, p = stats.friedmanchisquare(*(complete[c].to_numpy() for c in complete.columns))
    q = stats.studentized_range.ppf(1 - ALPHA, k, np.inf) / math.sqrt(2)
    critical = float(q * math.sqrt(k * (k + 1) / (6 * n)))
    return Friedman(k, n, float(statistic), float(p), ranks.mean(axis=0), critical, complete.reset_index(drop=True))


def why_no_friedman(table: pd.DataFrame) -> str:
    complete = len(table.dropna(axis=0, how="any"))
    return (f"No Friedman test and no critical-difference diagram: they need at least {MIN_ENTRIES} activations "
            f"and {MIN_BLOCKS} blocks in which every activation has a score ({BLOCK}); this campaign has "
            f"{table.shape[1]} activations and {complete} such blocks.")


def _format_p(p: float) -> str:
    if not math.isfinite(p):
        return MISSING
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_phrase(p: float) -> str:
    return "p < 0.001" if math.isfinite(p) and p < 0.001 else f"p = {_format_p(p)}"


def wilcoxon_table(tests: pd.DataFrame) -> Table:
    display = pd.DataFrame({
        "Comparison": [f"{r} vs {o}" for r, o in zip(tests["reference"], tests["other"], strict=True)],
        "Blocks": tests["blocks"].astype(str),
        "Wins / ties / losses": [f"{w} / {t} / {lo}" for w, t, lo in
                                 zip(tests["wins"], tests["ties"], tests["losses"], strict=True)],
        "W": [MISSING if not math.isfinite(v) else f"{v:.1f}" for v in tests["statistic"]],
        "p": [_format_p(p) for p in tests["p"]],
        "p (Holm)": [_format_p(p) for p in tests["p_holm"]],
        "Significant": [MISSING if not math.isfinite(p) else "yes" if s else "no"
                        for p, s in zip(tests["p"], tests["significant"], strict=True)],
    })
    bold = pd.DataFrame(False, index=display.index, columns=display.columns)
    bold["Significant"] = tests["significant"].to_numpy(dtype=bool)
    return Table(
        "wilcoxon", "Wilcoxon signed-rank tests against GRAFS, Holm-corrected", tests, display, bold,
        (f"Two-sided, over blocks (search task, evaluated task, search seed) where both have a score; wins count "
         f"the blocks where the first activation is better. Significant: Holm-adjusted p < {ALPHA}.",),
    )


def friedman_table(result: Friedman) -> Table:
    ranks = result.average_ranks.sort_values(kind="stable")
    data = pd.DataFrame({"activation": ranks.index, "average_rank": ranks.to_numpy()})
    display = pd.DataFrame({"Activation": ranks.index, "Average rank": [f"{r:.2f}" for r in ranks]})
    summary = (
        f"Friedman test over {result.blocks} complete blocks and {result.entries} activations: "
        f"chi² = {result.statistic:.2f}, {_p_phrase(result.p)}."
    )
    return Table("friedman", "Friedman test: average ranks (1 is best)", data, display, None, (summary,))


def summary(tests: pd.DataFrame, result: Friedman | None, reference: str | None, table: pd.DataFrame) -> list[str]:
    """The findings in plain words, saying so when nothing is significant or nothing could be tested."""
    lines = [f"The paired tests below run over blocks: {BLOCK}. Scores are oriented so that higher is better "
             "(losses negated)."]
    if result is None:
        lines.append(why_no_friedman(table))
    elif result.significant:
        lines.append(f"The Friedman test finds a difference among the {result.entries} activations "
                     f"({_p_phrase(result.p)}, below {ALPHA}).")
    else:
        lines.append(f"The Friedman test finds no significant difference among the {result.entries} activations "
                     f"({_p_phrase(result.p)} ≥ {ALPHA}): the ranking below may be chance.")
    if not reference:
        lines.append("No pairwise tests: the campaign has no default GRAFS method to compare against.")
        return lines
    if not np.isfinite(tests["p"].to_numpy(dtype=float)).any():
        lines.append(f"No pairwise test was possible: no block has a score for both {reference} and another "
                     "activation with a difference between them.")
        return lines
    significant = tests[tests["significant"]]
    if significant.empty:
        lines.append(f"No difference between {reference} and any other activation is significant at α = {ALPHA} "
                     "after Holm correction.")
    else:
        better = [o for o, w, lo in zip(significant["other"], significant["wins"], significant["losses"], strict=True)
                  if w > lo]
        worse = [o for o in significant["other"] if o not in better]
        parts = []
        if better:
            parts.append(f"{reference} is significantly better than {', '.join(better)}")
        if worse:
            parts.append(f"{'' if better else reference + ' is '}significantly worse than {', '.join(worse)}")
        lines.append("; ".join(parts) + f" (Holm-adjusted p < {ALPHA}); every other difference is not significant.")
    return lines
