import json
from dataclasses import replace
from itertools import product

import pytest

from bench.campaign import Campaign, Part, builtin_campaigns, expand, load_campaign, parse_campaign, units_of_part
from grafs.errors import UserError

VALID = {
    "name": "t",
    "tasks": ["digits-vit"],
    "seeds": [0, 1],
    "methods": ["grafs", "random", {"method": "grafs", "label": "grafs-reference", "mode": "reference"}],
    "fixed": ["relu"],
    "budget_multiples": [1, 2],
    "evaluation": {"seeds": [0], "targets": ["digits-vit-mini"]},
}


def test_builtin_campaigns_load_and_expand():
    assert {"quick", "cpu", "paper"} <= set(builtin_campaigns())
    for name in builtin_campaigns():
        campaign = load_campaign(name)
        units = expand(campaign)
        assert len({u.id for u in units}) == len(units)
    cpu = load_campaign("cpu")
    assert len(cpu.seeds) >= 5 and set(cpu.budget_multiples) >= {1, 2, 4}
    assert {"grafs", "grafs-reference"} <= {m.label for m in cpu.methods}


def test_expansion_orders_dependencies_and_ids_are_stable():
    campaign = parse_campaign(VALID)
    units = expand(campaign)
    position = {u.id: i for i, u in enumerate(units)}
    for unit in units:
        assert all(position[dep] < position[unit.id] for dep in unit.depends_on)
    searches = [u for u in units if u.kind == "search"]
    assert len(searches) == 2 * (2 + 2)  # seeds x (two GRAFS variants + random at two multiples)
    random_search = next(u for u in searches if u.spec.method == "random")
    grafs = next(u for u in searches if u.id == random_search.depends_on[0])
    assert grafs.spec.label == "grafs" and grafs.spec.seed == random_search.spec.seed
    ladder = [u for u in searches if u.spec.method == "random" and u.spec.seed == 0]
    assert [u.spec.budget_multiple for u in ladder] == [1.0, 2.0]
    assert ladder[1].spec.extends == ladder[0].id and ladder[0].id in ladder[1].depends_on
    retrains = [u for u in units if u.kind == "retrain"]
    assert len(retrains) == len(searches) * 2 + 1 * 2  # each found + each fixed, on task + target
    assert [u.id for u in expand(parse_campaign(VALID))] == [u.id for u in units]


