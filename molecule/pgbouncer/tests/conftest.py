"""Fixtures of the pgbouncer scenario's tests (test_pgbouncer.py).

The scenario host is HOST, converged by site.yml without the backup and monitoring tags, in
the groups quantdb_db and quantdb_pgbouncer, with inventory/lab/group_vars and host_vars/
(max_connections = 100). Environment: QDB_TEST_HOST (default qdb-molecule-pgb1) and
QDB_TEST_INVENTORY as in the other scenarios (tests/molecule_support.py).

Fixtures: run_playbook, task_results, sh, psql (tests/molecule_support.py), and
- bars (module scope): 50 US tickers (US0000..US0049) x the weekdays of the 400 days to
  2025-10-31 in ohlcv_data, for pgbench's quant reads; deleted after the module.
"""
import os
import sys

import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY",
                         os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
HOST = os.environ.get("QDB_TEST_HOST", "qdb-molecule-pgb1")

sys.path.insert(0, os.path.join(PROJECT, "tests"))
from molecule_support import Scenario, psql, run_playbook, sh, task_results  # noqa: E402,F401

SCENARIO_HOST = Scenario(PROJECT, HOST, limit=True)
BARS_END = "2025-10-31"
BARS_TICKERS = 50


@pytest.fixture(scope="session")
def scenario_host():
    return SCENARIO_HOST


@pytest.fixture(scope="module")
def bars(psql):
    psql("INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume)"
         " SELECT 'US' || lpad(t::text, 4, '0'), 'US', d::date, 100 + t, 102 + t, 99 + t, 101 + t, 1000 * (t + 1)"
         " FROM generate_series(0, %d) AS t, generate_series(DATE '%s' - 400, DATE '%s', '1 day') AS d"
         " WHERE extract(isodow FROM d) < 6 ON CONFLICT DO NOTHING; ANALYZE ohlcv_data"
         % (BARS_TICKERS - 1, BARS_END, BARS_END))
    yield BARS_TICKERS
    psql("DELETE FROM ohlcv_data WHERE region = 'US' AND ticker ~ '^US00[0-4][0-9]$'")
