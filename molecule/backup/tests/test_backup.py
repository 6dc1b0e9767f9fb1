"""What a DBA checks after the backup role: archiving, stanza, timers, a full backup, a failed
one, logical dumps, check mode. Runs after converge and the idempotence step (Molecule's
idempotence step proves the role changes nothing on a re-run)."""
import json

# The podman backend runs `podman exec` directly: far faster than testinfra's ansible one.
testinfra_hosts = ["podman://qdb-molecule-backup1"]

LOG = "/var/log/postgresql/postgresql-17-main.log"
SITE_CONVERGE = "molecule/backup/converge.yml"   # site.yml


def test_archive_mode_cost_one_restart_over_converge_and_idempotence(psql, sh):
    # Runs first: the server started once when the cluster was created, restarted once when
    # archive_mode (and the preload libraries) changed, and never again in the idempotence step.
    starts = int(sh("grep -c 'database system is ready to accept connections' %s" % LOG).stdout)
    shutdowns = int(sh("grep -c 'received fast shutdown request' %s || true" % LOG).stdout)
    assert (starts, shutdowns) == (2, 1), sh("grep -E 'ready to accept|shutdown' %s" % LOG).stdout
    assert psql("SHOW archive_mode") == "on"
    assert psql("SHOW archive_command") == "pgbackrest --stanza=main archive-push %p"
    assert psql("SHOW wal_level") == "replica"
    assert psql("SHOW archive_timeout") == "1min"
    assert psql("SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"


def test_wal_is_archived_without_failures(psql):
    psql("SELECT pg_switch_wal()")
    psql("CHECKPOINT")
    # pgbackrest check (the role's last task) archived at least one segment already.
    archived, failed = psql("SELECT archived_count, failed_count FROM pg_stat_archiver").split("|")
    assert int(archived) >= 1 and int(failed) == 0, (archived, failed)


def test_stanza_exists_encrypted_and_check_passes(sh, pgbackrest_info):
    info = pgbackrest_info()
    assert info["name"] == "main"
    assert info["status"]["code"] in (0, 2), info["status"]   # 2: no backup yet
    assert info["cipher"] == "aes-256-cbc"                   # the lab sets backup_cipher_passphrase
    sh("pgbackrest --stanza=main check", user="postgres")


def test_config_files_keep_secrets_from_everyone_but_postgres(host):
    conf = host.file("/etc/pgbackrest/pgbackrest.conf")
    assert (conf.user, conf.group, conf.mode) == ("postgres", "postgres", 0o640)
    assert "compress-type=zst" in conf.content_string
    assert "repo1-retention-full-type=time" in conf.content_string and "repo1-retention-full=30" in conf.content_string
    assert "lab-only" not in conf.content_string   # the passphrase lives in conf.d
    secrets = host.file("/etc/pgbackrest/conf.d/quantdb-ops-secrets.conf")
    assert (secrets.user, secrets.mode) == ("postgres", 0o600)
    assert "repo1-cipher-pass=lab-only-backup-cipher-passphrase" in secrets.content_string


def test_timers_are_scheduled_and_their_service_backs_up_as_postgres(host, sh, backup_status):
    for kind, calendar in (("full", "Sun *-*-* 02:00:00"), ("diff", "Mon..Sat *-*-* 02:00:00")):
        timer = host.service("quantdb-backup-%s.timer" % kind)
        assert timer.is_enabled and timer.is_running, kind
        shown = sh("systemctl show -p TimersCalendar -p Unit quantdb-backup-%s.timer" % kind).stdout
        assert calendar in shown and "quantdb-backup@%s.service" % kind in shown, shown
    # What the timer starts, started by hand: an incr backup (a full if none exists yet), as postgres.
    sh("systemctl start quantdb-backup@incr.service")
    record = backup_status()["last_run"]
    assert record["status"] == "success" and record["requested_type"] == "incr", record
    assert sh("stat -c %U /var/lib/pgbackrest/backup/main/backup.info").stdout.strip() == "postgres"


def test_full_backup_through_the_playbook(full_backup, backup_status, pgbackrest_info, sh):
    info = pgbackrest_info()
    labels = [b["label"] for b in info["backup"]]
    assert full_backup["label"] == labels[-1]
    newest = info["backup"][-1]
    assert newest["type"] == "full"
    assert full_backup["size_bytes"] == newest["info"]["size"] > 0
    assert 0 < full_backup["stored_bytes"] < full_backup["size_bytes"]   # zstd
    status = backup_status()
    assert status["last_success"] == full_backup
    assert status["types"]["full"]["last_success"]["label"] == full_backup["label"]
    assert status["repo"] == "posix:/var/lib/pgbackrest" and status["stanza"] == "main"
    # The exporter reads it without root.
    assert json.loads(sh("cat /var/lib/quantdb-ops/backup/status.json", user="nobody").stdout) == status
    print("full backup: %s, %d bytes, %d stored, %.2f s" % (
        full_backup["label"], full_backup["size_bytes"], full_backup["stored_bytes"], full_backup["duration_seconds"]))


def test_playbook_reports_label_size_and_duration(run_playbook, task_results):
    proc = run_playbook("playbooks/backup.yml", "-e", "backup_type=diff", json_output=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    [report] = task_results(proc.report, "backup : Report the backup")
    assert "diff backup of stanza main: success; label " in report["msg"], report["msg"]
    assert " stored " in report["msg"] and " s. Status: /var/lib/quantdb-ops/backup/status.json" in report["msg"]
    assert proc.stats["changed"] == 1, proc.stats   # the backup itself; the postgresql role changes nothing


def test_failed_backup_leaves_a_failed_status_and_calls_the_webhook(run_playbook, backup_status, webhook, full_backup):
    webhook.clear()
    before = backup_status()
    proc = run_playbook("playbooks/backup.yml", "-e", "backup_stanza=no_such_stanza")
    assert proc.returncode != 0
    assert "full backup failed (exit" in proc.stdout, proc.stdout[-3000:]
    status = backup_status()
    failure = status["last_failure"]
    assert failure["status"] == "failure" and failure["stanza"] == "no_such_stanza"
    assert failure["exit_code"] != 0 and "ERROR" in failure["error"], failure
    assert status["last_run"] == failure
    assert status["last_success"] == before["last_success"]   # the last good backup is still reported
    assert failure["notified"] == ["webhook"]
    assert len(webhook.requests) == 1, webhook.requests
    message = webhook.requests[0]
    assert message["event"] == "backup_failed" and "FAILED" in message["text"]
    assert message["record"]["stanza"] == "no_such_stanza"


def test_wrapper_exits_non_zero_on_failure(sh, backup_status, webhook):
    webhook.clear()
    proc = sh("/usr/local/bin/quantdb-backup --type diff --stanza no_such_stanza", check=False)
    assert proc.returncode != 0
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["status"] == "failure" and record["exit_code"] == proc.returncode
    assert backup_status()["last_failure"]["end_epoch"] == record["end_epoch"]
    assert len(webhook.requests) == 1


def _load_sample_rows(psql):
    psql("INSERT INTO tickers (ticker, region, exchange) VALUES ('BKA', 'US', 'XNYS'), ('BKB', 'KR', 'XKRX') "
         "ON CONFLICT DO NOTHING")
    psql("INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume) "
         "SELECT t, r, d::date, 10, 12, 9, 11, 1000 FROM (VALUES ('BKA', 'US'), ('BKB', 'KR')) v(t, r), "
         "generate_series('2024-01-01'::date, '2024-03-31', '1 day') d ON CONFLICT DO NOTHING")


def test_logical_dump_round_trip(run_playbook, psql, sh, backup_status):
    _load_sample_rows(psql)
    proc = run_playbook("playbooks/backup.yml", "-e", "backup_type=logical")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    record = backup_status()["last_run"]
    assert record["type"] == "logical" and record["status"] == "success", record
    path = record["file"]
    assert path.startswith("/var/backups/quantdb-ops/logical/quant_platform-") and path.endswith(".dump")
    # The .sha256 file matches the dump, in sha256sum's format.
    assert sh("cd /var/backups/quantdb-ops/logical && sha256sum -c %s.sha256" % path.split("/")[-1]).returncode == 0
    digest = sh("sha256sum %s" % path).stdout.split()[0]
    assert digest == record["sha256"]
    assert sh("pg_restore --list %s | grep -c 'TABLE DATA public ohlcv_data'" % path).stdout.strip() == "1"
    # Restore into a scratch database (TimescaleDB's pre/post restore) and compare row counts.
    psql("DROP DATABASE IF EXISTS bk_scratch", db="postgres")
    psql("CREATE DATABASE bk_scratch", db="postgres")
    try:
        psql("CREATE EXTENSION timescaledb; SELECT timescaledb_pre_restore();", db="bk_scratch")
        # pg_cron lives only in cron.database_name (quant_platform): its entries are left out.
        restored = sh("pg_restore --list {0} | grep -v -E ' (pg_cron|cron) ' > /tmp/bk_scratch.list && "
                      "pg_restore --no-owner --exit-on-error -L /tmp/bk_scratch.list -d bk_scratch {0}".format(path),
                      user="postgres", check=False)
        assert restored.returncode == 0, restored.stderr[-3000:]
        psql("SELECT timescaledb_post_restore()", db="bk_scratch")
        for table in ("ohlcv_data", "tickers", "schema_migrations"):
            source = psql("SELECT count(*) FROM %s" % table)
            assert psql("SELECT count(*) FROM %s" % table, db="bk_scratch") == source, table
        assert int(psql("SELECT count(*) FROM ohlcv_data", db="bk_scratch")) == 182
        assert psql("SELECT sum(close * volume) FROM ohlcv_data", db="bk_scratch") == psql("SELECT sum(close * volume) FROM ohlcv_data")
    finally:
        psql("DROP DATABASE IF EXISTS bk_scratch", db="postgres")


def test_logical_retention_removes_old_dumps_once(run_playbook, task_results, sh):
    directory = "/var/backups/quantdb-ops/logical"
    for stamp in ("20200101T020000Z", "20200102T020000Z"):
        name = "%s/quant_platform-%s.dump" % (directory, stamp)
        sh("echo old > {0} && echo 'x  {1}' > {0}.sha256 && touch -d '40 days ago' {0} {0}.sha256 && chown postgres: {0}*"
           .format(name, name.split("/")[-1]))
    recent = "%s/quant_platform-20990101T000000Z-recent.dump" % directory   # 10 days old: kept
    sh("echo recent > {0} && touch -d '10 days ago' {0}".format(recent))

    first = run_playbook("playbooks/backup.yml", "-e", "backup_type=logical", json_output=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    [removal] = task_results(first.report, "backup : Remove dumps past their retention")
    removed = sorted(r["item"][0]["path"].split("/")[-1] + r["item"][1] for r in removal["results"] if r["changed"])
    assert removed == ["quant_platform-20200101T020000Z.dump", "quant_platform-20200101T020000Z.dump.sha256",
                       "quant_platform-20200102T020000Z.dump", "quant_platform-20200102T020000Z.dump.sha256"]
    assert sh("ls %s/quant_platform-2020* 2>/dev/null | wc -l" % directory).stdout.strip() == "0"
    assert sh("test -f %s" % recent, check=False).returncode == 0

    second = run_playbook("playbooks/backup.yml", "-e", "backup_type=logical", json_output=True)
    assert second.returncode == 0
    [removal] = task_results(second.report, "backup : Remove dumps past their retention")
    assert not removal.get("changed") and not any(r.get("changed") for r in removal.get("results", []))
    sh("rm -f %s" % recent)


def test_site_check_mode_reports_no_changes(run_playbook):
    proc = run_playbook(SITE_CONVERGE, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stats["changed"] == 0, proc.stdout[-4000:]
    assert "lab-only-backup-cipher" not in proc.stdout


def test_backup_playbook_check_mode_changes_nothing(run_playbook, backup_status):
    before = backup_status()
    proc = run_playbook("playbooks/backup.yml", "--check")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stats["changed"] == 0
    assert "Check mode: would run /usr/local/bin/quantdb-backup --type full --stanza main" in proc.stdout
    assert backup_status() == before


def test_bad_input_fails_before_any_change(run_playbook, psql):
    started = psql("SELECT pg_postmaster_start_time()")
    proc = run_playbook(SITE_CONVERGE, "-e", "backup_retention_days=0")
    assert proc.returncode != 0 and "backup_retention_days must be 1.." in proc.stdout, proc.stdout[-3000:]
    assert proc.stats["changed"] == 0
    proc = run_playbook(SITE_CONVERGE, "-e", "backup_repo_type=s3")
    assert proc.returncode != 0 and "backup_s3_endpoint is empty" in proc.stdout, proc.stdout[-3000:]
    proc = run_playbook(SITE_CONVERGE, "-e", "postgresql_archive_command=/bin/true")
    assert proc.returncode != 0 and "postgresql_archive_command" in proc.stdout, proc.stdout[-3000:]
    assert psql("SHOW archive_command") == "pgbackrest --stanza=main archive-push %p"
    assert psql("SELECT pg_postmaster_start_time()") == started


