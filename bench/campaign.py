"""Campaigns: a benchmark grid declared in a TOML file, validated on load, expanded into units.

A campaign names its search tasks, the methods to compare (GRAFS in its modes and ablations, the
black-box baselines), the fixed activations, the seeds, the budget multiples and the final
evaluation. Expanding it gives a list of :class:`Unit` s: searches, and retrainings of every found
and every fixed activation on the search task and its transfer targets (black-box finds of the
budget multiples named for transfer only; a PANGAEA find twice: with shared fixed betas and with
betas learned per activation site; with ``[evaluation] top_k`` > 1 also a black-box search's runner-up
candidates, on the search task). A unit is a pure function of its spec (:class:`SearchSpec`,
:class:`RetrainSpec`); its id is a hash of that spec, so the same grid always maps to the same folders.

A campaign too long for one sitting declares ``[[parts]]`` (:class:`Part`): each a set of its tasks
and seeds, every (task, seed) in exactly one part. A part runs in a folder of its own
(:func:`units_of_part`) and ``grafs-bench merge`` joins the parts' tables for one report.

This module is light: it reads names from the task and method tables and imports neither torch
nor any method's implementation.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from pathlib import Path

import tomllib

from bench.activations import FIXED_ACTIVATIONS
from bench.budget import BUDGET_UNITS
from bench.methods import METHODS
from bench.tasks import MAX_SEED, TASKS, Task, get_task
from grafs.config import SearchOptions
from grafs.errors import UserError

BUILTIN_DIR = Path(__file__).with_name("campaigns")

SCALE_KEYS = {
    "search_epochs",
    "search_iterations",
    "retrain_epochs",
    "retrain_iterations",
    "proxy_epochs",
    "proxy_iterations",
}
TOP_KEYS = {
    "name",
    "description",
    "tasks",
    "seeds",
    "budget_multiples",
    "budget_unit",
    "methods",
    "fixed",
    "evaluation",
    "scale",
    "device",
    "parts",
}
EVALUATION_KEYS = {"seeds", "targets", "transfer_multiples", "top_k"}
PART_KEYS = {"name", "tasks", "seeds"}


@dataclass(frozen=True)
class MethodSpec:
    """One competitor: a registered search method and its options, under a label used in reports."""

    label: str
    method: str
    options: tuple[tuple[str, object], ...] = ()

    @property
    def is_grafs(self) -> bool:
        return self.method == "grafs"

    @property
    def is_default_grafs(self) -> bool:
        """GRAFS as published (fixed mode, every contribution on, the standard space; either cell
        implementation): the search whose cost the baselines are matched to."""
        return self.is_grafs and replace(SearchOptions(**dict(self.options)), fast=True) == SearchOptions()


PER_LAYER_SUFFIX = "-per-layer"


def retrain_variants(method: MethodSpec) -> tuple[tuple[str, bool], ...]:
    """(label, learnable betas) of each retraining of the activations ``method`` finds: the shared fixed
    betas GRAFS retrains with, and for a per-layer method (PANGAEA) also betas learned per activation site."""
    variants = ((method.label, False),)
    if METHODS.get(method.method).retrains_per_layer(dict(method.options)):
        variants += ((method.label + PER_LAYER_SUFFIX, True),)
    return variants


@dataclass(frozen=True)
class Part:
    """A share of a campaign that runs in a folder of its own: the units of its tasks and search seeds."""

    name: str
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]

    def holds(self, task: str, seed: int) -> bool:
        return task in self.tasks and seed in self.seeds


@dataclass(frozen=True)
class Campaign:
    name: str
    description: str
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    budget_multiples: tuple[float, ...]
    budget_unit: str
    methods: tuple[MethodSpec, ...]
    fixed: tuple[str, ...]
    evaluation_seeds: tuple[int, ...]
    targets: str | tuple[str, ...]  # "all" transfer targets, or an explicit list
    # Budget multiples whose black-box finds are also retrained on the transfer targets (None: every
    # multiple); the others are retrained on their search task only. GRAFS finds always transfer.
    transfer_multiples: tuple[float, ...] | None = None
    # How many of each black-box search's best distinct candidates (by proxy score) are retrained on the
    # search task: 1 retrains the incumbent only; more give the proxy-fidelity analysis its points.
    top_k: int = 1
    scale: tuple[tuple[str, int], ...] = ()
    source: str = ""
    device: str = "auto"
    parts: tuple[Part, ...] = ()  # none: the campaign runs as a whole

    def targets_of(self, task: Task) -> tuple[str, ...]:
        chosen = task.transfer if self.targets == "all" else tuple(t for t in self.targets if t in task.transfer)
        return (task.name, *chosen)

    def transfers(self, budget_multiple: float | None) -> bool:
        """Whether finds at this budget multiple (None: GRAFS, no multiple) go to the transfer targets."""
        return budget_multiple is None or self.transfer_multiples is None or budget_multiple in self.transfer_multiples

    def to_record(self) -> dict:
        """The campaign as ``campaign.json`` holds it; one without parts records none, as before parts existed."""
        record = asdict(self)
        if not self.parts:
            del record["parts"]
        return record

    @classmethod
    def from_record(cls, record: dict) -> Campaign:
        """The campaign back from its :meth:`to_record` form."""
        methods = tuple(
            MethodSpec(m["label"], m["method"], tuple((key, value) for key, value in m.get("options") or ()))
            for m in record["methods"]
        )
        targets = record.get("targets", "all")
        transfer_multiples = record.get("transfer_multiples")
        return cls(
            name=record["name"], description=record.get("description", ""), tasks=tuple(record["tasks"]),
            seeds=tuple(record["seeds"]), budget_multiples=tuple(float(m) for m in record["budget_multiples"]),
            budget_unit=record.get("budget_unit", "seconds"), methods=methods, fixed=tuple(record.get("fixed", ())),
            evaluation_seeds=tuple(record.get("evaluation_seeds", (0,))),
            targets=targets if targets == "all" else tuple(targets),
            transfer_multiples=None if transfer_multiples is None else tuple(float(m) for m in transfer_multiples),
            scale=tuple((key, value) for key, value in record.get("scale") or ()), source=record.get("source", ""),
            device=record.get("device", "auto"), top_k=record.get("top_k", 1),
            parts=tuple(Part(p["name"], tuple(p["tasks"]), tuple(p["seeds"])) for p in record.get("parts") or ()),
        )


@dataclass(frozen=True)
class SearchSpec:
    """A search: ``method`` with its ``options`` on ``task`` with ``seed``. A budgeted search spends
    ``budget_multiple`` times the cost of the GRAFS unit ``budget_from`` in ``budget_unit``, and
    ``extends`` the search of the next smaller multiple (its stored study), if any."""

    label: str
    method: str
    options: dict
    task: str
    seed: int
    budget_multiple: float | None
    budget_unit: str | None
    scale: dict
    budget_from: str | None = None
    extends: str | None = None

    kind = "search"

    def to_dict(self) -> dict:
        record = {
            "label": self.label, "method": self.method, "options": dict(self.options), "task": self.task,
            "seed": self.seed, "budget_multiple": self.budget_multiple, "budget_unit": self.budget_unit,
            "scale": dict(self.scale),
        }
        if self.budget_from is not None:
            record.update(budget_from=self.budget_from, extends=self.extends)
        return record


@dataclass(frozen=True)
class ActivationSource:
    """Where a retrained activation comes from: the genotype a search unit found (with betas learned
    per activation site or not; its incumbent, or its ``rank``-th best candidate), or a fixed activation."""

    search: str | None = None
    fixed: str | None = None
    learnable_betas: bool = False
    rank: int | None = None  # the search's rank-th best distinct candidate (None: its incumbent)

    def to_dict(self) -> dict:
        if self.fixed is not None:
            return {"fixed": self.fixed}
        record: dict = {"search": self.search}
        if self.learnable_betas:
            record["learnable_betas"] = True
        if self.rank is not None:
            record["rank"] = self.rank
        return record

    @classmethod
    def from_dict(cls, record: dict) -> ActivationSource:
        return cls(record.get("search"), record.get("fixed"), bool(record.get("learnable_betas", False)),
                   record.get("rank"))


@dataclass(frozen=True)
class RetrainSpec:
    """A retraining from scratch of an activation on ``task`` with evaluation seed ``seed``; the
    activation was searched on ``search_task`` with ``search_seed`` (None for fixed activations)."""

    label: str
    task: str
    seed: int
    activation: ActivationSource
    search_task: str
    search_seed: int | None
    budget_multiple: float | None
    scale: dict

    kind = "retrain"

    def to_dict(self) -> dict:
        return {
            "label": self.label, "task": self.task, "seed": self.seed, "activation": self.activation.to_dict(),
            "search_task": self.search_task, "search_seed": self.search_seed,
            "budget_multiple": self.budget_multiple, "scale": dict(self.scale),
        }


Spec = SearchSpec | RetrainSpec


def spec_from_dict(kind: str, record: dict) -> Spec:
    """A unit's spec back from its ``to_dict`` form (as campaign.json and unit.json hold it)."""
    if kind == "search":
        return SearchSpec(**record)
    return RetrainSpec(**{**record, "activation": ActivationSource.from_dict(record["activation"])})


