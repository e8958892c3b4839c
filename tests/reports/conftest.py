"""Fixtures for the report tests: one fixture store and one built report per session (they are read-only).

The fixture store builder lives in reports_fixture.py (put on sys.path here, as the ablation tests do).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from reports_fixture import build_fixture_store  # noqa: E402


@pytest.fixture(scope="session")
def fixture_store(tmp_path_factory) -> Path:
    return build_fixture_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="session")
def store_data(fixture_store):
    from reports.load import open_store
    return open_store(fixture_store)


@pytest.fixture(scope="session")
def built_report(fixture_store, tmp_path_factory) -> dict[str, Path]:
    from reports import build_report
    return build_report(fixture_store, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="session")
def built_claims(fixture_store, tmp_path_factory) -> dict[str, Path]:
    from reports import build_claims
    return build_claims(fixture_store, tmp_path_factory.mktemp("claims"), formats=("md", "html", "csv"))
