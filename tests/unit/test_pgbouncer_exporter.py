"""PgBouncer's exporter and its scrape job, on the controller with Ansible (no container): the
pgbouncer_exporter role's environment file (the connection string lib/pq reads: PgBouncer's
Unix socket by default, TCP with verified TLS otherwise; the password URL-encoded and only
there), its validate.yml, site.yml's wiring (the role after pgbouncer in the PgBouncer play, the
Prometheus targets of the quantdb_pgbouncer hosts) and the prometheus role's prometheus.yml with
the `pgbouncer` job. The container side: molecule/pgbouncer/tests/test_pgbouncer_exporter.py.
"""
import json
import os
import shutil
import subprocess
import sys
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from role_cases import PROJECT, ansible_playbook  # noqa: E402

ROLE = os.path.join(PROJECT, "roles", "pgbouncer_exporter")
PROM = os.path.join(PROJECT, "roles", "prometheus")
SITE = os.path.join(PROJECT, "playbooks", "site.yml")
PASSWORD = "pa'ss/w@rd:$x%y\"z #1"   # every character a URL or an environment file could trip on

# Rendered environment files: name -> the variables the template task gets.
RENDER = {
    "socket": {"pgbouncer_exporter_password": PASSWORD},
    "tcp_tls_ca": {"pgbouncer_exporter_password": PASSWORD, "pgbouncer_exporter_db_host": "127.0.0.1",
                   "tls_ca_file": "/etc/quantdb-ops/tls/ca.crt"},
    "tcp_no_ca": {"pgbouncer_exporter_password": PASSWORD, "pgbouncer_exporter_db_host": "db1.example.internal",
                  "pgbouncer_exporter_db_port": 6433, "pgbouncer_exporter_listen_address": "10.0.0.5",
                  "pgbouncer_exporter_port": 9200, "pgbouncer_exporter_extra_args": ["--web.telemetry-path=/m"]},
}
GOOD = {"pgbouncer_exporter_password": "a-good-monitor-password"}
REFUSED = {
    "no_password": {},
    "short_password": {"pgbouncer_exporter_password": "short"},
    "port_zero": dict(GOOD, pgbouncer_exporter_port=0),
    "db_port_too_high": dict(GOOD, pgbouncer_exporter_db_port=70000),
    "tls_on_the_socket": dict(GOOD, pgbouncer_exporter_db_sslmode="require"),
    "verify_full_without_ca": dict(GOOD, pgbouncer_exporter_db_host="127.0.0.1", pgbouncer_exporter_db_sslmode="verify-full"),
    "host_with_space": dict(GOOD, pgbouncer_exporter_db_host="127.0.0.1 sslmode=disable"),
    "user_with_quote": dict(GOOD, pgbouncer_exporter_db_user="quant'monitor"),
    "extra_arg_with_space": dict(GOOD, pgbouncer_exporter_extra_args=["--log.level=info --x"]),
}
ACCEPTED = {
    "defaults": GOOD,
    "tcp_require": dict(GOOD, pgbouncer_exporter_db_host="127.0.0.1", pgbouncer_exporter_db_sslmode="require"),
    "tcp_verify_full": dict(GOOD, pgbouncer_exporter_db_host="127.0.0.1", pgbouncer_exporter_db_sslmode="verify-full",
                            pgbouncer_exporter_db_sslrootcert="/etc/quantdb-ops/tls/ca.crt"),
    "tcp_with_tls_role_ca": dict(GOOD, pgbouncer_exporter_db_host="127.0.0.1", tls_ca_file="/etc/quantdb-ops/tls/ca.crt"),
}
# The inventory the Prometheus targets are computed for: db4 is in quantdb_pgbouncer but not a
# database host (site.yml's first play refuses it; the PgBouncer play never runs there).
INVENTORY = {"all": {"children": {
    "quantdb_db": {"hosts": {"db1": {}, "db2": {}, "db3": {"pgbouncer_exporter_port": 9200}}},
    "quantdb_pgbouncer": {"hosts": {"db3": {}, "db1": {}, "db4": {}}},
    "quantdb_monitoring": {"hosts": {"mon1": {}}},
}}}
NO_PGBOUNCER = {"all": {"children": {"quantdb_db": {"hosts": {"db1": {}}}, "quantdb_monitoring": {"hosts": {"mon1": {}}}}}}


