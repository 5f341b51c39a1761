"""The report's figures (seaborn on matplotlib), each saved as PNG and PDF with fixed metadata so that
the same tables always give byte-identical files."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.lines
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.campaign import Campaign  # noqa: E402
from bench.plots import activation_grid, activation_values, draw_comparison  # noqa: E402
from bench.report.stats import Friedman, cliques  # noqa: E402
from bench.report.tables import NORMALISED_FLOOR, Entry, entries, normalised_text  # noqa: E402
from bench.tasks import Metric, get_task  # noqa: E402
from grafs.files import atomic_path  # noqa: E402
from grafs.genotype import Genotype  # noqa: E402

METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}
DPI = 120
GRID_POINTS = 80


@dataclass(frozen=True)
class Figure:
    name: str
    caption: str
    png: Path


def save(figure, folder: Path, name: str, caption: str) -> Figure:
    folder.mkdir(parents=True, exist_ok=True)
    for extension, metadata in METADATA.items():
        with atomic_path(folder / f"{name}.{extension}") as temporary:
            figure.savefig(temporary, format=extension, dpi=DPI, metadata=metadata, bbox_inches="tight")
    plt.close(figure)
    return Figure(name, caption, folder / f"{name}.png")


def _scale(metric: Metric) -> float:
    return 100.0 if metric.name == "accuracy" else 1.0


def _axis_label(prefix: str, metric: Metric) -> str:
    if metric.name == "accuracy":
        return f"{prefix} accuracy (%)"
    return f"{prefix} loss (lower is better)"


def _palette(campaign: Campaign) -> dict[str, tuple]:
    labels = [m.label for m in campaign.methods]
    return dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))


def _fixed_lines(axes, units: pd.DataFrame, task: str, column: str, metric: Metric) -> None:
    """Each fixed activation's mean over evaluation seeds on ``task``, as a labelled horizontal line."""
    fixed = units[(units["kind"] == "retrain") & units["fixed"].notna() & (units["task"] == task)
                  & (units["state"] == "done")]
    means = pd.to_numeric(fixed[column], errors="coerce").groupby(fixed["fixed"], sort=True).mean().dropna()
    for name, value in means.items():
        axes.axhline(value * _scale(metric), color="0.45", lw=0.8, ls=":")
        axes.text(1.01, value * _scale(metric), name, transform=axes.get_yaxis_transform(), fontsize=7,
                  va="center", color="0.3")


def _log_x(axis) -> None:
    axis.set_xscale("log")
    axis.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _cost_column(campaign: Campaign) -> tuple[str, str]:
    if campaign.budget_unit == "seconds":
        return "wall_seconds", "search cost (wall seconds, log)"
    return "epoch_equivalents", "search cost (epoch-equivalents, log)"


def _curve_units(units: pd.DataFrame, campaign: Campaign, task: str) -> pd.DataFrame:
    """Search units drawn as anytime curves: each GRAFS variant, each black-box method at its largest budget."""
    searches = units[(units["kind"] == "search") & (units["task"] == task) & (units["state"] == "done")]
    largest = max(campaign.budget_multiples)
    keep = searches["budget_multiple"].isna() | (searches["budget_multiple"] == largest)
    return searches[keep]


def anytime_frame(trace: pd.DataFrame, units: pd.DataFrame, campaign: Campaign, task: str) -> pd.DataFrame:
    """Incumbent score per method and seed on a common log-spaced cost grid, where every seed has a value."""
    cost, _ = _cost_column(campaign)
    chosen = _curve_units(units, campaign, task)
    points = trace[trace["unit_id"].isin(chosen["unit_id"])].copy()
    points["cost"] = pd.to_numeric(points[cost], errors="coerce")
    points["score"] = pd.to_numeric(points["incumbent_score"], errors="coerce")
    points = points[(points["cost"] > 0) & np.isfinite(points["score"])]
    if points.empty:
        return pd.DataFrame(columns=["label", "seed", "cost", "score"])
    grid = np.geomspace(points["cost"].min(), points["cost"].max(), GRID_POINTS)
    rows = []
    for label in [m.label for m in campaign.methods]:
        series = {seed: part.sort_values(["cost", "step"], kind="stable")
                  for seed, part in points[points["label"] == label].groupby("seed", sort=True)}
        if not series:
            continue
        start = max(part["cost"].iloc[0] for part in series.values())
        end = min(part["cost"].iloc[-1] for part in series.values())
        shown = grid[(grid >= start) & (grid <= end)]
        if len(shown) == 0:
            shown = np.array([end])
        for seed, part in series.items():
            at = np.searchsorted(part["cost"].to_numpy(), shown, side="right") - 1
            rows.extend({"label": label, "seed": seed, "cost": x, "score": part["score"].iloc[i]}
                        for x, i in zip(shown, at, strict=True))
    return pd.DataFrame(rows, columns=["label", "seed", "cost", "score"])


