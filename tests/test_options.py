"""Each method's options are declared once: the command line, campaign checks and result records agree."""

from dataclasses import asdict, fields

import pytest

from bench.campaign import parse_campaign
from bench.cli import build_parser
from bench.methods import METHODS, create_searcher
from bench.options import flag, given_options, option_fields
from grafs.errors import UserError

BASE = {"tasks": ["mnist1d-resnet1d"], "seeds": [0], "fixed": [], "evaluation": {"targets": []}}


def campaign_options(method: str, options: dict) -> dict:
    entry = {"method": method, "label": "x", **options}
    methods = ["grafs", entry] if method != "grafs" else [entry]
    spec = next(m for m in parse_campaign({**BASE, "methods": methods}).methods if m.label == "x")
    return dict(spec.options)


def cli_options(method: str, argv: list[str]) -> dict:
    args = build_parser().parse_args(["search", "--task", "mnist1d-resnet1d", "--method", method, *argv])
    return given_options(args, args.option_names)


@pytest.mark.parametrize("name", [name for name in METHODS if METHODS.get(name).options.__dataclass_fields__])
def test_every_option_has_a_flag_and_campaign_key_with_the_same_meaning(name):
    method = METHODS.get(name)
    for option in option_fields(method.options):
        assert option.help, f"{name}.{option.name} has no help text"
        if option.kind is bool:
            value, argv = (not option.default), [flag(option)]
        elif option.choices:
            value = next(choice for choice in option.choices if choice != option.default)
            argv = [flag(option), value]
        else:
            value = (option.default or 1) * 2 if option.kind is int else 0.5
            argv = [flag(option), str(value)]
        if name == "regularized-evolution" and option.name == "sample_size":
            value, argv = 3, [flag(option), "3"]
        from_cli = method.parse_options(cli_options(name, argv))
        from_campaign = method.parse_options(campaign_options(name, {option.name: value}))
        assert from_cli == from_campaign and getattr(from_cli, option.name) == value


def test_a_whole_number_where_a_fraction_goes_is_accepted_alike():
    random = METHODS.get("random")
    assert random.parse_options(campaign_options("random", {"proxy_fraction": 1})).proxy_fraction == 1.0
    assert random.parse_options(cli_options("random", ["--proxy-fraction", "1"])).proxy_fraction == 1.0
    with pytest.raises(UserError, match=r"proxy fraction must lie in \(0, 1\]"):
        cli = cli_options("random", ["--proxy-fraction", "1.5"])
        random.parse_options(cli)
    with pytest.raises(UserError, match="must be a finite number"):
        random.parse_options({"proxy_fraction": float("nan")})


def test_a_search_result_records_its_options_as_declared():
    grafs = create_searcher("grafs", mode="reference")
    assert grafs.options == METHODS.get("grafs").parse_options({"mode": "reference"})
    searcher = create_searcher("pangaea", population=4, offspring=2)
    assert set(searcher.config) == {"sampler"} | {f.name for f in fields(METHODS.get("pangaea").options)}
    assert searcher.config == {"sampler": "pangaea", **asdict(searcher.options)}


def test_an_option_of_another_method_is_one_clear_error():
    with pytest.raises(UserError, match="option 'population' does not apply to method 'random'; its options: "):
        create_searcher("random", population=4)
    with pytest.raises(UserError, match="option 'population' of method 'pangaea' must be a int"):
        create_searcher("pangaea", population="4")
