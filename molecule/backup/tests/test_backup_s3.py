"""The backup role with an S3 repository: moto in server mode with TLS (self-signed), started
by the test on this machine, reached from the container as host.containers.internal.

The role is converged with backup_repo_type=s3 (molecule/backup/backup_role.yml: the role and
its dependency only), backs up there, copies a logical dump to the bucket, and is converged
back to the scenario's posix repository at the end, where a new full backup is taken."""
import json

import pytest
from conftest import s3_extra_vars

testinfra_hosts = ["podman://qdb-molecule-backup1"]

ROLE_ONLY = "molecule/backup/backup_role.yml"


@pytest.fixture(scope="module")
def s3_repo(moto_s3, run_playbook, backup_status):
    try:
        proc = run_playbook(ROLE_ONLY, *s3_extra_vars(moto_s3))
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert proc.stats["changed"] > 0   # the configuration and the stanza in the bucket
        yield moto_s3
    finally:
        restore_posix_repository(run_playbook, backup_status)


def restore_posix_repository(run_playbook, backup_status):
    """Back to the posix repository of the scenario, with a fresh full backup in it."""
    proc = run_playbook(ROLE_ONLY)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    proc = run_playbook("playbooks/backup.yml")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert backup_status()["repo"] == "posix:/var/lib/pgbackrest"


def bucket_keys(client, prefix=""):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="quantdb-backup-test", Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_stanza_is_created_in_the_bucket_and_converges_again_unchanged(s3_repo, run_playbook, sh):
    keys = bucket_keys(s3_repo["client"], "var/lib/pgbackrest/")
    assert "var/lib/pgbackrest/backup/main/backup.info" in keys, keys
    assert "var/lib/pgbackrest/archive/main/archive.info" in keys, keys
    conf = sh("cat /etc/pgbackrest/pgbackrest.conf").stdout
    assert "repo1-type=s3" in conf and "repo1-storage-port=55482" in conf and "repo1-storage-verify-tls=n" in conf
    assert "repo1-s3-uri-style=path" in conf
    assert "lab-only-secret" not in conf
    proc = run_playbook(ROLE_ONLY, *s3_extra_vars(s3_repo))
    assert proc.returncode == 0 and proc.stats["changed"] == 0, proc.stdout[-4000:]


def test_full_backup_to_s3_and_info(s3_repo, run_playbook, backup_status, pgbackrest_info):
    proc = run_playbook("playbooks/backup.yml", *s3_extra_vars(s3_repo))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    record = backup_status()["last_run"]
    assert record["status"] == "success" and record["type"] == "full", record
    assert backup_status()["repo"] == "s3:quantdb-backup-test:/var/lib/pgbackrest"
    info = pgbackrest_info()
    assert info["backup"][-1]["label"] == record["label"]
    assert info["cipher"] == "aes-256-cbc"
    keys = bucket_keys(s3_repo["client"], "var/lib/pgbackrest/backup/main/%s/" % record["label"])
    assert any(key.endswith("backup.manifest") for key in keys), keys[:20]
    print("full backup to S3: %d bytes stored in %.2f s" % (record["stored_bytes"], record["duration_seconds"]))


def test_logical_dump_copied_to_s3(s3_repo, run_playbook, backup_status):
    proc = run_playbook("playbooks/backup.yml",
                        *s3_extra_vars(s3_repo, backup_type="logical", backup_logical_s3_copy=True))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    record = backup_status()["last_run"]
    name = record["file"].split("/")[-1]
    client = s3_repo["client"]
    assert sorted(bucket_keys(client, "logical/%s" % name)) == ["logical/%s" % name, "logical/%s.sha256" % name]
    body = client.get_object(Bucket="quantdb-backup-test", Key="logical/%s.sha256" % name)["Body"].read().decode()
    assert body.split() == [record["sha256"], name]
    assert "lab-only-secret" not in proc.stdout and "lab-only-key" not in json.dumps(record)