def anytime(trace: pd.DataFrame, units: pd.DataFrame, campaign: Campaign, folder: Path) -> Figure:
    cost, cost_label = _cost_column(campaign)
    palette = _palette(campaign)
    with sns.axes_style("whitegrid"):
        figure, axes = plt.subplots(1, len(campaign.tasks), figsize=(5.6 * len(campaign.tasks), 4.0), squeeze=False)
        for axis, task in zip(axes[0], campaign.tasks, strict=True):
            metric = get_task(task).metric
            frame = anytime_frame(trace, units, campaign, task)
            frame["score"] = frame["score"].astype(float) * _scale(metric)
            if not frame.empty:
                sns.lineplot(frame, x="cost", y="score", hue="label", palette=palette, errorbar="se",
                             drawstyle="steps-post", err_kws={"step": "post"}, ax=axis)
                _log_x(axis)
            _fixed_lines(axis, units, task, "val_metric", metric)
            axis.set_title(task)
            axis.set_xlabel(cost_label)
            axis.set_ylabel(_axis_label("incumbent validation", metric))
            if axis.get_legend():
                axis.legend(fontsize=7, title=None)
        figure.tight_layout()
    caption = (
        "Anytime curves: the incumbent's validation score against the cumulative search cost, mean and standard "
        "error over search seeds (black-box methods at their largest budget). Each method scores on its own "
        "protocol (GRAFS: its validation split; black-box: a short proxy training on the last 25 % of the training "
        "split), so curves of different methods are comparable only in shape; the retrained tables compare "
        "them. Dotted: fixed activations' validation score after a full training."
    )
    return save(figure, folder, "anytime", caption)


def cost_versus_metric(units: pd.DataFrame, scores: pd.DataFrame, campaign: Campaign, folder: Path) -> Figure:
    cost, cost_label = _cost_column(campaign)
    column = {"wall_seconds": "cost_wall_seconds", "epoch_equivalents": "cost_epoch_equivalents"}[cost]
    palette = _palette(campaign)
    # Colour names the method and the marker the budget: labels written next to the points overlap.
    budgets = [_budget_name(None), *(_budget_name(m) for m in sorted(campaign.budget_multiples))]
    markers = dict(zip(budgets, "osD^vP*X", strict=False))
    searches = units[(units["kind"] == "search") & (units["state"] == "done")]
    with sns.axes_style("whitegrid"):
        figure, axes = plt.subplots(1, len(campaign.tasks), figsize=(5.6 * len(campaign.tasks), 4.0), squeeze=False)
        for axis, task in zip(axes[0], campaign.tasks, strict=True):
            metric = get_task(task).metric
            own = scores[(scores["search_task"] == task) & (scores["task"] == task)]
            points = searches[searches["task"] == task][["entry", "label", "seed", "budget_multiple", column]].merge(
                own.rename(columns={"replicate": "seed"})[["entry", "seed", "value"]], on=["entry", "seed"])
            points["cost"] = pd.to_numeric(points[column], errors="coerce")
            points["metric"] = points["value"].astype(float) * _scale(metric)
            points = points[(points["cost"] > 0) & np.isfinite(points["metric"])]
            points["budget"] = [_budget_name(m) for m in points["budget_multiple"]]
            if not points.empty:
                sns.scatterplot(points, x="cost", y="metric", hue="label", style="budget", markers=markers,
                                palette=palette, alpha=0.35, s=22, ax=axis, legend=False)
                means = points.groupby(["entry", "label", "budget"], sort=True).agg(
                    cost=("cost", "mean"), metric=("metric", "mean"), cost_sd=("cost", "std"),
                    metric_sd=("metric", "std")).reset_index()
                for row in means.itertuples():
                    axis.errorbar(row.cost, row.metric, xerr=_nan_zero(row.cost_sd), yerr=_nan_zero(row.metric_sd),
                                  fmt=markers[row.budget], color=palette[row.label], ms=6, capsize=2, lw=1)
                _log_x(axis)
            _fixed_lines(axis, units, task, "test_metric", metric)
            axis.set_title(task)
            axis.set_xlabel(cost_label)
            axis.set_ylabel(_axis_label("retrained test", metric))
        handles = [matplotlib.lines.Line2D([], [], color=palette[m.label], marker="o", ls="", label=m.label)
                   for m in campaign.methods]
        handles += [matplotlib.lines.Line2D([], [], color="0.3", marker=markers[b], ls="", label=b) for b in budgets
                    if b in markers]
        figure.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
        figure.tight_layout()
    caption = (
        "Search cost against the found activation's test metric after retraining on the search task: faint points "
        "per search seed, large points mean ± std per method (colour) and budget (marker). Dotted: fixed "
        "activations (no search)."
    )
    return save(figure, folder, "cost_vs_metric", caption)


