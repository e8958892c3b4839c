"""genlib.lazy: the one implementation of lazy package exports (ablations, reports, genlib.metrics use it)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import ablations
import genlib.metrics
import reports
from genlib import lazy


def test_a_name_is_imported_on_first_use_and_bound_in_the_package():
    code = ("import sys, reports\n"
            "assert 'reports.load' not in sys.modules\n"
            "from reports.load import open_store\n"
            "assert reports.open_store is open_store and 'open_store' in vars(reports)\n"
            "assert 'open_store' in dir(reports)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_first_is_imported_before_any_export():
    code = ("import sys, genlib.metrics as m\n"
            "assert 'genlib.metrics.evaluate' not in sys.modules\n"
            "m.MetricsConfig\n"
            "assert 'genlib.metrics.evaluate' in sys.modules and callable(m.evaluate)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("package", [ablations, reports, genlib.metrics])
def test_unknown_names_are_attribute_errors_naming_the_package(package):
    with pytest.raises(AttributeError, match=rf"^module '{package.__name__}' has no attribute 'nope'$"):
        package.nope  # noqa: B018
    assert package.__getattr__.__module__ == lazy.__name__
