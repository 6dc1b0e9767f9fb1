"""module_utils/quantdb_ohlcv.py: the one region -> exchange map, the unique-index DDL and the
prewarm statement, and the copies that must agree with them (doc fragment, migration 0002)."""
import os
import re
import sys

import yaml

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(PROJECT, "module_utils"))
import quantdb_ohlcv  # noqa: E402


def load_fragment():
    namespace = {}
    with open(os.path.join(PROJECT, "doc_fragments", "quantdb_ohlcv.py")) as handle:
        exec(compile(handle.read(), "quantdb_ohlcv fragment", "exec"), namespace)  # pylint: disable=exec-used
    return namespace["ModuleDocFragment"]


def test_region_exchanges():
    assert quantdb_ohlcv.REGION_EXCHANGES == {"KR": "XKRX", "US": "XNYS"}


def test_region_exchanges_returns_a_fresh_copy():
    first = quantdb_ohlcv.region_exchanges()
    first["JP"] = "XTKS"
    assert quantdb_ohlcv.region_exchanges() == quantdb_ohlcv.REGION_EXCHANGES
    assert "JP" not in quantdb_ohlcv.REGION_EXCHANGES


def test_the_doc_fragment_documents_the_same_map():
    options = yaml.safe_load(load_fragment().REGION_EXCHANGES)["options"]
    assert options["region_exchanges"]["type"] == "dict"
    assert options["region_exchanges"]["default"] == quantdb_ohlcv.REGION_EXCHANGES


def test_sample_data_generates_on_the_same_exchanges():
    sys.path.insert(0, os.path.join(PROJECT, "tools"))
    try:
        import sample_data  # noqa: E402  pylint: disable=import-outside-toplevel
    finally:
        sys.path.remove(os.path.join(PROJECT, "tools"))
    assert {r: v[0] for r, v in sample_data.REGIONS.items()} == quantdb_ohlcv.REGION_EXCHANGES


def test_quote_ident():
    assert quantdb_ohlcv.quote_ident("idx") == '"idx"'
    assert quantdb_ohlcv.quote_ident('a"b') == '"a""b"'
    assert quantdb_ohlcv.quote_ident("Mixed Case") == '"Mixed Case"'
    for bad in ("", "a\x00b", None):
        try:
            quantdb_ohlcv.quote_ident(bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (bad,))


def test_unique_index_ddl():
    assert quantdb_ohlcv.unique_index_ddl() == \
        'CREATE UNIQUE INDEX "idx_ohlcv_ticker_region_date" ON public.ohlcv_data (ticker, region, date DESC)'
    assert quantdb_ohlcv.unique_index_ddl("k") == 'CREATE UNIQUE INDEX "k" ON public.ohlcv_data (ticker, region, date DESC)'


def test_date_index_and_drop_ddl():
    assert quantdb_ohlcv.date_index_ddl() == 'CREATE INDEX "ohlcv_data_date_idx" ON public.ohlcv_data (date DESC)'
    assert quantdb_ohlcv.drop_index_ddl("k") == 'DROP INDEX public."k"'
    assert quantdb_ohlcv.drop_index_ddl("k", if_exists=True) == 'DROP INDEX IF EXISTS public."k"'


def test_migration_0002_creates_the_same_unique_index():
    """The schema role's migration keeps its own text (applied migrations are checksummed):
    it must still build exactly the index the modules rebuild and adopt."""
    with open(os.path.join(PROJECT, "roles", "schema", "templates", "migrations", "0002_ohlcv_data.sql.j2")) as handle:
        migration = handle.read()
    found = re.search(r"CREATE UNIQUE INDEX IF NOT EXISTS (\w+) ON public\.ohlcv_data (\([^)]*\))", migration)
    assert found, "migration 0002 no longer creates the unique index"
    assert found.group(1) == quantdb_ohlcv.UNIQUE_INDEX
    assert found.group(2) == quantdb_ohlcv.UNIQUE_INDEX_COLUMNS


def test_dedupe_statement_binds_the_condition_twice():
    text = quantdb_ohlcv.dedupe_statement("region = %s")
    assert text.count("region = %s") == 2
    assert "ORDER BY created_at, id" in text


class FakeResult(object):
    def __init__(self, row):
        self.row = row

    def fetchone(self):
        return self.row


class FakeConn(object):
    def __init__(self, installed=True, blocks=42):
        self.installed, self.blocks, self.calls = installed, blocks, []

    def execute(self, query, params=None):
        self.calls.append((query, params))
        if query == quantdb_ohlcv.HAS_PG_PREWARM:
            return FakeResult((self.installed,))
        return FakeResult((self.blocks,))


def test_prewarm_recent_runs_the_statement_with_the_interval():
    conn = FakeConn(blocks=17123)
    assert quantdb_ohlcv.prewarm_recent(conn, "2 years") == 17123
    assert conn.calls == [(quantdb_ohlcv.HAS_PG_PREWARM, None), (quantdb_ohlcv.PREWARM_RECENT, ("2 years",))]


def test_prewarm_recent_without_the_extension_runs_nothing_else():
    conn = FakeConn(installed=False)
    assert quantdb_ohlcv.prewarm_recent(conn, "2 years") is None
    assert len(conn.calls) == 1


def test_prewarm_statement_reads_recent_chunks_and_their_indexes():
    text = quantdb_ohlcv.PREWARM_RECENT
    assert text.count("%s") == 1
    assert "show_chunks('public.ohlcv_data'" in text and "pg_prewarm(rel)" in text and "indexrelid" in text


def test_the_prewarm_statement_has_one_home():
    """No other file of the project spells the prewarm statement out."""
    copies = []
    for folder in ("library", "playbooks", "roles", "scripts", "tools", "bench"):
        for root, _dirs, files in os.walk(os.path.join(PROJECT, folder)):
            for name in files:
                if name.endswith((".py", ".yml", ".yaml", ".sh", ".j2", ".sql")):
                    with open(os.path.join(root, name), errors="replace") as handle:
                        # the prewarm's chunk choice (drop_chunks' newer_than elsewhere is another statement)
                        if re.search(r"show_chunks\([^;]*newer_than\s*=>", handle.read()):
                            copies.append(os.path.relpath(os.path.join(root, name), PROJECT))
    assert not copies, copies