def test_only_the_named_budget_multiples_transfer():
    campaign = parse_campaign({**VALID, "evaluation": {**VALID["evaluation"], "transfer_multiples": [2]}})
    retrains = [u for u in expand(campaign) if u.kind == "retrain"]
    on_target = {(u.spec.label, u.spec.budget_multiple) for u in retrains if u.spec.task == "digits-vit-mini"}
    assert on_target == {("grafs", None), ("grafs-reference", None), ("random", 2.0), ("relu", None)}
    on_task = {(u.spec.label, u.spec.budget_multiple) for u in retrains if u.spec.task == "digits-vit"}
    assert ("random", 1.0) in on_task
    assert len(retrains) == 2 * (4 + 3) + 2  # every find on its task, three per seed on the target, relu twice


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tasks": ["nope"]}, "key 'tasks': unknown task 'nope'; valid choices: .*digits-vit"),
        ({"tasks": ["digits-vit-mini"]}, "transfer target, not a search task"),
        ({"seeds": [0, 0]}, "key 'seeds'"),
        ({"seeds": "0"}, "expected a list of ints"),
        ({"methods": ["grafs", "annealing"]}, r"key 'methods\[1\].method': unknown method 'annealing'; valid choices"),
        ({"methods": ["random"]}, "include 'grafs'"),
        ({"methods": [{"method": "grafs", "mode": "sloppy"}]}, "unknown search mode 'sloppy'"),
        ({"methods": [{"method": "grafs", "warmstart": "yes"}]},
         r"methods\[0\]': option 'warmstart' of method 'grafs' must be a bool"),
        ({"methods": ["grafs", {"method": ["random"]}]}, r"methods\[1\].method': unknown method \['random'\]"),
        ({"methods": ["grafs", {"method": "random", "population": 4}]}, "'population' does not apply to method"),
        ({"methods": ["grafs", {"method": "random", "proxy_fraction": 1.5}]}, r"proxy fraction must lie in \(0, 1\]"),
        ({"fixed": ["swish"]}, "key 'fixed': unknown activation 'swish'"),
        ({"methods": ["grafs", "relu"]}, "fixed activation: list it under 'fixed'"),
        ({"budget_multiples": [0]}, "budget multiples must be positive"),
        ({"budget_unit": "hours"}, "unknown unit 'hours'"),
        ({"evaluation": {"targets": ["pydoc-gpt-micro"]}}, "not a transfer target of the campaign's tasks"),
        ({"evaluation": {"seeds": [0], "repeats": 3}}, r"key 'evaluation.repeats': unknown key"),
        ({"evaluation": {"transfer_multiples": [3]}}, r"evaluation.transfer_multiples': 3 is not one of the budget"),
        ({"colour": "red"}, "key 'colour': unknown key; valid keys"),
        ({"scale": {"search_epochs": 0}}, "positive integer"),
    ],
)
def test_invalid_campaigns_name_file_key_and_choices(tmp_path, change, message):
    data = {**VALID, **change}
    with pytest.raises(UserError, match=message) as error:
        parse_campaign(data, source="my.toml")
    assert str(error.value).startswith("my.toml: key ")
    assert "\n" not in str(error.value)


