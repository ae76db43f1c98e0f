"""Every experiment kind's page documents every one of its parameters, as `simcim info --kind` does."""

from __future__ import annotations

import dataclasses

import pytest

from simcim.experiments.docs import DOCS_DIR, KIND_PAGES, check_page, params_table
from simcim.experiments.kinds import KINDS, kind_module


def test_every_kind_has_a_page():
    assert set(KIND_PAGES) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_page_holds_the_current_parameter_table(kind):
    assert check_page(kind) is None, check_page(kind)
    page = (DOCS_DIR / KIND_PAGES[kind]).read_text(encoding="utf-8")
    for f in dataclasses.fields(kind_module(kind).Params):
        assert f"`{f.name}`" in page


def test_a_changed_help_text_makes_the_page_out_of_date(monkeypatch):
    module = kind_module("selftest")
    field = next(f for f in dataclasses.fields(module.Params) if f.name == "x")
    monkeypatch.setattr(field, "metadata", {**field.metadata, "help": "something else"})
    assert "something else" in params_table("selftest")
    assert "out of date" in check_page("selftest")
