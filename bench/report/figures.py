"""The report's figures (seaborn on matplotlib), each saved as PNG and PDF with fixed metadata so that
the same tables always give byte-identical files.

Sizes: a figure, legend included, is at most ``MAX_WIDTH`` inches wide at ``DPI``, so the HTML report
shows it without shrinking and its text, at least 9 pt, stays legible; tasks get one row of panels
each rather than sitting side by side.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.lines
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scikit_posthocs  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.campaign import Campaign  # noqa: E402
from bench.report.intervals import Normalised, profile_band  # noqa: E402
from bench.report.stats import ALPHA, Friedman  # noqa: E402
from bench.report.tables import NORMALISED_FLOOR, Entry, entries, normalised_text  # noqa: E402
from bench.tasks import Metric, get_task  # noqa: E402
from grafs.files import atomic_path  # noqa: E402

METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}
DPI = 120
MAX_WIDTH = 9.4  # inches: 1128 px at DPI, inside the HTML report's column (1200 px less its padding)
PANELS_WIDTH = 7.2  # inches of panels where a legend of about two inches sits beside them
GRID_POINTS = 80
FONT = {"font.size": 10.0, "axes.titlesize": 11.0, "axes.labelsize": 10.0, "xtick.labelsize": 9.5,
        "ytick.labelsize": 9.5, "legend.fontsize": 9.5, "legend.title_fontsize": 9.5}
SMALLEST_TEXT = 9.0  # points: annotations, fixed-activation labels


@dataclass(frozen=True)
class Figure:
    name: str
    caption: str
    png: Path


@contextmanager
def _theme(style: str = "whitegrid") -> Iterator[None]:
    with sns.axes_style(style), plt.rc_context(FONT):
        yield


def save(figure, folder: Path, name: str, caption: str) -> Figure:
    folder.mkdir(parents=True, exist_ok=True)
    for extension, metadata in METADATA.items():
        with atomic_path(folder / f"{name}.{extension}") as temporary:
            figure.savefig(temporary, format=extension, dpi=DPI, metadata=metadata, bbox_inches="tight")
    plt.close(figure)
    return Figure(name, caption, folder / f"{name}.png")


def _legend_beside(figure, handles: list) -> None:
    """One legend for all panels, to the right of them, then the panels laid out."""
    figure.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.tight_layout()


def _scale(metric: Metric) -> float:
    return 100.0 if metric.name == "accuracy" else 1.0


def _axis_label(prefix: str, metric: Metric) -> str:
    if metric.name == "accuracy":
        return f"{prefix} accuracy (%)"
    return f"{prefix} loss (lower is better)"


def _palette(names: list[str]) -> dict[str, tuple]:
    return dict(zip(names, sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names)), strict=True))


def _method_palette(campaign: Campaign) -> dict[str, tuple]:
    return _palette([m.label for m in campaign.methods])


def spread(positions: list[float], gap: float) -> list[float]:
    """Label positions moved apart to at least ``gap`` from each other, in the same order, each as close to
    its own position as the others allow (so labels of nearby lines do not print over each other)."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    placed = [positions[i] for i in order]
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    shift = (sum(placed) - sum(positions[i] for i in order)) / max(len(placed), 1)
    placed = [p - shift for p in placed]  # centre the block of labels on the lines it names
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    result = [0.0] * len(positions)
    for i, value in zip(order, placed, strict=True):
        result[i] = value
    return result


def _fixed_means(units: pd.DataFrame, task: str, column: str) -> pd.Series:
    fixed = units[(units["kind"] == "retrain") & units["fixed"].notna() & (units["task"] == task)
                  & (units["state"] == "done")]
    return pd.to_numeric(fixed[column], errors="coerce").groupby(fixed["fixed"], sort=True).mean().dropna()


