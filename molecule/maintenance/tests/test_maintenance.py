"""Weekly maintenance: a bloated table vacuumed, a second run with nothing to do, check mode
changing nothing, an invalid index rebuilt, retention listing chunks and dropping nothing."""
import json
import os

SCRATCH = "public.maint_scratch"


def _stats(psql):
    return psql("SELECT pg_stat_clear_snapshot(); SELECT n_dead_tup || ',' || coalesce(last_vacuum::text, '') "
                "FROM pg_stat_user_tables WHERE relid = '%s'::regclass" % SCRATCH).splitlines()[-1]


def test_weekly_vacuums_bloat_then_nothing(run_playbook, psql, report_dir):
    psql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);"
         "INSERT INTO %s SELECT g, md5(g::text) FROM generate_series(1, 50000) g; ANALYZE %s;"
         "UPDATE %s SET v = v || 'x' WHERE id %% 2 = 0; DELETE FROM %s WHERE id %% 5 = 0;"
         "CREATE INDEX maint_scratch_v ON %s (v);"
         "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.maint_scratch_v'::regclass"
         % ((SCRATCH,) * 7))
    before = _stats(psql)
    assert int(before.split(",")[0]) >= 20000, before
    extra = ["-e", "maintenance_report_dir=" + report_dir]

    check = run_playbook("playbooks/maintenance_weekly.yml", *extra, check=True)
    assert check.returncode == 0, check.stdout[-3000:]
    assert check.stats["changed"] == 0, check.stats
    assert _stats(psql) == before                     # check mode changed nothing
    report = json.load(open(os.path.join(report_dir, "maintenance_weekly.json")))
    planned = {(a["action"], a["object"]): a for a in report["maintenance"]["actions"]}
    assert ("vacuum_analyze", SCRATCH) in planned and planned[("vacuum_analyze", SCRATCH)]["status"] == "planned"
    assert ("reindex", "public.maint_scratch_v") in planned
    assert psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.maint_scratch_v'::regclass") == "f"

    first = run_playbook("playbooks/maintenance_weekly.yml", *extra)
    assert first.returncode == 0, first.stdout[-3000:]
    assert first.stats["changed"] >= 1
    report = json.load(open(os.path.join(report_dir, "maintenance_weekly.json")))
    done = {(a["action"], a["object"]): a for a in report["maintenance"]["actions"]}
    assert done[("vacuum_analyze", SCRATCH)]["status"] == "done"
    assert done[("reindex", "public.maint_scratch_v")]["status"] == "done"
    assert all(a["duration_ms"] >= 0 for a in done.values())
    assert psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.maint_scratch_v'::regclass") == "t"
    after = _stats(psql)
    assert int(after.split(",")[0]) < 1000 and after.split(",")[1], after
    assert int(psql("SELECT count(*) FROM maintenance.statement_snapshots")) > 0
    assert int(psql("SELECT count(*) FROM pg_stat_statements")) < 50      # reset after the snapshot

    second = run_playbook("playbooks/maintenance_weekly.yml", *extra)
    assert second.returncode == 0, second.stdout[-3000:]
    assert second.stats["changed"] == 0, second.stdout[-3000:]
    report = json.load(open(os.path.join(report_dir, "maintenance_weekly.json")))
    assert report["maintenance"]["actions"] == []
    print("weekly maintenance: %.3f s module time with nothing to do" % report["maintenance"]["seconds"])


def test_retention_check_lists_chunks_and_drops_nothing(run_playbook, psql, report_dir):
    psql("INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume) VALUES "
         "('OLD1', 'US', '2012-03-01', 10, 11, 9, 10, 100), ('OLD1', 'US', '2012-03-02', 10, 11, 9, 10, 100), "
         "('NEW1', 'US', current_date - 3, 10, 11, 9, 10, 100) ON CONFLICT DO NOTHING")
    chunks_before = psql("SELECT count(*) FROM show_chunks('public.ohlcv_data')")
    proc = run_playbook("playbooks/maintenance_weekly.yml", "-e", "maintenance_report_dir=" + report_dir,
                        "-e", '{"maintenance_retention": "5 years"}', check=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = json.load(open(os.path.join(report_dir, "maintenance_weekly.json")))
    listed = report["retention"]["chunks"]
    assert len(listed) == 1 and listed[0]["rows"] == 2 and listed[0]["range_start"] < "2013", listed
    assert report["retention"]["dropped"] == []
    assert "would be dropped" in proc.stdout
    assert psql("SELECT count(*) FROM show_chunks('public.ohlcv_data')") == chunks_before
    assert psql("SELECT count(*) FROM ohlcv_data WHERE ticker = 'OLD1'") == "2"


def test_monthly_and_quarterly_reports(run_playbook, report_dir):
    extra = ["-e", "maintenance_report_dir=" + report_dir]
    monthly = run_playbook("playbooks/maintenance_monthly.yml", *extra)
    assert monthly.returncode == 0, monthly.stdout[-3000:]
    report = json.load(open(os.path.join(report_dir, "maintenance_monthly.json")))
    assert report["timescaledb"]["license"] == "apache" and report["compression"]["available"] is False
    assert [c["chunk"] for c in report["compression"]["candidates"]]            # the 2012 chunk
    assert report["restore_drill"].startswith("skipped: no /etc/pgbackrest")
    assert "compression not available" in monthly.stdout
    quarterly = run_playbook("playbooks/maintenance_quarterly.yml", *extra, "--skip-tags", "security_audit")
    assert quarterly.returncode == 0, quarterly.stdout[-3000:]
    report = json.load(open(os.path.join(report_dir, "maintenance_quarterly.json")))
    assert report["filesystem"]["avail_bytes"] > 0 and report["data_directory"] == "/var/lib/postgresql/17/main"
