"""The table of options: every Request field has its option, every command its options once,
and the choices the table offers are the ones the engine knows."""

from __future__ import annotations

import dataclasses

import pytest

from jaccli.options import _GROUPS, COMPUTING, FIXED, OPTIONS, PRESETS, STRATEGIES, options_of
from jaccli.request import Request

FILLED_ELSEWHERE = {"function.callable", "compute.points"}
"""The API's callable, and the --points group the parse builds from points.* fields."""


def test_every_field_of_the_request_is_filled_by_an_option() -> None:
    fields = {
        f"{group}.{field.name}"
        for group, kind in _GROUPS.items()
        for field in dataclasses.fields(kind)
    }
    filled = {field for option in OPTIONS for field in option.fields}
    assert filled <= fields, filled - fields
    assert fields - filled == FILLED_ELSEWHERE
    assert {field.name for field in dataclasses.fields(Request)} == {"command", *_GROUPS} - {
        "points"
    }


@pytest.mark.parametrize("command", [*COMPUTING, PRESETS])
def test_each_command_takes_each_option_once(command: str) -> None:
    flags = [flag for option in options_of(command) for flag in option.flags]
    assert len(flags) == len(set(flags))
    fields = [field for option in options_of(command) for field in option.fields]
    assert len(fields) == len(set(fields))
    assert not set(fields) & set(FIXED.get(command, {}))


def test_the_strategies_offered_are_the_engines() -> None:
    from jaccli.engine import Strategy

    assert tuple(strategy.value for strategy in Strategy) == STRATEGIES
