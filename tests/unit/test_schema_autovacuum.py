"""The schema role's autovacuum storage parameters (issue 16): schema_autovacuum_settings and
schema_autovacuum_tables are checked by the role's validate.yml before anything changes (only
autovacuum parameters, numbers or a boolean or null, scale factors 0 to 1, plain table names,
since both end up in ALTER TABLE), and the defaults hold the documented rule. The ALTER itself
(read first, change only what differs) runs against a live server in the Molecule scenarios."""
import os
import sys

import pytest
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from role_cases import PROJECT, case_verdicts  # noqa: E402

REFUSED = {
    "unknown_key": {"schema_autovacuum_settings": {"fillfactor": 70}},
    "scale_factor_above_1": {"schema_autovacuum_settings": {"autovacuum_vacuum_scale_factor": 2}},
    "negative_scale_factor": {"schema_autovacuum_settings": {"autovacuum_analyze_scale_factor": -0.1}},
    "enabled_not_boolean": {"schema_autovacuum_settings": {"autovacuum_enabled": 1}},
    "threshold_as_text": {"schema_autovacuum_settings": {"autovacuum_vacuum_threshold": "1000); DROP TABLE x; --"}},
    "boolean_threshold": {"schema_autovacuum_settings": {"autovacuum_vacuum_threshold": True}},
    "table_with_sql": {"schema_autovacuum_tables": ["ohlcv_data; DROP TABLE tickers"]},
    "qualified_table": {"schema_autovacuum_tables": ["public.ohlcv_data"]},
}
ACCEPTED = {
    "defaults": {},
    "reset_with_null": {"schema_autovacuum_settings": {"autovacuum_vacuum_scale_factor": None}},
    "enabled_false_and_threshold": {"schema_autovacuum_settings": {"autovacuum_enabled": False,
                                                                    "autovacuum_vacuum_threshold": 5000}},
    "other_tables": {"schema_autovacuum_tables": ["ohlcv_data", "ohlcv_quarantine"]},
    "nothing": {"schema_autovacuum_tables": [], "schema_autovacuum_settings": {}},
}
CASE = """
    - name: Validate
      ansible.builtin.include_role:
        name: schema
        tasks_from: validate.yml
      vars:
        __defaults: "{{ lookup('ansible.builtin.file', '%s/roles/schema/defaults/main.yml') | from_yaml }}"
        schema_autovacuum_settings: "{{ case.value.schema_autovacuum_settings | default(__defaults.schema_autovacuum_settings) }}"
        schema_autovacuum_tables: "{{ case.value.schema_autovacuum_tables | default(__defaults.schema_autovacuum_tables) }}"
""" % PROJECT


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    return case_verdicts(tmp_path_factory.mktemp("autovacuum"), CASE, dict(REFUSED, **ACCEPTED))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_naming_the_variable(verdicts, name):
    assert verdicts[name] != "accepted", "%s was accepted: %r" % (name, REFUSED[name])
    assert "schema_autovacuum_" in verdicts[name], verdicts[name]


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted(verdicts, name):
    assert verdicts[name] == "accepted", verdicts[name]


def test_defaults_are_the_documented_rule():
    with open(os.path.join(PROJECT, "roles", "schema", "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)
    assert defaults["schema_autovacuum_tables"] == ["ohlcv_data", "technical_analysis", "factor_scores"]
    assert defaults["schema_autovacuum_settings"] == {"autovacuum_analyze_scale_factor": 0.002,
                                                      "autovacuum_vacuum_insert_scale_factor": 0.02,
                                                      "autovacuum_vacuum_scale_factor": 0.01}
    with open(os.path.join(PROJECT, "roles", "schema", "meta", "argument_specs.yml")) as handle:
        spec = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    assert spec["schema_autovacuum_settings"]["default"] == defaults["schema_autovacuum_settings"]
    assert spec["schema_autovacuum_tables"]["default"] == defaults["schema_autovacuum_tables"]
    # On a full 1-year chunk of 2,500 tickers (about 625,000 rows, 2,500 a session): ANALYZE after
    # fewer rows than one session brings, the insert VACUUM after about five.
    rows, per_session = 625000, 2500
    assert 50 + defaults["schema_autovacuum_settings"]["autovacuum_analyze_scale_factor"] * rows < per_session
    assert 1000 + defaults["schema_autovacuum_settings"]["autovacuum_vacuum_insert_scale_factor"] * rows < 6 * per_session