def test_campaign_files_are_read_and_checked(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("tasks = [\n")
    with pytest.raises(UserError, match="bad.toml: not valid TOML"):
        load_campaign(str(bad))
    with pytest.raises(UserError, match="neither a built-in campaign"):
        load_campaign("no-such-campaign")


PARTS = [{"name": "s0", "tasks": ["digits-vit"], "seeds": [0]}, {"name": "s1", "tasks": ["digits-vit"], "seeds": [1]}]
SPLIT = {  # two tasks, three seeds, in three uneven parts
    **VALID,
    "tasks": ["digits-vit", "mnist1d-resnet1d"],
    "seeds": [0, 1, 2],
    "evaluation": {"seeds": [0, 1], "targets": "all", "transfer_multiples": [2], "top_k": 2},
    "parts": [
        {"name": "vit-early", "tasks": ["digits-vit"], "seeds": [0, 1]},
        {"name": "vit-late", "tasks": ["digits-vit"], "seeds": [2]},
        {"name": "mnist1d", "tasks": ["mnist1d-resnet1d"], "seeds": [2, 0, 1]},
    ],
}


def test_parts_are_parsed_and_recorded():
    campaign = parse_campaign({**VALID, "parts": PARTS})
    assert campaign.parts == (Part("s0", ("digits-vit",), (0,)), Part("s1", ("digits-vit",), (1,)))
    assert Campaign.from_record(json.loads(json.dumps(campaign.to_record()))) == campaign
    whole = parse_campaign(VALID)
    assert "parts" not in whole.to_record() and Campaign.from_record(whole.to_record()) == whole
    assert [u.id for u in expand(campaign)] == [u.id for u in expand(whole)]  # parts do not change the units


def test_the_parts_partition_the_units_and_each_part_is_closed():
    campaign = parse_campaign(SPLIT)
    units = expand(campaign)
    parts = {part.name: units_of_part(campaign, part.name) for part in campaign.parts}
    ids = [unit.id for part in parts.values() for unit in part]
    assert sorted(ids) == sorted(unit.id for unit in units)  # each unit in exactly one part
    for name, part in parts.items():
        own = {unit.id for unit in part}
        assert all(dep in own for unit in part for dep in unit.depends_on), name
        assert [unit.id for unit in units if unit.id in own] == [unit.id for unit in part]  # expansion order
    fixed = [unit for unit in units if unit.kind == "retrain" and unit.spec.activation.fixed]
    assert {unit.id for unit in fixed if unit.spec.search_task == "digits-vit"} <= {u.id for u in parts["vit-early"]}
    assert not any(unit.spec.activation.fixed for unit in parts["vit-late"] if unit.kind == "retrain")
    assert {unit.spec.seed for unit in parts["vit-late"] if unit.kind == "search"} == {2}


@pytest.mark.parametrize("name", sorted(builtin_campaigns()))
def test_the_units_of_every_task_and_seed_of_a_builtin_campaign_depend_only_on_each_other(name):
    # The finest parts there are: any coarser part is a union of these, so it is closed too.
    campaign = load_campaign(name)
    campaign = replace(campaign, parts=tuple(Part(f"{task}-{seed}", (task,), (seed,))
                                             for task, seed in product(campaign.tasks, campaign.seeds)))
    units = expand(campaign)
    seen: set[str] = set()
    for part in campaign.parts:
        own = {unit.id for unit in units_of_part(campaign, part.name)}
        assert own and not own & seen
        assert all(dep in own for unit in units if unit.id in own for dep in unit.depends_on), part.name
        seen |= own
    assert seen == {unit.id for unit in units}


def test_a_part_is_named_among_the_campaigns_parts():
    with pytest.raises(UserError, match="campaign 't' declares no parts; run it without --part"):
        units_of_part(parse_campaign(VALID), "s0")
    with pytest.raises(UserError, match="campaign 't' has no part 's2'; valid choices: s0, s1"):
        units_of_part(parse_campaign({**VALID, "parts": PARTS}), "s2")


def _part(index: int, **changes) -> list[dict]:
    parts = [dict(part) for part in PARTS]
    parts[index].update(changes)
    return parts


@pytest.mark.parametrize(
    "parts, message",
    [
        (PARTS[:1], "key 'parts': digits-vit with seed 1 is in no part; give every task and seed"),
        (_part(1, seeds=[0, 1]), "key 'parts': digits-vit with seed 0 is in parts 's0' and 's1'; give each"),
        (_part(0, tasks=["mnist1d-resnet1d"]),
         r"key 'parts\[0\].tasks': 'mnist1d-resnet1d' is not one of the campaign's tasks \(digits-vit\)"),
        (_part(1, seeds=[1, 7]), r"key 'parts\[1\].seeds': 7 is not one of the campaign's seeds \(0, 1\)"),
        (_part(1, name="s0"), r"key 'parts\[1\].name': part 's0' is declared twice"),
        (_part(0, name="../up"), r"key 'parts\[0\].name': expected letters, digits"),
        (_part(0, name=3), r"key 'parts\[0\].name': expected letters"),
        (_part(0, seeds="0"), r"key 'parts\[0\].seeds': expected a list of ints"),
        (_part(0, seeds=[True]), r"key 'parts\[0\].seeds': expected a list of ints"),
        (_part(0, seeds=[0, 0]), r"key 'parts\[0\].seeds': 0 given more than once"),
        (_part(0, tasks=[]), r"key 'parts\[0\].tasks': must not be empty"),
        (_part(0, workers=2), r"key 'parts\[0\].workers': unknown key; valid keys: name, seeds, tasks"),
        ([{"name": "all", "tasks": ["digits-vit"]}], r"key 'parts\[0\].seeds': missing"),
        ([], "key 'parts': must not be empty"),
        (PARTS[0], r"key 'parts': expected \[\[parts\]\] tables"),
        (["s0"], r"key 'parts': expected \[\[parts\]\] tables"),
    ],
)
def test_invalid_parts_name_the_key_the_task_seed_and_parts(parts, message):
    with pytest.raises(UserError, match=message) as error:
        parse_campaign({**VALID, "parts": parts}, source="my.toml")
    assert str(error.value).startswith("my.toml: key ") and "\n" not in str(error.value)
