"""The quality audit's pure rules, without a database: thresholds and statuses."""
import importlib.util
import os

import ansible.module_utils
import pytest

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if os.path.join(PROJECT, "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(os.path.join(PROJECT, "module_utils"))
_spec = importlib.util.spec_from_file_location("qdb_audit", os.path.join(PROJECT, "library", "ohlcv_quality_audit.py"))
audit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit)


@pytest.mark.parametrize("count, limits, status", [
    (0, {"warn": 1, "fail": 50}, "ok"),
    (1, {"warn": 1, "fail": 50}, "warn"),
    (49, {"warn": 1, "fail": 50}, "warn"),
    (50, {"warn": 1, "fail": 50}, "fail"),
    (10 ** 6, {"warn": 1, "fail": None}, "warn"),      # a null limit never applies
    (3, {"warn": None, "fail": None}, "ok"),
    (0, {"warn": 0, "fail": None}, "warn"),            # warn: 0 reports every run
])
def test_status_from_count_and_limits(count, limits, status):
    assert audit.status_of(count, limits) == status


def test_every_check_has_default_limits():
    assert set(audit.DEFAULT_THRESHOLDS) == set(audit.CHECKS)
    assert len(audit.CHECKS) == 14


@pytest.mark.parametrize("thresholds", [{}, {"duplicates": {"warn": 1}}, {"missing_sessions": {"warn": 1, "fail": None}},
                                        {"stale_regions": {"fail": 0}}])
def test_good_thresholds(thresholds):
    assert audit.threshold_problem(thresholds) is None


@pytest.mark.parametrize("thresholds, named", [
    ({"missing_sessions": 5}, "thresholds.missing_sessions"),
    ({"duplicates": {"warn": "x"}}, "thresholds.duplicates"),
    ({"duplicates": {"warn": -1}}, "thresholds.duplicates"),
    ({"duplicates": {"warn": True}}, "thresholds.duplicates"),
    ({"duplicates": {"warning": 1}}, "thresholds.duplicates"),
    ({"duplicates": {"fail": 1.5}}, "thresholds.duplicates"),
])
def test_bad_thresholds_are_named(thresholds, named):
    assert named in audit.threshold_problem(thresholds)
