"""The Grafana dashboard roles/grafana/files/quantdb.json and its provisioning, without Grafana.

Valid JSON; >= 15 panels under the guide's five collapsible rows; unique panel ids; gridPos
inside the 24-column grid without overlaps; every panel and query on the provisioned
datasource uid; every PromQL expression parses (promtool check rules on a throwaway rules file,
when promtool is installed) and every metric it reads is defined by the rules file or listed in
docs/monitoring.md.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GRAFANA = os.path.join(PROJECT, "roles", "grafana")
DASHBOARD = os.path.join(GRAFANA, "files", "quantdb.json")
DATASOURCES = os.path.join(GRAFANA, "templates", "datasource.yml.j2")
PROVIDERS = os.path.join(GRAFANA, "templates", "dashboard-provider.yml.j2")
GRAFANA_DEFAULTS = os.path.join(GRAFANA, "defaults", "main.yml")
RULES = os.path.join(PROJECT, "monitoring", "prometheus", "rules", "quantdb.rules.yml")
DOCS = os.path.join(PROJECT, "docs", "monitoring.md")
ROWS = ["Overview", "Query performance", "Data quality", "Storage & TimescaleDB", "Connections & resources"]
# Grafana's variables, replaced by something PromQL accepts before parsing.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$region": ".*"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
            "inf", "nan"}


def metrics_of(expr):
    """Metric names an expression reads: identifiers that are neither functions, keywords,
    label names (inside braces or grouping lists), durations nor strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if m.group(2) or m.group(1).lower() in KEYWORDS:
            continue
        names.add(m.group(1))
    return names


def documented_metrics():
    """Names in backticks in the section "Metrics the rules need" of docs/monitoring.md; a
    histogram's _bucket/_sum/_count series count as documented with it."""
    with open(DOCS, encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("\n## Metrics the rules need", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"`([a-zA-Z_:][\w:]*)(?:\{[^`]*\})?`", section))
    return names | {n + suffix for n in names for suffix in ("_bucket", "_sum", "_count")}


@pytest.fixture(scope="module")
def dashboard():
    with open(DASHBOARD, encoding="utf-8") as handle:
        return json.load(handle)


def all_panels(dash):
    for p in dash["panels"]:
        yield p
        for inner in p.get("panels", []):   # a collapsed row keeps its panels inside it
            yield inner


def queries(dash):
    for p in all_panels(dash):
        for t in p.get("targets", []):
            yield p["title"], t
    for var in dash.get("templating", {}).get("list", []):
        yield "variable " + var["name"], var


def exprs(dash):
    out = []
    for title, t in queries(dash):
        if "expr" in t:
            e = t["expr"]
            for k, v in GRAFANA_VARS.items():
                e = e.replace(k, v)
            out.append((title, e))
    return out


def test_rows_and_panels(dashboard):
    panels = [p for p in all_panels(dashboard) if p["type"] != "row"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ROWS
    assert len(panels) >= 15
    # each row holds panels: those below it and above the next row (expanded) or inside it (collapsed)
    current, per_row = None, {}
    for p in dashboard["panels"]:
        if p["type"] == "row":
            current = p["title"]
            per_row[current] = len(p.get("panels", []))
        else:
            per_row[current] += 1
    assert all(n >= 2 for n in per_row.values()), per_row
    assert dashboard["uid"] == "postgres-monitoring"   # the guide's URL /dashboards/postgres-monitoring


def test_unique_ids(dashboard):
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_grid_positions_fit_and_do_not_overlap(dashboard):
    cells = {}
    for p in all_panels(dashboard):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, "%s overlaps %s at (%d, %d)" % (p["title"], cells[(x, y)], x, y)
                cells[(x, y)] = p["title"]


_spec = importlib.util.spec_from_file_location("render_rules", os.path.join(PROJECT, "tools", "render_rules.py"))
render_rules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_rules)


def rendered(template):
    """A grafana role template rendered with the role's defaults (as Ansible would)."""
    return yaml.safe_load(render_rules.render(template, render_rules.load_vars([GRAFANA_DEFAULTS], [])))


def test_datasource_is_the_provisioned_uid(dashboard):
    uids = {d["uid"] for d in rendered(DATASOURCES)["datasources"]}
    assert uids == {"quantdb-prometheus"}
    for p in all_panels(dashboard):
        if p["type"] != "row":
            assert p["datasource"]["uid"] in uids, p["title"]
    for title, q in queries(dashboard):
        assert q["datasource"]["uid"] in uids, title
    providers = rendered(PROVIDERS)["providers"]
    assert providers and all(pr["type"] == "file" and pr["options"]["path"] for pr in providers)


def test_every_metric_is_defined_or_documented(dashboard):
    with open(RULES, encoding="utf-8") as handle:
        recorded = {r["record"] for g in yaml.safe_load(handle)["groups"] for r in g["rules"] if "record" in r}
    documented = documented_metrics()
    for title, e in exprs(dashboard):
        names = metrics_of(e)
        assert names, (title, e)
        for name in names:
            assert name in documented, "%s (panel %s) is not listed in docs/monitoring.md" % (name, title)
            assert name in recorded or not name.startswith("quantdb:"), name


def test_every_expression_parses(dashboard, tmp_path):
    if not shutil.which("promtool"):
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("promtool missing under CI (Debian package prometheus; make setup installs it)")
        pytest.skip("promtool not installed (Debian package prometheus); CI is not set")
    rules = [{"record": "dashboard:expr_%d" % i, "expr": e} for i, (_, e) in enumerate(exprs(dashboard))]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: %d rules found" % len(rules) in proc.stdout


def test_metrics_of():
    assert metrics_of('sum by (le) (rate(a_bucket{x="y", le="1"}[5m])) / on (i) b offset 1d > 2') == {"a_bucket", "b"}
    assert metrics_of('count by (severity) (ALERTS{alertstate="firing"})') == {"ALERTS"}
    assert metrics_of("quantdb:cache_hit_ratio:rate30m < 0.95") == {"quantdb:cache_hit_ratio:rate30m"}