@dataclass(frozen=True)
class Unit:
    """One idempotent piece of work: a search or a retraining, after the units it depends on."""

    spec: Spec = field(hash=False, compare=False)
    depends_on: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def id(self) -> str:
        canonical = json.dumps(self.spec.to_dict(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
        return f"{self.kind}-{self.spec.label}-{self.spec.task}-s{self.spec.seed}-{digest}"

    def to_record(self) -> dict:
        return {"id": self.id, "kind": self.kind, "spec": self.spec.to_dict(), "depends_on": list(self.depends_on)}

    @classmethod
    def from_record(cls, record: dict) -> Unit:
        return cls(spec_from_dict(record["kind"], record["spec"]), tuple(record.get("depends_on", ())))


# ----------------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------------
def builtin_campaigns() -> dict[str, Path]:
    return {path.stem: path for path in sorted(BUILTIN_DIR.glob("*.toml"))}


def load_campaign(name_or_path: str) -> Campaign:
    """A built-in campaign by name, or a campaign TOML file; invalid content is one clear error."""
    builtins = builtin_campaigns()
    path = builtins.get(name_or_path) or Path(name_or_path)
    if not path.is_file():
        valid = ", ".join(builtins)
        raise UserError(f"campaign {name_or_path!r} is neither a built-in campaign ({valid}) nor a TOML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"campaign file {path} cannot be read ({type(error).__name__}); pass a TOML file") from None
    try:
        data = tomllib.loads(text)
    except (ValueError, RecursionError) as error:  # TOMLDecodeError is a ValueError
        raise UserError(f"{path}: not valid TOML ({error or type(error).__name__}); fix the syntax") from None
    return parse_campaign(data, source=str(path), default_name=path.stem)


def _fail(source: str, key: str, problem: str) -> UserError:
    return UserError(f"{source}: key '{key}': {problem}")


def _check_keys(source: str, where: str, data: dict, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(source, f"{where}{unknown[0]}", f"unknown key; valid keys: {', '.join(sorted(allowed))}")


def _list_of(source: str, key: str, value: object, kind: type, allow_empty: bool = False) -> tuple:
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        kind_name = "number" if isinstance(kind, tuple) else kind.__name__
        raise _fail(source, key, f"expected a list of {kind_name}s, got {value!r}")
    if not value and not allow_empty:
        raise _fail(source, key, "must not be empty")
    return tuple(value)


def _distinct(source: str, key: str, values: tuple) -> tuple:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise _fail(source, key, f"{', '.join(repeated)} given more than once; list each once")
    return values


def _seeds(source: str, key: str, value: object) -> tuple[int, ...]:
    seeds = _distinct(source, key, _list_of(source, key, value, int))
    if any(not 0 <= seed <= MAX_SEED for seed in seeds):
        raise _fail(source, key, f"seeds must be integers from 0 to {MAX_SEED}, got {list(seeds)}")
    return seeds


def _multiples(source: str, key: str, value: object, allow_empty: bool = False) -> tuple[float, ...]:
    multiples = tuple(float(m) for m in _list_of(source, key, value, (int, float), allow_empty))
    if not all(math.isfinite(m) and m > 0 for m in multiples):
        raise _fail(source, key, f"budget multiples must be positive finite numbers, got {list(multiples)}")
    return _distinct(source, key, multiples)


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A campaign's name names its default output folder: one path component, no separators."""


def _name(source: str, data: dict, default_name: str) -> str:
    name = data.get("name", default_name)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        where = "" if "name" in data else f" (the file name {default_name!r})"
        raise _fail(source, "name", f"expected letters, digits, '.', '-' and '_', not starting with '.' or '-', "
                                    f"got {name!r}{where}; set name = \"my-campaign\"")
    return name


def _method_spec(source: str, index: int, entry: object) -> MethodSpec:
    key = f"methods[{index}]"
    if isinstance(entry, str):
        entry = {"method": entry}
    if not isinstance(entry, dict):
        raise _fail(source, key, "expected a method name or a table with 'method' and options")
    method = entry.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise _fail(source, f"{key}.method", f"unknown method {method!r}; valid choices: {', '.join(METHODS.names())}")
    if method in FIXED_ACTIVATIONS:
        raise _fail(source, f"{key}.method", f"{method!r} is a fixed activation: list it under 'fixed' instead")
    options = tuple(sorted((name, value) for name, value in entry.items() if name not in ("method", "label")))
    try:
        METHODS.get(method).parse_options(dict(options))
    except UserError as error:
        raise _fail(source, key, str(error)) from None
    label = entry.get("label", method)
    if not isinstance(label, str) or not label.replace("-", "").replace("_", "").isalnum():
        raise _fail(source, f"{key}.label", f"expected a name of letters, digits, '-' and '_', got {label!r}")
    return MethodSpec(label, method, options)


def _parts(source: str, value: object, tasks: tuple[str, ...], seeds: tuple[int, ...]) -> tuple[Part, ...]:
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise _fail(source, "parts", "expected [[parts]] tables, each with name, tasks and seeds")
    if not value:
        raise _fail(source, "parts", "must not be empty; leave 'parts' out to run the campaign as a whole")
    parts: list[Part] = []
    owner: dict[tuple[str, int], str] = {}
    for index, entry in enumerate(value):
        key = f"parts[{index}]"
        _check_keys(source, f"{key}.", entry, PART_KEYS)
        for required in ("name", "tasks", "seeds"):
            if required not in entry:
                raise _fail(source, f"{key}.{required}", "missing; every part declares name, tasks and seeds")
        name = entry["name"]
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise _fail(source, f"{key}.name", f"expected letters, digits, '.', '-' and '_', not starting with '.' "
                                               f"or '-', got {name!r}")
        if any(part.name == name for part in parts):
            raise _fail(source, f"{key}.name", f"part {name!r} is declared twice; give each part its own name")
        part_tasks = _distinct(source, f"{key}.tasks", _list_of(source, f"{key}.tasks", entry["tasks"], str))
        for task in part_tasks:
            if task not in tasks:
                raise _fail(source, f"{key}.tasks", f"{task!r} is not one of the campaign's tasks ({', '.join(tasks)})")
        part_seeds = _distinct(source, f"{key}.seeds", _list_of(source, f"{key}.seeds", entry["seeds"], int))
        for seed in part_seeds:
            if seed not in seeds:
                raise _fail(source, f"{key}.seeds",
                            f"{seed} is not one of the campaign's seeds ({', '.join(map(str, seeds))})")
        for task, seed in product(part_tasks, part_seeds):
            if (task, seed) in owner:
                raise _fail(source, "parts", f"{task} with seed {seed} is in parts {owner[task, seed]!r} and "
                                             f"{name!r}; give each task and seed to one part")
            owner[task, seed] = name
        parts.append(Part(name, part_tasks, part_seeds))
    for task, seed in product(tasks, seeds):
        if (task, seed) not in owner:
            raise _fail(source, "parts", f"{task} with seed {seed} is in no part; give every task and seed of the "
                                         "campaign to one part")
    return tuple(parts)


def parse_campaign(data: dict, source: str = "campaign", default_name: str = "campaign") -> Campaign:
    _check_keys(source, "", data, TOP_KEYS)
    for required in ("tasks", "seeds", "methods"):
        if required not in data:
            raise _fail(source, required, "missing; every campaign declares tasks, seeds and methods")
    tasks = _distinct(source, "tasks", _list_of(source, "tasks", data["tasks"], str))
    for name in tasks:
        if name not in TASKS:
            raise _fail(source, "tasks", f"unknown task {name!r}; valid choices: {', '.join(TASKS.names())}")
        if not get_task(name).transfer:
            raise _fail(source, "tasks", f"{name!r} is a transfer target, not a search task")
    seeds = _seeds(source, "seeds", data["seeds"])
    multiples = _multiples(source, "budget_multiples", data.get("budget_multiples", [1]))
    budget_unit = data.get("budget_unit", "seconds")
    if budget_unit not in BUDGET_UNITS:
        raise _fail(source, "budget_unit", f"unknown unit {budget_unit!r}; valid choices: {', '.join(BUDGET_UNITS)}")
    if not isinstance(data["methods"], list) or not data["methods"]:
        raise _fail(source, "methods", "expected a non-empty list of methods")
    methods = tuple(_method_spec(source, i, entry) for i, entry in enumerate(data["methods"]))
    labels = [label for m in methods for label, _ in retrain_variants(m)]
    if len(set(labels)) != len(labels):
        raise _fail(source, "methods", f"labels must be unique, got {labels}; give variants a 'label'")
    needs_budget = [m for m in methods if not m.is_grafs]
    if needs_budget and not any(m.is_default_grafs for m in methods):
        raise _fail(source, "methods", "black-box methods are matched to GRAFS's cost: include 'grafs' (fixed mode)")
    fixed = _distinct(source, "fixed", _list_of(source, "fixed", data.get("fixed", []), str, allow_empty=True))
    for name in fixed:
        if name not in FIXED_ACTIVATIONS:
            raise _fail(source, "fixed", f"unknown activation {name!r}; valid choices: {', '.join(FIXED_ACTIVATIONS)}")
    evaluation = data.get("evaluation", {})
    if not isinstance(evaluation, dict):
        raise _fail(source, "evaluation", "expected a table with 'seeds' and 'targets'")
    _check_keys(source, "evaluation.", evaluation, EVALUATION_KEYS)
    evaluation_seeds = _seeds(source, "evaluation.seeds", evaluation.get("seeds", [0]))
    targets = evaluation.get("targets", "all")
    if targets != "all":
        targets = _distinct(source, "evaluation.targets",
                            _list_of(source, "evaluation.targets", targets, str, allow_empty=True))
        known = {t for name in tasks for t in get_task(name).transfer}
        for target in targets:
            if target not in known:
                raise _fail(
                    source,
                    "evaluation.targets",
                    f"{target!r} is not a transfer target of the campaign's tasks; "
                    f"valid choices: {', '.join(sorted(known))}",
                )
    transfer_multiples = None
    if "transfer_multiples" in evaluation:
        transfer_multiples = _multiples(source, "evaluation.transfer_multiples", evaluation["transfer_multiples"],
                                        allow_empty=True)
        for multiple in transfer_multiples:
            if multiple not in multiples:
                raise _fail(source, "evaluation.transfer_multiples",
                            f"{multiple:g} is not one of the budget multiples {', '.join(f'{m:g}' for m in multiples)}")
    top_k = evaluation.get("top_k", 1)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise _fail(source, "evaluation.top_k", f"expected a positive integer, got {top_k!r}")
    scale = data.get("scale", {})
    if not isinstance(scale, dict):
        raise _fail(source, "scale", "expected a table of shortened lengths")
    _check_keys(source, "scale.", scale, SCALE_KEYS)
    for key, value in scale.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(source, f"scale.{key}", f"expected a positive integer, got {value!r}")
    name = _name(source, data, default_name)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail(source, "description", f"expected a string, got {description!r}")
    device = data.get("device", "auto")
    if not isinstance(device, str):
        raise _fail(source, "device", "expected auto, cpu or cuda")
    parts = _parts(source, data["parts"], tasks, seeds) if "parts" in data else ()
    return Campaign(
        name=name,
        description=description,
        tasks=tasks,
        seeds=seeds,
        budget_multiples=multiples,
        budget_unit=budget_unit,
        methods=methods,
        fixed=fixed,
        evaluation_seeds=evaluation_seeds,
        targets=targets,
        transfer_multiples=transfer_multiples,
        top_k=top_k,
        scale=tuple(sorted(scale.items())),
        source=source,
        device=device,
        parts=parts,
    )


# ----------------------------------------------------------------------------------------------
# Scaling and expansion
# ----------------------------------------------------------------------------------------------
def expand(campaign: Campaign) -> list[Unit]:
    """Every unit of the campaign, each after the units it depends on."""
    scale = dict(campaign.scale)
    units: list[Unit] = []
    for task_name in campaign.tasks:
        task = get_task(task_name)
        targets = campaign.targets_of(task)
        for seed in campaign.seeds:
            grafs_units = {
                method.label: Unit(_search_spec(method, task_name, seed, campaign, scale))
                for method in campaign.methods
                if method.is_grafs
            }
            units += grafs_units.values()
            reference = next((grafs_units[m.label] for m in campaign.methods if m.is_default_grafs), None)
            searches = [(m, grafs_units[m.label]) for m in campaign.methods if m.is_grafs]
            for method in campaign.methods:
                if method.is_grafs:
                    continue
                # A budget ladder: the search at k x GRAFS's cost resumes the one at the next smaller
                # multiple (its stored study) instead of replaying the same candidates from scratch.
                previous = None
                for multiple in sorted(campaign.budget_multiples):
                    spec = _search_spec(method, task_name, seed, campaign, scale, multiple, reference.id,
                                        previous.id if previous else None)
                    depends = (reference.id,) if previous is None else (reference.id, previous.id)
                    unit = Unit(spec, depends_on=depends)
                    searches.append((method, unit))
                    units.append(unit)
                    previous = unit
            for method, search in searches:
                multiple = search.spec.budget_multiple
                evaluated = targets if campaign.transfers(multiple) else (task_name,)
                for label, learnable_betas in retrain_variants(method):
                    activation = ActivationSource(search=search.id, learnable_betas=learnable_betas)
                    units += _retrainings(
                        campaign, label, activation, task_name, evaluated, seed, multiple, scale,
                        depends_on=(search.id,),
                    )
                units += _runner_up_retrainings(campaign, method, search, task_name, seed, scale)
        for name in campaign.fixed:
            units += _retrainings(campaign, name, ActivationSource(fixed=name), task_name, targets, None, None, scale)
    return _unique(units)


def block_of(campaign: Campaign, unit: Unit) -> tuple[str, int]:
    """The (search task, search seed) a unit belongs to. A fixed activation is retrained once per search
    task, with no search seed: its retrainings go with the campaign's first seed."""
    spec = unit.spec
    if isinstance(spec, SearchSpec):
        return spec.task, spec.seed
    return spec.search_task, campaign.seeds[0] if spec.search_seed is None else spec.search_seed


def get_part(campaign: Campaign, name: str) -> Part:
    if not campaign.parts:
        raise UserError(f"campaign {campaign.name!r} declares no parts; run it without --part, or declare "
                        "[[parts]] in its file")
    for part in campaign.parts:
        if part.name == name:
            return part
    valid = ", ".join(part.name for part in campaign.parts)
    raise UserError(f"campaign {campaign.name!r} has no part {name!r}; valid choices: {valid}")


def units_of_part(campaign: Campaign, name: str) -> list[Unit]:
    """The units of part ``name`` in expansion order. They depend only on each other: a search, the black-box
    searches matched to it and every retraining of their finds share its task and seed."""
    part = get_part(campaign, name)
    return [unit for unit in expand(campaign) if part.holds(*block_of(campaign, unit))]


def _retrainings(
    campaign: Campaign, label: str, activation: ActivationSource, search_task: str, targets: tuple[str, ...],
    search_seed: int | None, multiple: float | None, scale: dict, depends_on: tuple[str, ...] = (),
) -> list[Unit]:
    """Retraining an activation from scratch on the search task and each target, for every evaluation seed."""
    return [
        Unit(RetrainSpec(label, target, evaluation_seed, activation, search_task, search_seed, multiple, scale),
             depends_on=depends_on)
        for target in targets
        for evaluation_seed in campaign.evaluation_seeds
    ]


def _runner_up_retrainings(
    campaign: Campaign, method: MethodSpec, search: Unit, task: str, seed: int, scale: dict
) -> list[Unit]:
    """The candidates ranked 2..top_k by a black-box search's proxy score, retrained on the search task.
    Only the largest budget's search: under the budget ladder its study holds every smaller one's."""
    multiple = search.spec.budget_multiple
    if method.is_grafs or multiple != max(campaign.budget_multiples):
        return []
    return [
        unit
        for rank in range(2, campaign.top_k + 1)
        for unit in _retrainings(campaign, method.label, ActivationSource(search=search.id, rank=rank), task,
                                 (task,), seed, multiple, scale, depends_on=(search.id,))
    ]


def _search_spec(
    method: MethodSpec, task: str, seed: int, campaign: Campaign, scale: dict, multiple: float | None = None,
    budget_from: str | None = None, extends: str | None = None,
) -> SearchSpec:
    budget_unit = None if method.is_grafs else campaign.budget_unit
    return SearchSpec(method.label, method.method, dict(method.options), task, seed, multiple, budget_unit, scale,
                      budget_from, extends)


def _unique(units: list[Unit]) -> list[Unit]:
    # A transfer target shared by two search tasks gives the same fixed-activation retraining twice.
    seen, unique = set(), []
    for unit in units:
        if unit.id not in seen:
            seen.add(unit.id)
            unique.append(unit)
    return unique
