"""The Prometheus rules and the Alertmanager template (docs/monitoring.md#tests).

Without promtool: the rendered rules file is the template rendered with the documented
thresholds; >= 20 alerts, each with severity, summary, description and a runbook_url whose
anchor exists in docs/monitoring.md; every alert has a firing and a silent promtool case and
every recording rule a promql_expr_test; thresholds are variables; Ansible's template module
renders the same text as tools/render_rules.py. With promtool (Debian package prometheus):
scripts/promtool-tests.sh (check rules, test rules, amtool check-config). Under CI=true a
missing promtool fails instead of skipping.
"""
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RULES = os.path.join(PROJECT, "monitoring", "prometheus", "rules", "quantdb.rules.yml")
TEMPLATE = os.path.join(PROJECT, "roles", "prometheus", "templates", "quantdb.rules.yml.j2")
THRESHOLDS = os.path.join(PROJECT, "roles", "prometheus", "defaults", "main", "alert_thresholds.yml")
DOCS = os.path.join(PROJECT, "docs", "monitoring.md")
TESTS = sorted(glob.glob(os.path.join(PROJECT, "tests", "promtool", "*.test.yml")))
AM_TEMPLATE = os.path.join(PROJECT, "roles", "alertmanager", "templates", "alertmanager.yml.j2")
AM_DEFAULTS = os.path.join(PROJECT, "roles", "alertmanager", "defaults", "main.yml")
AM_EXAMPLE = os.path.join(PROJECT, "monitoring", "alertmanager", "example_vars.yml")
SEVERITIES = {"critical", "warning", "info"}
# The operations guide's alerts and the ones issue 13 adds: all must exist.
REQUIRED = {"DatabaseDown", "DatabaseSizeCritical", "DuplicateRecordsDetected", "QueryErrorRateHigh", "DataStale",
            "MissingDatesHigh", "SlowQueriesHigh", "IndexHitRateLow", "BacktestQuerySlow", "CompressionNotEnabled",
            "TableSizeGrowing", "BackupMissing", "ActiveConnectionsHigh", "WalArchivingFailing", "XidWraparoundNear",
            "ReplicationLagHigh", "TimescaleJobFailing", "ExporterDown", "DeadlocksDetected", "LongRunningTransaction"}

_spec = importlib.util.spec_from_file_location("render_rules", os.path.join(PROJECT, "tools", "render_rules.py"))
render_rules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_rules)


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def rules_of(doc, kind):
    return [r for g in doc["groups"] for r in g["rules"] if kind in r]


def doc_anchors():
    """GitHub's anchors of the headings of docs/monitoring.md."""
    anchors = set()
    with open(DOCS, encoding="utf-8") as handle:
        for line in handle:
            m = re.match(r"#+\s+(.*)", line)
            if m:
                slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
                anchors.add(slug)
    return anchors


def promtool_cases():
    """(alertname, fires?) of every alert_rule_test case, and the exprs of promql_expr_test."""
    cases, exprs = [], []
    for path in TESTS:
        for group in load(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                cases.append((case["alertname"], bool(case.get("exp_alerts"))))
            exprs += [t["expr"] for t in group.get("promql_expr_test", [])]
    return cases, exprs


@pytest.fixture(scope="module")
def rules():
    return load(RULES)


def test_rendered_rules_are_up_to_date():
    text = render_rules.render(TEMPLATE, render_rules.load_vars([THRESHOLDS], []))
    with open(RULES, encoding="utf-8") as handle:
        assert handle.read() == text, "run: python tools/render_rules.py"


def test_at_least_20_alerts_with_labels_and_annotations(rules):
    alerts = rules_of(rules, "alert")
    names = [a["alert"] for a in alerts]
    assert len(alerts) >= 20
    assert len(names) == len(set(names)), "alert names are unique"
    assert REQUIRED <= set(names), REQUIRED - set(names)
    anchors = doc_anchors()
    for a in alerts:
        assert a["labels"]["severity"] in SEVERITIES, a["alert"]
        for key in ("summary", "description", "runbook_url"):
            assert a["annotations"].get(key), (a["alert"], key)
        base, _, anchor = a["annotations"]["runbook_url"].partition("#")
        assert base.endswith("monitoring.md") and anchor == a["alert"].lower(), a["alert"]
        assert anchor in anchors, "docs/monitoring.md has no heading for #%s" % anchor


def test_every_alert_fires_and_stays_silent_in_a_promtool_case(rules):
    cases, _ = promtool_cases()
    for name in (a["alert"] for a in rules_of(rules, "alert")):
        assert (name, True) in cases, "%s never fires in tests/promtool" % name
        assert (name, False) in cases, "%s is never shown silent in tests/promtool" % name


def test_every_recording_rule_has_an_expression_test(rules):
    _, exprs = promtool_cases()
    for name in (r["record"] for r in rules_of(rules, "record")):
        assert any(re.search(r"(^|[^\w:])%s($|[^\w:])" % re.escape(name), e) for e in exprs), name


def test_every_metric_of_the_rules_is_documented(rules):
    """docs/monitoring.md#metrics-the-rules-need lists every metric a rule reads (the exporter's contract)."""
    spec = importlib.util.spec_from_file_location("qdb_dash", os.path.join(os.path.dirname(__file__), "test_dashboard.py"))
    dash = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dash)
    documented = dash.documented_metrics()
    recorded = {r["record"] for r in rules_of(rules, "record")}
    for rule in rules_of(rules, "alert") + rules_of(rules, "record"):
        for name in dash.metrics_of(rule["expr"]):
            assert name in documented or name in recorded, "%s (%s) is not in docs/monitoring.md" % (
                name, rule.get("alert") or rule.get("record"))
    for name in recorded:
        assert name in documented, name


