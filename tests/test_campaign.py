import pytest

from bench.campaign import builtin_campaigns, expand, load_campaign, parse_campaign
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
