"""The postgresql role refuses pg_hba entries before anything changes (issue 15): every field
against a strict pattern (a line break in user or options would inject a second pg_hba line),
and every address open to all or a wide range (all, samehost, samenet, 0.0.0.0/1, ::0/0, ...)
unless postgresql_hba_allow_any_address. Runs the role's validate.yml with Ansible on the
controller (no container): one playbook, each case in a block whose rescue records the message.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from role_cases import case_verdicts  # noqa: E402

GOOD = {"type": "host", "database": "all", "user": "quant_app", "address": "10.20.0.0/16", "method": "scram-sha-256"}
REFUSED = {
    "open_ipv4_any": dict(GOOD, address="0.0.0.0/0"),
    "open_ipv4_half": dict(GOOD, address="0.0.0.0/1"),
    "wide_ipv4": dict(GOOD, address="10.0.0.0/8"),
    "open_ipv6": dict(GOOD, address="::0/0"),
    "wide_ipv6": dict(GOOD, address="2001:db8::/32"),
    "keyword_all": dict(GOOD, address="all"),
    "samenet": dict(GOOD, address="samenet"),
    "samehost": dict(GOOD, address="samehost"),
    "newline_in_user": dict(GOOD, user="quant_app\nhost all all 0.0.0.0/0 trust"),
    "newline_at_end_of_user": dict(GOOD, user="quant_app\n"),
    "space_in_database": dict(GOOD, database="all all"),
    "newline_in_options": {"type": "local", "database": "all", "user": "all", "method": "peer",
                           "options": "map=ops\nlocal all all trust"},
    "quote_in_address": dict(GOOD, address='"10.0.0.0/16"'),
}
ACCEPTED = {
    "narrow_ipv4": GOOD,
    "ipv6_loopback": dict(GOOD, address="::1/128"),
    "host_name": dict(GOOD, address=".quant.example.internal"),
    "group_and_list": dict(GOOD, user="+readers,quant_app", database="quant_platform,postgres"),
    "local_with_map": {"type": "local", "database": "all", "user": "all", "method": "peer", "options": "map=ops"},
    # quant_backup only from the backup host: a reject line for everywhere else is narrowing.
    "reject_any_address": dict(GOOD, user="quant_backup", address="all", method="reject"),
    "reject_open_ipv4": dict(GOOD, user="quant_backup", address="0.0.0.0/0", method="reject"),
}
CASE = """
    - name: Validate
      ansible.builtin.include_role:
        name: postgresql
        tasks_from: validate.yml
      vars:
        postgresql_hba_entries: ["{{ case.value }}"]
"""


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    return case_verdicts(tmp_path_factory.mktemp("hba"), CASE, dict(REFUSED, **ACCEPTED))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_naming_the_variable(verdicts, name):
    assert verdicts[name] != "accepted", "%s was accepted: %r" % (name, REFUSED[name])
    assert "postgresql_hba_entries" in verdicts[name], verdicts[name]


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted(verdicts, name):
    assert verdicts[name] == "accepted", verdicts[name]
