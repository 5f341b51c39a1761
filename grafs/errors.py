"""The one exception type for problems a user can cause and fix."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(ValueError):
    """A bad name, value, path or file supplied by the user.

    The message is a single line that says what was wrong and how to fix it;
    command-line front ends print it and exit with status 2, without a traceback.
    """


def unknown_name(kind: str, name: object, choices: Iterable[str]) -> UserError:
    """The error for a name that is not one of ``choices``, listing the valid ones."""
    valid = ", ".join(sorted(choices))
    return UserError(f"unknown {kind} {name!r}; valid choices: {valid}")


class Diverged(Exception):
    """Non-finite losses or gradients that a run cannot recover from.

    Searches and trainings stop and report the status ``diverged`` (with this message) instead
    of raising further: a diverged run is a result, not a crash.
    """