def _fixed_lines(axes, means: pd.Series, metric: Metric) -> None:
    """Each fixed activation's mean as a dotted line, labelled right of the panel without overlaps; one
    outside the panel's y-range (which fits the curves) is named at the edge with its value and an arrow."""
    if means.empty:
        return
    means = means.sort_values(kind="stable")  # labels stacked at an edge keep the order of their values
    values = [float(v) * _scale(metric) for v in means]
    low, high = axes.get_ylim()
    anchors = [min(max(value, low), high) for value in values]
    for value in values:
        if low <= value <= high:
            axes.axhline(value, color="0.45", lw=0.9, ls=":")
    for name, value, anchor, y in zip(means.index, values, anchors, spread(anchors, (high - low) * 0.075),
                                      strict=True):
        text = name if low <= value <= high else f"{name} {value:.3g} {'↑' if value > high else '↓'}"
        axes.annotate(text, xy=(1.0, anchor), xycoords=("axes fraction", "data"), xytext=(1.02, y),
                      textcoords=("axes fraction", "data"), fontsize=SMALLEST_TEXT, va="center", color="0.25",
                      arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6}, annotation_clip=False)


def _cover(axes, values: list[float]) -> None:
    """A y-range that covers every drawn value with a margin."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    margin = 0.06 * (high - low) if high > low else max(abs(high) * 0.02, 0.01)
    axes.set_ylim(low - margin, high + margin)


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


def _trace_points(trace: pd.DataFrame, units: pd.DataFrame, campaign: Campaign, task: str) -> pd.DataFrame:
    cost, _ = _cost_column(campaign)
    chosen = _curve_units(units, campaign, task)
    points = trace[trace["unit_id"].isin(chosen["unit_id"])].copy()
    points["cost"] = pd.to_numeric(points[cost], errors="coerce")
    points["score"] = pd.to_numeric(points["incumbent_score"], errors="coerce")
    return points[(points["cost"] > 0) & np.isfinite(points["score"])]


def anytime_frame(trace: pd.DataFrame, units: pd.DataFrame, campaign: Campaign, task: str) -> pd.DataFrame:
    """Incumbent score per method and seed on a common log-spaced cost grid, where every seed has a value."""
    points = _trace_points(trace, units, campaign, task)
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


def _final_points(trace: pd.DataFrame, units: pd.DataFrame, campaign: Campaign, task: str) -> pd.DataFrame:
    """Each search's last trace point: its total cost and its final incumbent score."""
    points = _trace_points(trace, units, campaign, task).sort_values(["unit_id", "step"], kind="stable")
    return points.groupby("unit_id", sort=True).tail(1)[["label", "seed", "cost", "score"]]


MIN_CURVE_POINTS = 8  # of the 80-point grid (a tenth of the axis): a shorter curve is drawn as a point instead


def anytime(trace: pd.DataFrame, units: pd.DataFrame, campaign: Campaign, folder: Path) -> Figure:
    _, cost_label = _cost_column(campaign)
    palette = _method_palette(campaign)
    tasks = list(campaign.tasks)
    with _theme():
        figure, axes = plt.subplots(len(tasks), 1, figsize=(PANELS_WIDTH, 3.4 * len(tasks)), squeeze=False)
        for axis, task in zip(axes[:, 0], tasks, strict=True):
            metric = get_task(task).metric
            scale = _scale(metric)
            frame = anytime_frame(trace, units, campaign, task)
            frame["score"] = frame["score"].astype(float) * scale
            final = _final_points(trace, units, campaign, task)
            final["score"] = final["score"].astype(float) * scale
            lengths = frame.groupby("label")["cost"].nunique()
            curves = frame[frame["label"].isin(lengths[lengths >= MIN_CURVE_POINTS].index)]
            drawn = list(curves["score"])
            if not curves.empty:
                sns.lineplot(curves, x="cost", y="score", hue="label", palette=palette, errorbar="se",
                             drawstyle="steps-post", err_kws={"step": "post"}, ax=axis, legend=False)
            for label in lengths[lengths < MIN_CURVE_POINTS].index:
                ends = final[final["label"] == label]
                se = ends["score"].std() / math.sqrt(len(ends)) if len(ends) > 1 else 0.0
                axis.errorbar(ends["cost"].mean(), ends["score"].mean(), xerr=_nan_zero(ends["cost"].std()),
                              yerr=_nan_zero(se), fmt="o", color=palette[label], ms=7, capsize=3, lw=1.2)
                drawn += [ends["score"].mean() - _nan_zero(se), ends["score"].mean() + _nan_zero(se)]
            if not frame.empty:
                _log_x(axis)
            fixed = _fixed_means(units, task, "val_metric")
            _cover(axis, drawn)
            _fixed_lines(axis, fixed, metric)
            axis.set_title(task)
            axis.set_xlabel(cost_label)
            axis.set_ylabel(_axis_label("incumbent validation", metric))
        _method_legend(figure, campaign, palette)
        figure.tight_layout()
    caption = (
        "Anytime curves, one row per search task: the incumbent's validation score against the cumulative search "
        "cost, mean and standard error over search seeds (black-box methods at their largest budget). A method "
        f"whose curve spans fewer than {MIN_CURVE_POINTS} points of the common cost grid (GRAFS, whose search "
        "is short and fixed in length) is drawn as one point: its mean final cost ± std and mean final score ± "
        "standard error. Each method scores on its own protocol (GRAFS: its validation split; black-box: a short "
        "proxy training on the last 25 % of the training split), so curves of different methods are comparable "
        "only in shape; the retrained tables compare them. Dotted: fixed activations' validation score after a "
        "full training; one outside the y-range, which fits the curves, is named at the edge with its value."
    )
    return save(figure, folder, "anytime", caption)


