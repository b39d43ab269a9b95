"""Defaults that depend on other keys are filled at parsing; validation only reads the config it checks."""

from __future__ import annotations

import copy

from lead_dist.config import config_from_dict, validate


def test_parsing_fills_mode_and_candidates_and_validate_changes_nothing() -> None:
    raw = {"data": {"train": "shards"}, "student": {"path": "s"}, "teacher": {"path": "t", "kind": "ce"}}
    config = config_from_dict(raw)
    assert (config.mode, config.teacher.candidates, config.student.candidates) == ("lead", "group", "global")
    warmup = config_from_dict({"stage": "warmup", "data": {"train": "x"}, "model": {"path": "m"}})
    assert (warmup.mode, warmup.model.candidates) == (None, "global")
    for checked in (config, warmup):
        before = copy.deepcopy(checked)
        validate(checked)
        assert checked == before
