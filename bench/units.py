"""Running one campaign unit: a search, or the retraining of an activation on a task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna

from baselines.blackbox import STUDY_FILE, study_storage
from bench.activations import Activation, genotype_activation, resolve_activation
from bench.budget import Budget, grafs_spending
from bench.campaign import RetrainSpec, SearchSpec, Unit
from bench.folder import CampaignFolder
from bench.methods import METHODS
from bench.outputs import save_search_outcome, save_train_result
from bench.tasks import Metric, get_task, scaled_task
from bench.training import load_task_data, resolve_device, train
from grafs.files import atomic_path, write_json_atomic
from grafs.genotype import Genotype

BUDGET_COLUMNS = {"seconds": "wall_seconds", "sample_passes": "sample_passes", "epoch_equivalents": "epoch_equivalents"}


def run_unit(unit: Unit, folder: Path, out: Path, device: str) -> dict:
    """Run ``unit`` into ``folder``; returns the summary that goes into its done.json."""
    device = resolve_device(device)
    if isinstance(unit.spec, SearchSpec):
        return run_search_unit(unit.spec, folder, CampaignFolder(out), device)
    return run_retrain_unit(unit.spec, folder, CampaignFolder(out), device)


def _progress_writer(folder: Path, fraction_of):
    """Record how far a running unit is (0..1) in its progress.json, for the runner's display."""

    def write(row: dict) -> None:
        write_json_atomic(folder / "progress.json", {"fraction": min(1.0, fraction_of(row)), "row": row})

    return write


def run_search_unit(spec: SearchSpec, folder: Path, campaign: CampaignFolder, device) -> dict:
    method = METHODS.get(spec.method)
    task = scaled_task(get_task(spec.task), spec.scale, "search")
    options = dict(spec.options)
    declared = {name for name in method.options.__dataclass_fields__}
    for key in ("proxy_epochs", "proxy_iterations"):  # the campaign's shortened proxy trainings
        if key in declared and key in spec.scale:
            options.setdefault(key, spec.scale[key])
    searcher = method.create(**options)
    budget = None
    if method.budgeted:
        reference = campaign.unit_dir(spec.budget_from) / "result.json"
        budget = Budget.matched(
            grafs_spending(reference, task),
            spec.budget_multiple,
            spec.budget_unit,
            source=f"{spec.budget_multiple:g} x GRAFS unit {spec.budget_from}",
        )
    if spec.extends:
        _continue_study(campaign.unit_dir(spec.extends), folder)
    data = load_task_data(task)
    outcome = searcher.search(
        task,
        spec.seed,
        budget,
        data=data,
        out=folder,
        device=device,
        progress=_progress_writer(
            folder,
            (lambda row: row[BUDGET_COLUMNS[budget.unit]] / budget.limit)
            if budget
            else (lambda row: (row["step"] + 1) / task.search.length),
        ),
    )
    summary = save_search_outcome(outcome, folder, task, data, spec.seed)
    return {"status": summary["status"], "formula": summary["formula"]}


def _continue_study(previous: Path, folder: Path) -> None:
    """Start from the finished smaller-budget search's study (once: a resumed unit keeps its own)."""
    study = previous / STUDY_FILE
    if study.exists() and not (folder / STUDY_FILE).exists():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / STUDY_FILE) as temporary:
            shutil.copyfile(study, temporary)


def ranked_candidates(trace: list[dict], metric: Metric) -> list[dict]:
    """A black-box search's distinct fully evaluated candidates (trace rows with status ok), best proxy
    score first and the earlier of equals first, as the search picks its incumbent: rank 1 is the incumbent."""
    scored = [row for row in trace if row["status"] == "ok" and row.get("score") is not None]
    return sorted(scored, key=lambda row: -row["score"] if metric.direction == "max" else row["score"])


def _ranked_genotype(search: Path, rank: int, metric: Metric) -> Genotype:
    """The genotype of the search's ``rank``-th best candidate, read from its study by trial number."""
    ranked = ranked_candidates(json.loads((search / "trace.json").read_text()), metric)
    if rank > len(ranked):
        raise RuntimeError(f"search {search.name} evaluated {len(ranked)} distinct candidates, fewer than the "
                           f"rank {rank} asked for; lower the campaign's [evaluation] top_k")
    name = json.loads((search / "result.json").read_text())["study"]["name"]
    study = optuna.load_study(study_name=name, storage=study_storage(search / STUDY_FILE))
    trial = study.get_trials(deepcopy=False)[int(ranked[rank - 1]["trial"])]
    return Genotype.from_dict(trial.user_attrs["genotype"])


def _activation_of(spec: RetrainSpec, campaign: CampaignFolder) -> Activation:
    source = spec.activation
    if source.fixed is not None:
        return resolve_activation(source.fixed)
    search = campaign.unit_dir(source.search)
    if source.rank is not None:
        genotype = _ranked_genotype(search, source.rank, get_task(spec.search_task).metric)
    else:
        genotype = Genotype.load(search / "genotype.json")
    return genotype_activation(spec.label, genotype, source.learnable_betas)


def run_retrain_unit(spec: RetrainSpec, folder: Path, campaign: CampaignFolder, device) -> dict:
    task = scaled_task(get_task(spec.task), spec.scale, "retrain")
    activation = _activation_of(spec, campaign)
    result = train(
        task,
        activation.factory,
        spec.seed,
        activation_name=activation.name,
        device=device,
        progress=False,
        on_epoch=_progress_writer(folder, task.recipe.progress),
    )
    save_train_result(result, folder, activation.genotype)
    return {"status": result.status, "test_metric": result.metrics["test_metric"]}
