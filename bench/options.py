"""Method options as frozen dataclasses: one declaration per method, from which everything else derives.

A method's options class gives each option its type, default and (in the field's metadata) its
``help`` text and ``choices``; its ``__post_init__`` checks values that depend on each other.
From that one declaration come the checks of campaign files and keyword arguments
(:func:`parse_options`), the command line's flags (:func:`add_option_flags`) and the ``config``
of a result record (``dataclasses.asdict``).
"""

from __future__ import annotations

import argparse
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

from grafs.errors import UserError


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none (a fixed activation)."""


@dataclass(frozen=True)
class OptionField:
    name: str
    kind: type  # bool, int, float or str
    optional: bool  # None is a valid value
    default: Any
    help: str
    choices: tuple[str, ...] | None


def option_fields(options: type) -> list[OptionField]:
    """The declared options of an options class, in declaration order."""
    hints = typing.get_type_hints(options)
    declared = []
    for item in fields(options):
        kind, optional = hints[item.name], False
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            members = [arg for arg in typing.get_args(kind) if arg is not type(None)]
            kind, optional = members[0], True
        default = item.default if item.default is not MISSING else None
        choices = item.metadata.get("choices")
        declared.append(OptionField(item.name, kind, optional, default, item.metadata.get("help", ""),
                                    tuple(choices) if choices else None))
    return declared


def _checked(option: OptionField, value: object, owner: str) -> object:
    """``value`` as the option's type; a value of another type is one clear error."""
    if value is None and option.optional:
        return None
    kind = option.kind
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise UserError(f"option {option.name!r} of {owner} must be a finite number, got {value!r}")
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise UserError(f"option {option.name!r} of {owner} must be a {kind.__name__}, got {value!r}")
    return value


def parse_options(options: type, values: Mapping[str, object], owner: str) -> Any:
    """An instance of the options class ``options`` from ``values``; unknown names, values of the
    wrong type and invalid combinations are one clear error each, naming ``owner``."""
    declared = {option.name: option for option in option_fields(options)}
    for name in values:
        if name not in declared:
            valid = ", ".join(declared) or "none"
            raise UserError(f"option {name!r} does not apply to {owner}; its options: {valid}")
    return options(**{name: _checked(declared[name], value, owner) for name, value in values.items()})


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------
def flag(option: OptionField) -> str:
    """A switch that is on by default is turned off with ``--no-<name>``; every other option is ``--<name>``."""
    name = option.name.replace("_", "-")
    return f"--no-{name}" if option.kind is bool and option.default is True else f"--{name}"


def _parser(kind: type, name: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def add_option_flags(group, owners: Iterable[tuple[str, type]]) -> list[str]:
    """One flag per option name declared by any of ``owners`` ((method, options class) pairs); its help
    names the methods that take it. Every flag defaults to None: "not given", the method's default applies.
    Returns the option names, for :func:`given_options`."""
    users: dict[str, list[str]] = {}
    first: dict[str, OptionField] = {}
    for method, options in owners:
        for option in option_fields(options):
            first.setdefault(option.name, option)
            users.setdefault(option.name, []).append(method)
    for name, option in first.items():
        methods = users[name]
        scope = methods[0] if len(methods) == 1 else ", ".join(methods)
        text = f"{option.help} [{scope}]"
        if option.kind is bool:
            text = f"turn off: {text}" if option.default else text
            group.add_argument(flag(option), dest=name, action="store_const", const=not option.default,
                               default=None, help=text)
        else:
            default = "" if option.default is None else f" (default {option.default})"
            group.add_argument(flag(option), dest=name, type=_parser(option.kind, name), default=None,
                               choices=option.choices, metavar=option.name.upper(), help=text + default)
    return list(first)


def given_options(args: argparse.Namespace, names: Iterable[str]) -> dict[str, object]:
    """The options given on the command line (flags left out are not passed: the method's defaults apply)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}
