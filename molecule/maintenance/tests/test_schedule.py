"""ops_schedule installs the timers (listed by systemctl list-timers) and the job wrapper's lock."""


def test_timers_installed_and_listed(run_playbook, sh):
    from conftest import HOST
    proc = run_playbook("playbooks/ops_schedule.yml", "-e", "ops_schedule_hosts=" + HOST)
    assert proc.returncode == 0, proc.stdout[-3000:]
    again = run_playbook("playbooks/ops_schedule.yml", "-e", "ops_schedule_hosts=" + HOST)
    assert again.returncode == 0 and again.stats["changed"] == 0, again.stdout[-3000:]
    listed = sh("systemctl list-timers --all --no-pager 'quantdb-ops-*'").stdout
    print(listed)
    for name in ("morning-check", "end-of-day", "maintenance-weekly", "maintenance-monthly", "maintenance-quarterly"):
        assert "quantdb-ops-%s.timer" % name in listed, listed
    assert "OnCalendar=Sun 03:00" in sh("cat /etc/systemd/system/quantdb-ops-maintenance-weekly.timer").stdout
    # flock: a second run while one holds the lock exits 75 and says so in the log
    sh("mkdir -p /run/lock/quantdb-ops")
    busy = sh("(flock -n 9; /usr/local/bin/quantdb-ops-job lock-test playbooks/none.yml; echo rc=$?) 9>/run/lock/quantdb-ops/lock-test.lock",
              check=False)
    assert "rc=75" in busy.stdout and "still going" in sh("cat /var/log/quantdb-ops/lock-test.log").stdout