def site_plays():
    with open(SITE, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def role_entry(plays, name):
    found = [(play, r) for play in plays for r in play.get("roles", []) if isinstance(r, dict) and r.get("role") == name]
    assert len(found) == 1, name
    return found[0]


def playbook(tmp):
    """One playbook: every rendering and every validation case, results into tmp."""
    plays = []
    render_tasks = [{"name": "Render " + name, "ansible.builtin.template": {
        "src": os.path.join(ROLE, "templates", "prometheus-pgbouncer-exporter.j2"),
        "dest": str(tmp / ("%s.env" % name)), "mode": "0600"}, "vars": values} for name, values in RENDER.items()]
    plays.append({"name": "Environment files", "hosts": "localhost", "gather_facts": False,
                  "vars_files": [os.path.join(ROLE, "defaults", "main.yml"), os.path.join(ROLE, "vars", "main.yml")],
                  "tasks": render_tasks})
    case_tasks = []
    for name, values in sorted(dict(REFUSED, **ACCEPTED).items()):
        case_tasks.append({"name": "Case " + name, "block": [
            {"name": "Validate " + name, "ansible.builtin.include_role": {"name": "pgbouncer_exporter", "tasks_from": "validate.yml"},
             "vars": values},
            {"name": "Accepted " + name, "ansible.builtin.set_fact": {"results": "{{ results | combine({'%s': 'accepted'}) }}" % name}},
        ], "rescue": [
            {"name": "Refused " + name, "ansible.builtin.set_fact": {
                "results": "{{ results | combine({'%s': ansible_failed_result.msg | default('failed')}) }}" % name}},
        ]})
    case_tasks.append({"name": "Results", "ansible.builtin.copy": {
        "content": "{{ results | to_json }}", "dest": str(tmp / "verdicts.json"), "mode": "0644"}})
    plays.append({"name": "Validation cases", "hosts": "localhost", "gather_facts": False, "vars": {"results": {}},
                  "tasks": case_tasks})
    return yaml.safe_dump(plays, sort_keys=False, width=1000)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pgbouncer-exporter")
    ansible_playbook(tmp, playbook(tmp))
    return tmp


def environment(out, name):
    """{key: value} of a rendered environment file, as systemd reads it (single quotes)."""
    values = {}
    for line in (out / ("%s.env" % name)).read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, raw = line.partition("=")
            assert raw[0] == raw[-1] and raw[0] in "'\"" and raw[0] not in raw[1:-1], line
            values[key] = raw[1:-1]
    return values


def dsn(out, name):
    url = urlsplit(environment(out, name)["PGBOUNCER_EXPORTER_CONNECTION_STRING"])
    return url, {k: v[0] for k, v in parse_qs(url.query).items()}


def test_socket_by_default_without_tls_with_the_password_url_encoded(out):
    url, params = dsn(out, "socket")
    assert url.scheme == "postgresql" and url.hostname is None and url.path == "/pgbouncer"
    assert unquote(url.username) == "quant_monitor" and unquote(url.password) == PASSWORD
    assert params == {"host": "/var/run/postgresql", "port": "6432", "sslmode": "disable"}
    args = environment(out, "socket")["ARGS"]
    assert args == "--web.listen-address=0.0.0.0:9127 --log.level=warn --pgBouncer.pid-file="
    text = (out / "socket.env").read_text()
    assert PASSWORD not in text   # only URL-encoded: no quote, space or % of it reaches the file raw


def test_tcp_verifies_pgbouncer_with_the_tls_role_ca(out):
    url, params = dsn(out, "tcp_tls_ca")
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", 6432, "/pgbouncer")
    assert unquote(url.password) == PASSWORD
    assert params == {"sslmode": "verify-full", "sslrootcert": "/etc/quantdb-ops/tls/ca.crt"}


def test_tcp_without_a_ca_still_encrypts(out):
    url, params = dsn(out, "tcp_no_ca")
    assert (url.hostname, url.port) == ("db1.example.internal", 6433)
    assert params == {"sslmode": "require"}
    assert environment(out, "tcp_no_ca")["ARGS"] == (
        "--web.listen-address=10.0.0.5:9200 --log.level=warn --pgBouncer.pid-file= --web.telemetry-path=/m")


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_validate_refuses(out, name):
    verdict = json.loads((out / "verdicts.json").read_text())[name]
    assert verdict != "accepted", "%s was accepted: %r" % (name, REFUSED[name])
    assert "pgbouncer_exporter" in verdict, verdict


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_validate_accepts(out, name):
    assert json.loads((out / "verdicts.json").read_text())[name] == "accepted"


def test_role_defaults_match_the_argument_spec():
    with open(os.path.join(ROLE, "defaults", "main.yml"), encoding="utf-8") as handle:
        defaults = yaml.safe_load(handle)
    with open(os.path.join(ROLE, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        options = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options) - {"pgbouncer_exporter_password"}
    for key, value in defaults.items():
        if "default" in options[key]:
            assert options[key]["default"] == value, key
    assert options["pgbouncer_exporter_password"] == {"type": "str", "required": True, "no_log": True,
                                                      "description": options["pgbouncer_exporter_password"]["description"]}


def test_site_runs_it_after_pgbouncer_in_the_pgbouncer_play():
    plays = site_plays()
    play, entry = role_entry(plays, "pgbouncer_exporter")
    assert play["hosts"] == "quantdb_pgbouncer:&quantdb_db"
    names = [r["role"] for r in play["roles"]]
    assert names.index("pgbouncer_exporter") == names.index("pgbouncer") + 1
    assert {"pgbouncer", "monitoring"} <= set(entry["tags"])
    assert entry["pgbouncer_exporter_db_port"] == "{{ pgbouncer_listen_port }}"
    # The first play validates it on the same hosts as the pgbouncer role.
    assert "['pgbouncer', 'pgbouncer_exporter'] if 'quantdb_pgbouncer' in group_names" in plays[0]["vars"]["__site_roles"]


@pytest.mark.parametrize("inventory, expected", [
    (INVENTORY, ["db3:9200", "db1:9127"]),   # inventory order; db4 (no database) left out
    (NO_PGBOUNCER, []),                      # no quantdb_pgbouncer group at all: no job
])
def test_prometheus_targets_are_the_pgbouncer_play_hosts(tmp_path, inventory, expected):
    _, entry = role_entry(site_plays(), "prometheus")
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    play = yaml.safe_dump([{"hosts": "mon1", "gather_facts": False, "vars": {"targets": entry["prometheus_pgbouncer_targets"]},
                            "tasks": [{"name": "Write", "ansible.builtin.copy": {
                                "content": "{{ targets | to_json }}", "dest": str(tmp_path / "targets.json"), "mode": "0644"},
                                "delegate_to": "localhost"}]}])
    ansible_playbook(tmp_path, play, inventory=str(tmp_path / "hosts.yml"))
    assert json.loads((tmp_path / "targets.json").read_text()) == expected


@pytest.fixture(scope="module")
def prometheus_configs(tmp_path_factory):
    """prometheus.yml rendered by the role's template with and without PgBouncer targets."""
    tmp = tmp_path_factory.mktemp("prometheus-yml")
    common = {"prometheus_quantdb_targets": ["db1:8000"], "prometheus_postgres_targets": ["db1:9187"],
              "prometheus_alertmanager_targets": ["127.0.0.1:9093"]}
    cases = {"with": dict(common, prometheus_pgbouncer_targets=["db1:9127", "db2:9127"]), "without": common}
    play = yaml.safe_dump([{"hosts": "localhost", "gather_facts": False,
                            "vars_files": [os.path.join(PROM, "defaults", "main", "main.yml"),
                                           os.path.join(PROM, "defaults", "main", "alert_thresholds.yml")],
                            "tasks": [{"name": "Render " + name, "ansible.builtin.template": {
                                "src": os.path.join(PROM, "templates", "prometheus.yml.j2"),
                                "dest": str(tmp / ("%s.yml" % name)), "mode": "0644"}, "vars": values}
                                for name, values in cases.items()]}])
    ansible_playbook(tmp, play)
    return {name: tmp / ("%s.yml" % name) for name in cases}


def jobs(path):
    return {job["job_name"]: job for job in yaml.safe_load(path.read_text())["scrape_configs"]}


def test_prometheus_scrapes_the_pgbouncer_exporters(prometheus_configs):
    with_job, without = jobs(prometheus_configs["with"]), jobs(prometheus_configs["without"])
    assert with_job["pgbouncer"]["static_configs"] == [{"targets": ["db1:9127", "db2:9127"]}]
    # The other jobs are the same with or without it; no PgBouncer host, no job.
    assert {k: v for k, v in with_job.items() if k != "pgbouncer"} == without
    assert set(without) == {"prometheus", "alertmanager", "quantdb", "postgres"}


def test_prometheus_config_passes_promtool(prometheus_configs):
    if not shutil.which("promtool"):
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("promtool missing under CI: make setup installs the Debian package prometheus")
        pytest.skip("promtool not installed (Debian package prometheus; make setup installs it); CI is not set")
    for path in prometheus_configs.values():
        proc = subprocess.run(["promtool", "check", "config", "--syntax-only", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