def _method_legend(figure, campaign: Campaign, palette: dict[str, tuple], extra: list | None = None) -> None:
    handles = [matplotlib.lines.Line2D([], [], color=palette[m.label], marker="o", lw=2, label=m.label)
               for m in campaign.methods]
    figure.legend(handles=handles + (extra or []), loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def cost_versus_metric(units: pd.DataFrame, scores: pd.DataFrame, campaign: Campaign, folder: Path) -> Figure:
    cost, cost_label = _cost_column(campaign)
    column = {"wall_seconds": "cost_wall_seconds", "epoch_equivalents": "cost_epoch_equivalents"}[cost]
    palette = _method_palette(campaign)
    # Colour names the method and the marker the budget: labels written next to the points overlap.
    budgets = [_budget_name(None), *(_budget_name(m) for m in sorted(campaign.budget_multiples))]
    markers = dict(zip(budgets, "osD^vP*X", strict=False))
    searches = units[(units["kind"] == "search") & (units["state"] == "done")]
    tasks = list(campaign.tasks)
    with _theme():
        figure, axes = plt.subplots(len(tasks), 1, figsize=(PANELS_WIDTH, 3.4 * len(tasks)), squeeze=False)
        for axis, task in zip(axes[:, 0], tasks, strict=True):
            metric = get_task(task).metric
            own = scores[(scores["search_task"] == task) & (scores["task"] == task)]
            points = searches[searches["task"] == task][["entry", "label", "seed", "budget_multiple", column]].merge(
                own.rename(columns={"replicate": "seed"})[["entry", "seed", "value"]], on=["entry", "seed"])
            points["cost"] = pd.to_numeric(points[column], errors="coerce")
            points["metric"] = points["value"].astype(float) * _scale(metric)
            points = points[(points["cost"] > 0) & np.isfinite(points["metric"])]
            points["budget"] = [_budget_name(m) for m in points["budget_multiple"]]
            fixed = _fixed_means(units, task, "test_metric")
            if not points.empty:
                sns.scatterplot(points, x="cost", y="metric", hue="label", style="budget", markers=markers,
                                palette=palette, alpha=0.35, s=26, ax=axis, legend=False)
                means = points.groupby(["entry", "label", "budget"], sort=True).agg(
                    cost=("cost", "mean"), metric=("metric", "mean"), cost_sd=("cost", "std"),
                    metric_sd=("metric", "std")).reset_index()
                for row in means.itertuples():
                    axis.errorbar(row.cost, row.metric, xerr=_nan_zero(row.cost_sd), yerr=_nan_zero(row.metric_sd),
                                  fmt=markers[row.budget], color=palette[row.label], ms=7, capsize=2, lw=1)
                _log_x(axis)
            _cover(axis, list(points["metric"]))
            _fixed_lines(axis, fixed, metric)
            axis.set_title(task)
            axis.set_xlabel(cost_label)
            axis.set_ylabel(_axis_label("retrained test", metric))
        extra = [matplotlib.lines.Line2D([], [], color="0.3", marker=markers[b], ls="", label=b) for b in budgets
                 if b in markers]
        _method_legend(figure, campaign, palette, extra)
        figure.tight_layout()
    caption = (
        "Search cost against the found activation's test metric after retraining on the search task, one row per "
        "search task: faint points per search seed, large points mean ± std per method (colour) and budget "
        "(marker). Dotted: fixed activations (no search); one outside the y-range, which fits the points, is named "
        "at the edge with its value."
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


def activations(units: pd.DataFrame, scores: pd.DataFrame, curves: pd.DataFrame, campaign: Campaign, task: str,
                folder: Path) -> Figure:
    """Per method, the activations its seeds found on ``task`` (the best retrained one in black), next to
    the comparison activations; the y-range fits every drawn function."""
    metric = get_task(task).metric
    methods = _panel_methods(campaign)
    searches = units[(units["kind"] == "search") & (units["task"] == task) & (units["state"] == "done")]
    own = scores[(scores["search_task"] == task) & (scores["task"] == task)].set_index(["entry", "replicate"])
    found = {unit_id: part for unit_id, part in curves[curves["unit_id"].notna()].groupby("unit_id", sort=False)}
    comparison = {name: part for name, part in curves[curves["activation"].notna()].groupby("activation", sort=True)}
    shown = [found[u] for u in searches["unit_id"] if u in found] + list(comparison.values())
    values = np.concatenate([part["y"].to_numpy(dtype=float) for part in shown]) if shown else np.array([0.0])
    values = values[np.isfinite(values)]
    low, high = (float(values.min()), float(values.max())) if len(values) else (-1.0, 1.0)
    margin = 0.06 * (high - low) if high > low else 1.0
    columns_ = min(3, len(methods))
    rows = math.ceil(len(methods) / columns_)
    with _theme():
        figure, axes = plt.subplots(rows, columns_, figsize=(PANELS_WIDTH, 2.6 * rows), squeeze=False, sharex=True,
                                    sharey=True)
        for axis in axes.flat[len(methods):]:
            axis.set_visible(False)
        for axis, entry in zip(axes.flat, methods, strict=False):
            for name, part in comparison.items():
                axis.plot(part["x"], part["y"], lw=1.1, ls="--", label=name)
            axis.axhline(0, color="grey", lw=0.5)
            axis.axvline(0, color="grey", lw=0.5)
            group = searches[searches["entry"] == entry.name].sort_values("seed")
            group = group[group["unit_id"].isin(found)]
            scored = [float(own["value"].get((entry.name, int(s)), math.nan)) for s in group["seed"]]
            ranked = [v if math.isfinite(v) else -math.inf if metric.direction == "max" else math.inf for v in scored]
            best = None
            if len(group):
                best = int(np.argmax(ranked) if metric.direction == "max" else np.argmin(ranked))
            for position, (seed, unit_id) in enumerate(zip(group["seed"], group["unit_id"], strict=True)):
                part = found[unit_id]
                if position == best:
                    axis.plot(part["x"], part["y"], color="black", lw=2.2, label=f"best: seed {int(seed)}", zorder=3)
                else:
                    axis.plot(part["x"], part["y"], color="0.55", lw=0.8, alpha=0.8)
            axis.set_ylim(low - margin, high + margin)
            axis.set_title(entry.name if best is not None else f"{entry.name}: none finished")
            axis.set_xlabel("x")
            axis.set_ylabel("f(x)")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        handles = [h for h, label in zip(handles, labels, strict=True) if label in comparison]
        handles += [matplotlib.lines.Line2D([], [], color="black", lw=2.2, label="best retrained seed"),
                    matplotlib.lines.Line2D([], [], color="0.55", lw=0.8, label="other seeds")]
        _legend_beside(figure, handles)
    caption = (
        f"Activations found on {task}, per method (black-box methods at their largest budget): the seed whose "
        f"activation retrained best in black, the other seeds in grey; {', '.join(comparison)} dashed. The y-range "
        "fits every drawn function; the formulas are in the found-activations table."
    )
    return save(figure, folder, f"activations_{task}", caption)


def transfer_heatmap(normalised: pd.DataFrame, relu_best: list[str], folder: Path) -> Figure:
    exact = normalised.set_index("activation").astype(float)
    values = exact.clip(lower=NORMALISED_FLOOR)
    texts = exact.map(lambda v: normalised_text(v) if math.isfinite(v) else "")
    with _theme("white"):
        figure, axis = plt.subplots(figsize=(min(MAX_WIDTH, 1.3 * values.shape[1] + 3.2),
                                             0.4 * values.shape[0] + 1.8))
        sns.heatmap(values, annot=texts.to_numpy(), fmt="", cmap="RdYlGn", vmin=NORMALISED_FLOOR, vmax=1.0,
                    center=0.0, linewidths=0.5,
                    cbar_kws={"label": "normalised (ReLU 0, best 1)"}, annot_kws={"fontsize": SMALLEST_TEXT}, ax=axis)
        axis.set_ylabel("")
        axis.tick_params(axis="x", rotation=30)
        plt.setp(axis.get_xticklabels(), ha="right")
        figure.tight_layout()
    blank = ("; blank where no result exists" if not relu_best else
             f"; the columns {', '.join(relu_best)} are blank because ReLU is the best activation there (the scale "
             "from ReLU to the best is empty), as is any cell without a result")
    caption = ("Transfer heatmap: per evaluated task, the test metric normalised between ReLU (0) and the best "
               f"activation (1), floored at {NORMALISED_FLOOR:g} as in the table{blank}.")
    return save(figure, folder, "transfer_heatmap", caption)


def critical_difference(result: Friedman, folder: Path) -> Figure:
    """The critical-difference diagram of scikit-posthocs: average ranks on an axis, bars joining
    activations that the Nemenyi test does not tell apart; labels sit at distinct heights on both sides."""
    significance = scikit_posthocs.posthoc_nemenyi_friedman(result.complete)
    height = 1.2 + 0.24 * math.ceil(result.entries / 2)
    # The labels sit beside the axis, left and right: leave them room within the figure width.
    longest = max(len(f"{name} (0.00)") for name in result.average_ranks.index)
    label_width = longest * FONT["font.size"] * 0.6 / 72  # inches: about 0.6 em per character
    with plt.rc_context(FONT):
        figure, axis = plt.subplots(figsize=(max(3.0, MAX_WIDTH - 2 * label_width - 0.3), height))
        drawn = scikit_posthocs.critical_difference_diagram(
            result.average_ranks, significance, alpha=ALPHA, ax=axis,
            label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
            label_props={"fontsize": FONT["font.size"]})
        # The library joins a bar's points in the iteration order of a set of names, which changes
        # from process to process: drawn left to right, the same bar gives the same pixels.
        for lines in drawn["crossbars"]:
            for line in lines:
                x, y = line.get_data()
                line.set_data(sorted(x), y)
    caption = (
        f"Critical-difference diagram (scikit-posthocs; Nemenyi test after Friedman, alpha = {ALPHA}, "
        f"{result.blocks} blocks, CD = {result.critical_difference:.2f}): average ranks, 1 is best; activations "
        "joined by a bar do not differ significantly."
    )
    return save(figure, folder, "critical_difference", caption)


def performance_profiles(normalised: Normalised, campaign: Campaign, folder: Path) -> Figure:
    """Per budget multiple, the share of runs above each normalised score, with pointwise bootstrap bands."""
    multiples = sorted(campaign.budget_multiples)
    found = [e for e in entries(campaign) if not e.fixed and e.searched_as is None]
    palette = _palette(list(dict.fromkeys(e.label for e in found)))
    # Fixed activations in greys, told apart by their dash patterns.
    dashes = [":", "--", "-.", (0, (1, 3)), (0, (6, 2, 1, 2, 1, 2))]
    greys = sns.color_palette("Greys", len(campaign.fixed) + 2)[2:]
    fixed_styles = {name: (greys[i], dashes[i % len(dashes)]) for i, name in enumerate(campaign.fixed)}
    columns_ = min(2, len(multiples))
    rows = math.ceil(len(multiples) / columns_)
    with _theme():
        figure, axes = plt.subplots(rows, columns_, figsize=(PANELS_WIDTH if columns_ > 1 else 5.5, 3.4 * rows),
                                    squeeze=False, sharey=True)
        for axis in axes.flat[len(multiples):]:
            axis.set_visible(False)
        for axis, multiple in zip(axes.flat, multiples, strict=False):
            shown = [e for e in found if e.budget_multiple in (None, multiple)]
            for entry in shown + [e for e in entries(campaign) if e.fixed]:
                strata = normalised.strata(entry.name)
                if strata is None:
                    continue
                band = profile_band(strata, f"profile/{entry.name}")
                colour, style = fixed_styles[entry.name] if entry.fixed else (palette[entry.label], "-")
                axis.plot(band["threshold"], band["share"], color=colour, ls=style, lw=1.6, drawstyle="steps-post")
                axis.fill_between(band["threshold"], band["low"], band["high"], color=colour, alpha=0.12, step="post")
            axis.set_title(f"black-box at {multiple:g}x GRAFS's cost")
            axis.set_xlabel("normalised score τ (ReLU 0, best 1)")
            axis.set_ylabel("share of runs above τ")
            axis.set_ylim(-0.02, 1.02)
        handles = [matplotlib.lines.Line2D([], [], color=palette[label], lw=2, label=label) for label in palette]
        handles += [matplotlib.lines.Line2D([], [], color=colour, lw=2, ls=style, label=name)
                    for name, (colour, style) in fixed_styles.items()]
        _legend_beside(figure, handles)
    caption = (
        "Performance profiles: for each normalised score τ, the share of runs scoring above it (each search "
        f"task weighted equally, over {', '.join(normalised.tasks)}), with pointwise 95 % bootstrap bands; one "
        "panel per budget multiple of the black-box methods, GRAFS at its own cost in each. A curve above "
        "another is better at every threshold. Grey, dashed: fixed activations."
    )
    return save(figure, folder, "performance_profiles", caption)


def proxy_scatter(points: pd.DataFrame, campaign: Campaign, folder: Path) -> Figure:
    """Per search task, each retrained black-box candidate's proxy score against its retrained test metric."""
    tasks = [t for t in campaign.tasks if (points["search_task"] == t).any()]
    palette = _method_palette(campaign)
    labels = list(dict.fromkeys(points["label"]))
    # A hollow marker per method as well as a colour: methods that retrain the same candidates (NSGA-II's
    # first generation is random search's sample) print on the same spot and stay visible there.
    markers = dict(zip(labels, "osD^vPX*<>", strict=False))
    columns_ = min(2, len(tasks))
    rows = math.ceil(len(tasks) / columns_)
    with _theme():
        figure, axes = plt.subplots(rows, columns_, figsize=(PANELS_WIDTH if columns_ > 1 else 5.0, 3.4 * rows),
                                    squeeze=False)
        for axis in axes.flat[len(tasks):]:
            axis.set_visible(False)
        for axis, task in zip(axes.flat, tasks, strict=False):
            metric = get_task(task).metric
            part = points[points["search_task"] == task]
            part = part.assign(proxy=part["proxy"] * _scale(metric), test=part["test"] * _scale(metric))
            for label, group in part.groupby("label", sort=False):
                axis.scatter(group["proxy"], group["test"], s=48, marker=markers[label], facecolors="none",
                             edgecolors=[palette[label]], linewidths=1.4)
            axis.set_title(task)
            axis.set_xlabel(_axis_label("proxy", metric))
            axis.set_ylabel(_axis_label("retrained test", metric))
        handles = [matplotlib.lines.Line2D([], [], color=palette[label], marker=markers[label], ls="", label=label,
                                           markerfacecolor="none", markeredgewidth=1.4) for label in labels]
        _legend_beside(figure, handles)
    caption = (
        "Proxy fidelity: each retrained black-box candidate (searches at the largest budget, each search's top "
        f"{campaign.top_k} by proxy score), its proxy score against its test metric after retraining on the "
        "search task. A proxy that ranks candidates as full training does gives a rising cloud."
    )
    return save(figure, folder, "proxy_fidelity", caption)
