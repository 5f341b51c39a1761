"""The report of a campaign folder, built only from its ``campaign.json`` and gathered tables.

``build_report(out)`` writes ``out/report.md``, a self-contained ``out/report.html`` (figures
embedded), every table as CSV and LaTeX under ``out/tables/`` and every figure as PNG and PDF
under ``out/figures/``. The same tables always give byte-identical files.
"""

from __future__ import annotations

import json
import platform
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from bench.campaign import units_of_part
from bench.folder import CampaignFolder
from bench.report import figures, intervals, stats, tables
from bench.report.findings import findings
from bench.report.inputs import NOT_GATHERED, ReportInputs, load_inputs
from bench.report.render import Block, Code, Heading, Paragraph, render_html, render_markdown, write_table
from grafs.files import write_text_atomic

REPORT_PACKAGES = ("scipy", "seaborn", "matplotlib", "scikit-posthocs")


def environment(inputs: ReportInputs) -> tuple[str, dict[str, str]]:
    """Where the numbers come from: ``environment.json`` if the campaign recorded one, else this build's."""
    recorded = CampaignFolder(inputs.out).read_environment()
    if recorded is not None:
        return "as recorded in environment.json", recorded
    from bench.tracking import environment_tags

    values = dict(environment_tags())
    for package in REPORT_PACKAGES:
        values[f"version.{package}"] = metadata.version(package)
    values["platform"] = platform.platform()
    devices = inputs.units["device"].dropna().unique() if "device" in inputs.units else []
    values["device"] = ", ".join(sorted(map(str, devices))) or f"{inputs.campaign.device} (the campaign's setting)"
    return "of the build of this report (the units record none of their own)", values


def _completeness_text(units: pd.DataFrame, missing: tables.Table, shown: tables.Table) -> str:
    """``shown`` is ``missing`` less the units of parts not merged yet (those the report's table lists)."""
    total = len(units)
    if missing.data.empty:
        return f"All {total} declared units finished with status ok."
    counts = missing.data["state"].value_counts()
    diverged = int((missing.data["state"] == "done").sum())
    parts = [f"{int(counts[s])} {s}" for s in ("failed", "running", "pending", NOT_GATHERED) if s in counts]
    if diverged:
        parts.append(f"{diverged} diverged")
    text = (
        f"{len(missing.data)} of {total} declared units are missing from the results ({', '.join(parts)}). "
        "Means average only the finished units: every cell built from an incomplete group says so as n=k/N "
        "(finished / declared units), and a cell with none finished shows –."
    )
    unmerged = len(missing.data) - len(shown.display)
    if shown.display.empty:
        text += " All of them belong to the parts not merged yet; tables/completeness.csv lists them."
    elif unmerged:
        text += (f" {unmerged} of them belong to the parts not merged yet: the table below lists only the "
                 "others, tables/completeness.csv all of them.")
    return text


def _unmerged_units(inputs: ReportInputs) -> set[str]:
    """The units of a merged folder's campaign that belong to parts not merged (yet)."""
    if not inputs.merged:
        return set()
    names = {part.part for part in inputs.merged}
    return {
        unit.id for part in inputs.campaign.parts if part.name not in names
        for unit in units_of_part(inputs.campaign, part.name)
    }


def _parts_text(inputs: ReportInputs) -> list[str]:
    """Which parts of a campaign run in parts the folder covers (nothing for a campaign run as a whole)."""
    if inputs.part is not None:
        return [f"This folder holds part {inputs.part} of the campaign ({len(inputs.units)} of its units); "
                "`grafs-bench merge` joins the parts' folders for a report on all of them."]
    if not inputs.merged:
        return []
    merged = "; ".join(
        f"{part.part} from {part.folder} ({part.finished}/{part.units} units finished"
        + (f", run from {part.first_started} to {part.last_finished})" if part.first_started else ")")
        for part in inputs.merged
    )
    names = {part.part for part in inputs.merged}
    left = [part.name for part in inputs.campaign.parts if part.name not in names]
    return [f"Merged by `grafs-bench merge` from {len(inputs.merged)} of the campaign's {len(inputs.campaign.parts)} "
            f"parts: {merged}." + (f" Not merged yet: {', '.join(left)}." if left else "")]