def test_thresholds_are_variables_and_all_used():
    values = load(THRESHOLDS)
    with open(TEMPLATE, encoding="utf-8") as handle:
        template = handle.read()
    used = set(re.findall(r"\[\[\s*(prometheus_alert_\w+)\s*\]\]", template))
    selectors = {"prometheus_alert_job_quantdb", "prometheus_alert_job_postgres", "prometheus_alert_datname",
                 "prometheus_alert_runbook_base_url"}
    assert set(values) == used | selectors, set(values) ^ (used | selectors)
    fors = re.findall(r"^\s+for: (.*)$", template, re.M)
    assert fors and all(re.fullmatch(r"\[\[ prometheus_alert_\w+_for \]\]", f) for f in fors), fors


def test_a_short_for_in_tests_is_one_override_away():
    text = render_rules.render(TEMPLATE, render_rules.load_vars(
        [THRESHOLDS], ["prometheus_alert_database_down_for=10s", "prometheus_alert_database_size_critical_gib=1"]))
    alerts = {a["alert"]: a for a in rules_of(yaml.safe_load(text), "alert")}
    assert alerts["DatabaseDown"]["for"] == "10s"
    assert "> 1 * 1024 * 1024 * 1024" in alerts["DatabaseSizeCritical"]["expr"]


@pytest.mark.parametrize("template, var_files", [
    (TEMPLATE, [THRESHOLDS]),
    (AM_TEMPLATE, [AM_DEFAULTS, AM_EXAMPLE]),
])
def test_ansible_template_module_renders_the_same(tmp_path, template, var_files):
    """The roles' `ansible.builtin.template` gives the text tools/render_rules.py gives."""
    dest = tmp_path / "out.yml"
    extra = [a for f in var_files for a in ("-e", "@" + f)]
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT, "ansible.cfg"))
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-i", "localhost,", "-c", "local",
         "-e", "ansible_python_interpreter=" + sys.executable, "-m", "ansible.builtin.template",
         "-a", "src=%s dest=%s" % (template, dest)] + extra,
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = render_rules.render(template, render_rules.load_vars(var_files, []))
    assert dest.read_text() == expected


def test_alertmanager_routes_and_inhibits():
    values = render_rules.load_vars([AM_DEFAULTS, AM_EXAMPLE], [])
    conf = yaml.safe_load(render_rules.render(AM_TEMPLATE, values))
    assert {r["matchers"][0] for r in conf["route"]["routes"]} == {'severity="%s"' % s for s in SEVERITIES}
    inhibit = conf["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['severity="critical"'] and inhibit["target_matchers"] == ['severity="warning"']
    assert set(inhibit["equal"]) == {"alertname", "instance"}
    default = [r for r in conf["receivers"] if r["name"] == "default"][0]
    assert [w["url"] for w in default["webhook_configs"]] == values["alertmanager_webhook_urls"]
    assert [e["to"] for e in default["email_configs"]] == values["alertmanager_email_to"]
    assert conf["global"]["smtp_auth_password"] == values["alertmanager_email_auth_password"]


def test_promtool_and_amtool():
    if not shutil.which("promtool") or not shutil.which("amtool"):
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("promtool/amtool missing under CI: make setup installs the Debian packages "
                        "prometheus and prometheus-alertmanager")
        pytest.skip("promtool/amtool not installed (Debian packages prometheus, prometheus-alertmanager; "
                    "make setup installs them); CI is not set")
    proc = subprocess.run(["bash", os.path.join(PROJECT, "scripts", "promtool-tests.sh")], cwd=PROJECT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "all passed" in proc.stdout
    assert proc.stdout.count("  SUCCESS\n") >= len(TESTS)
