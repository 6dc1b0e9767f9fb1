"""site.yml's database play runs one host at a time unless told otherwise (issue 15): a change
that restarts PostgreSQL must never take every database host down together. Ansible reads
`serial` when the play starts, from extra vars (-e site_serial=100% for a new lab)."""
import os

import yaml

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def plays():
    with open(os.path.join(PROJECT, "playbooks", "site.yml")) as handle:
        return yaml.safe_load(handle)


def test_the_database_play_is_serial_one_by_default():
    db_plays = [p for p in plays() if p.get("hosts") == "quantdb_db"]
    assert db_plays, "no play for quantdb_db"
    for play in db_plays:
        assert play.get("serial") == "{{ site_serial | default(1) }}", play.get("name")


def test_every_play_that_restarts_a_service_is_serial():
    """Plays with roles (they install, configure and restart) take hosts in batches."""
    for play in plays():
        hosts = str(play.get("hosts", ""))
        if play.get("roles") and ("quantdb_db" in hosts or "quantdb_pgbouncer" in hosts):
            assert "serial" in play, play.get("name")