def build_report(out: Path) -> Path:
    """Write the report of the campaign folder ``out``; returns the path of ``report.md``."""
    inputs = load_inputs(Path(out))
    campaign = inputs.campaign
    units = tables.with_entries(inputs.units, campaign)
    figure_dir, table_dir = inputs.out / "figures", inputs.out / "tables"
    scores = tables.replicate_scores(units, campaign)
    missing = tables.completeness(units)
    unmerged = _unmerged_units(inputs)
    shown = replace(missing, display=missing.display[~missing.data["unit_id"].isin(unmerged)].reset_index(drop=True))
    efficiency = tables.efficiency(units, inputs.trace, campaign)
    target = tables.time_to_target(units, campaign)
    transfer, normalised = tables.transfer(units, campaign)
    found = tables.found_activations(units, campaign)
    blocks_table = stats.blocks(scores, campaign)
    reference = tables.default_grafs(campaign)
    tests = stats.wilcoxon_against(blocks_table, reference or "")
    friedman = stats.friedman(blocks_table)
    estimates = intervals.task_estimates(scores, campaign)
    runs = intervals.normalise(scores, campaign)
    aggregate = intervals.aggregate(runs, campaign)
    improvement = intervals.improvement(scores, campaign, reference)
    ranks = intervals.rank_by_budget(blocks_table, campaign)
    points = intervals.proxy_points(units, campaign)
    fidelity = intervals.proxy_fidelity(points, campaign)
    means = transfer.data.set_index("activation")[[f"{name} mean" for _, _, name in tables.named_columns(campaign)]]
    relu_best = tables.relu_best_columns(means.rename(columns=lambda c: c.removesuffix(" mean")), campaign)

    blocks: list[Block] = [
        Heading(1, f"grafs-bench report: {campaign.name}"),
        Paragraph(campaign.description),
        Paragraph(f"Built by `grafs-bench report` from this folder's campaign.json and gathered tables "
                  f"(tables/units.parquet, tables/trace.parquet, tables/activation_curves.parquet): {len(units)} "
                  f"declared units, search tasks {', '.join(campaign.tasks)}, seeds "
                  f"{', '.join(map(str, campaign.seeds))}."),
        *(Paragraph(text) for text in _parts_text(inputs)),
        Heading(2, "Findings"),
        *(Paragraph(line) for line in findings(estimates.data, tests, friedman, aggregate.data, improvement.data,
                                               fidelity.data, relu_best, campaign, reference)),
        Heading(2, "Completeness"),
        Paragraph(_completeness_text(units, missing, shown)),
    ]
    if not shown.display.empty:
        blocks.append(shown)
    blocks += [Heading(2, "Interval estimates"), estimates, aggregate]
    if runs.tasks:
        blocks.append(figures.performance_profiles(runs, campaign, figure_dir))
    else:
        blocks.append(Paragraph("No performance profiles: no search task has a scale from ReLU to the best "
                                "activation (" + "; ".join(f"{t}: {why}" for t, why in runs.skipped.items()) + ")."))
    blocks += [improvement, ranks, Heading(2, "Efficiency"), efficiency]
    if not target.display.empty:
        blocks.append(target)
    blocks += [Heading(2, "Transfer"), transfer, normalised, Heading(2, "Proxy fidelity")]
    if not points.empty:
        blocks += [fidelity, figures.proxy_scatter(points, campaign, figure_dir)]
    else:
        blocks.append(Paragraph("No proxy-fidelity points: no retrained black-box candidate has a proxy score in the "
                                "gathered tables (the campaign has no black-box method, none of their searches and "
                                "retrainings finished, or the tables predate that column: run `grafs-bench gather` "
                                "on this folder)."))
    blocks.append(Heading(2, "Statistics"))
    blocks += [Paragraph(line) for line in stats.summary(tests, friedman, reference, blocks_table)]
    if not tests.empty:
        blocks.append(stats.wilcoxon_table(tests))
    if friedman is not None:
        blocks += [stats.friedman_table(friedman), figures.critical_difference(friedman, figure_dir)]
    blocks.append(Heading(2, "Figures"))
    if not inputs.trace.empty:
        blocks.append(figures.anytime(inputs.trace, units, campaign, figure_dir))
    else:
        blocks.append(Paragraph("No anytime curves: no search trace has been gathered yet."))
    finished = units[(units["kind"] == "search") & (units["state"] == "done")]
    if not finished.empty:
        blocks.append(figures.cost_versus_metric(units, scores, campaign, figure_dir))
    if inputs.curves.empty and not finished.empty:
        blocks.append(Paragraph("No activation plots: the gathered tables hold no activation curves "
                                "(tables/activation_curves.parquet); run `grafs-bench gather` on this folder."))
    for task in campaign.tasks:
        if (finished["task"] == task).any() and not inputs.curves.empty:
            blocks.append(figures.activations(units, scores, inputs.curves, campaign, task, figure_dir))
    if np.isfinite(normalised.data.drop(columns="activation").to_numpy(dtype=float)).any():
        blocks.append(figures.transfer_heatmap(normalised.data, relu_best, figure_dir))
    blocks += [Heading(2, "Found activations"), found]
    where, values = environment(inputs)
    blocks += [
        Heading(2, "Campaign"), Code(json.dumps(inputs.record, indent=2)),
        Heading(2, "Environment"), Paragraph(f"Versions, device and commit {where}."),
        Code("\n".join(f"{key}: {value}" for key, value in values.items())),
    ]

    for block in blocks:
        if isinstance(block, tables.Table):
            write_table(block, table_dir)
    if shown.display.empty and not missing.data.empty:  # only unmerged parts' units: listed in the files alone
        write_table(shown, table_dir)
    write_text_atomic(inputs.out / "report.html", render_html(blocks, f"grafs-bench report: {campaign.name}"))
    path = inputs.out / "report.md"
    write_text_atomic(path, render_markdown(blocks, inputs.out))
    return path