def _budget_name(multiple: float | None) -> str:
    return "GRAFS (its own cost)" if multiple is None or pd.isna(multiple) else f"{multiple:g}x GRAFS"


def _nan_zero(value: float) -> float:
    return 0.0 if not math.isfinite(value) else value


def _panel_methods(campaign: Campaign) -> list[Entry]:
    largest = max(campaign.budget_multiples)
    # A per-layer retraining variant draws the same functions as its search's own entry.
    return [e for e in entries(campaign)
            if not e.fixed and e.searched_as is None and e.budget_multiple in (None, largest)]


def activations(units: pd.DataFrame, scores: pd.DataFrame, campaign: Campaign, task: str, folder: Path) -> Figure:
    """Per method, the activations its seeds found on ``task`` (the best retrained one in black, with its
    formula), next to ReLU, GELU and SiLU."""
    metric = get_task(task).metric
    methods = _panel_methods(campaign)
    searches = units[(units["kind"] == "search") & (units["task"] == task) & (units["state"] == "done")]
    own = scores[(scores["search_task"] == task) & (scores["task"] == task)].set_index(["entry", "replicate"])
    x = activation_grid()
    columns_ = min(3, len(methods))
    rows = math.ceil(len(methods) / columns_)
    with sns.axes_style("whitegrid"):
        figure, axes = plt.subplots(rows, columns_, figsize=(4.6 * columns_, 4.0 * rows), squeeze=False)
        for axis in axes.flat[len(methods):]:
            axis.set_visible(False)
        for axis, entry in zip(axes.flat, methods, strict=False):
            draw_comparison(axis, x)
            found = searches[(searches["entry"] == entry.name) & searches["genotype"].notna()].sort_values("seed")
            found = found[found["genotype"] != "null"]
            values = [float(own["value"].get((entry.name, int(s)), math.nan)) for s in found["seed"]]
            ranked = [v if math.isfinite(v) else -math.inf if metric.direction == "max" else math.inf for v in values]
            best = None
            if len(found):
                best = int(np.argmax(ranked) if metric.direction == "max" else np.argmin(ranked))
            for position, (seed, genotype) in enumerate(zip(found["seed"], found["genotype"], strict=True)):
                curve = activation_values(Genotype.from_dict(json.loads(genotype)), x)
                if position == best:
                    axis.plot(x, curve, color="black", lw=2.2, label=f"{entry.name} (seed {int(seed)})", zorder=3)
                    formula = Genotype.from_dict(json.loads(genotype)).formula()
                    axis.text(0.0, -0.2, "\n".join(textwrap.wrap(f"f(x) = {formula}", 70)), transform=axis.transAxes,
                              fontsize=6, va="top", family="monospace")
                else:
                    axis.plot(x, curve, color="0.55", lw=0.8, alpha=0.8)
            axis.set_ylim(-2.0, 5.5)
            axis.set_title(entry.name if best is not None else f"{entry.name}: no finished search", fontsize=9)
            axis.legend(fontsize=6, loc="upper left")
        figure.tight_layout(h_pad=4.0)
    caption = (
        f"Activations found on {task}, per method (black-box methods at their largest budget): the seed whose "
        "activation retrained best in black with its formula, the other seeds in grey; ReLU, GELU and SiLU dashed."
    )
    return save(figure, folder, f"activations_{task}", caption)


def transfer_heatmap(normalised: pd.DataFrame, folder: Path) -> Figure:
    exact = normalised.set_index("activation").astype(float)
    values = exact.clip(lower=NORMALISED_FLOOR)
    texts = exact.map(lambda v: normalised_text(v) if math.isfinite(v) else "")
    with sns.axes_style("white"):
        figure, axis = plt.subplots(figsize=(1.25 * values.shape[1] + 3.0, 0.42 * values.shape[0] + 1.6))
        sns.heatmap(values, annot=texts.to_numpy(), fmt="", cmap="RdYlGn", vmin=NORMALISED_FLOOR, vmax=1.0,
                    center=0.0, linewidths=0.5,
                    cbar_kws={"label": "normalised (ReLU 0, best 1)"}, annot_kws={"fontsize": 7}, ax=axis)
        axis.set_ylabel("")
        axis.tick_params(axis="x", rotation=30)
        plt.setp(axis.get_xticklabels(), ha="right")
        figure.tight_layout()
    caption = ("Transfer heatmap: per evaluated task, the test metric normalised between ReLU (0) and the best "
               f"activation (1), floored at {NORMALISED_FLOOR:g} as in the table; blank where no result exists.")
    return save(figure, folder, "transfer_heatmap", caption)


def critical_difference(result: Friedman, folder: Path) -> Figure:
    """Demsar's critical-difference diagram: average ranks on an axis, bars joining activations whose
    ranks differ by less than the Nemenyi critical difference."""
    ranks = result.average_ranks.sort_values(kind="stable")
    k = len(ranks)
    groups = cliques(ranks, result.critical_difference)
    half = math.ceil(k / 2)
    margin = 0.55 * (k - 1)
    line_end = 0.06 * (k - 1)
    bottom = -0.3 - 0.12 * len(groups) - 0.22 * half
    figure, axis = plt.subplots(figsize=(10.0, 1.4 + 0.3 * half + 0.12 * len(groups)))
    axis.set_xlim(1 - margin, k + margin)
    axis.set_ylim(bottom - 0.1, 0.6)
    axis.axis("off")
    axis.hlines(0, 1, k, color="black", lw=1)
    for tick in range(1, k + 1):
        axis.vlines(tick, 0, 0.06, color="black", lw=1)
        axis.text(tick, 0.1, str(tick), ha="center", va="bottom", fontsize=8)
    axis.hlines(0.42, 1, 1 + result.critical_difference, color="black", lw=1.5)
    axis.vlines([1, 1 + result.critical_difference], 0.38, 0.46, color="black", lw=1)
    axis.text(1 + result.critical_difference / 2, 0.48, f"CD = {result.critical_difference:.2f}", ha="center",
              va="bottom", fontsize=8)
    for i, (start, end) in enumerate(groups):
        y = -0.12 - 0.12 * i
        axis.hlines(y, ranks.iloc[start] - 0.03, ranks.iloc[end] + 0.03, color="black", lw=3)
    first_label = -0.3 - 0.12 * len(groups)
    for position, (name, rank) in enumerate(ranks.items()):
        left = position < half
        y = first_label - 0.22 * (position if left else k - 1 - position)
        end = 1 - line_end if left else k + line_end
        axis.plot([rank, rank, end], [0, y, y], color="0.25", lw=0.8)
        axis.text(end - 0.05 if left else end + 0.05, y, f"{name} ({rank:.2f})", ha="right" if left else "left",
                  va="center", fontsize=8)
    caption = (
        f"Critical-difference diagram (Nemenyi, alpha = 0.05, {result.blocks} blocks): average ranks, 1 is best; "
        "activations joined by a bar do not differ significantly."
    )
    return save(figure, folder, "critical_difference", caption)
