#!/usr/bin/env python3
"""Render the monitoring templates the way Ansible's template module does, without Ansible.

    python tools/render_rules.py                 # write monitoring/prometheus/rules/quantdb.rules.yml
    python tools/render_rules.py --check         # exit 1 when the committed file is out of date
    python tools/render_rules.py -e prometheus_alert_database_down_for=10s --out /tmp/r.yml
    python tools/render_rules.py --template roles/alertmanager/templates/alertmanager.yml.j2 \
        --vars roles/alertmanager/defaults/main.yml --vars monitoring/alertmanager/example_vars.yml \
        --out /tmp/alertmanager.yml

The rules template and its thresholds are the prometheus role's (roles/prometheus/templates/,
roles/prometheus/defaults/main/alert_thresholds.yml); the rendered copy in monitoring/ is for
promtool's unit tests and for Prometheus servers this project does not manage.

Variables: the prometheus role's alert_thresholds.yml, then each --vars file, then each -e key=value
(a value is read as YAML, as Ansible reads -e). Like Ansible: trim_blocks, undefined variables
are errors, a `#jinja2:` first line sets the Jinja options (the rules template uses it to write
its variables [[ like_this ]], leaving {{ }} to Prometheus), and `to_json`/`to_yaml` filters.
"""
import argparse
import ast
import difflib
import json
import os
import sys

import jinja2
import yaml

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULTS = os.path.join(PROJECT, "roles", "prometheus", "defaults", "main", "alert_thresholds.yml")
RULES_TEMPLATE = os.path.join(PROJECT, "roles", "prometheus", "templates", "quantdb.rules.yml.j2")
RULES_OUT = os.path.join(PROJECT, "monitoring", "prometheus", "rules", "quantdb.rules.yml")


def load_vars(files, extra):
    values = {}
    for path in files:
        with open(path, encoding="utf-8") as handle:
            values.update(yaml.safe_load(handle) or {})
    for item in extra:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit("render_rules: -e wants key=value, got %r" % item)
        values[key] = yaml.safe_load(raw) if raw else ""
    return values


def header_options(first_line):
    """Options of a `#jinja2: key: 'value', key: value` header, as Ansible parses them."""
    options = {}
    for pair in first_line[len("#jinja2:"):].split(","):
        key, sep, value = pair.partition(":")
        if sep:
            options[key.strip()] = ast.literal_eval(value.strip())
    return options


def render(template_path, values):
    with open(template_path, encoding="utf-8") as handle:
        source = handle.read()
    options = {"trim_blocks": True, "keep_trailing_newline": True, "undefined": jinja2.StrictUndefined}
    first, _, rest = source.partition("\n")
    if first.startswith("#jinja2:"):
        options.update(header_options(first))
        source = rest
    env = jinja2.Environment(**options)
    env.filters["to_json"] = lambda value, **kw: json.dumps(value, **kw)
    env.filters["to_yaml"] = lambda value, **kw: yaml.safe_dump(value, default_flow_style=True, **kw).strip()
    return env.from_string(source).render(**values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--template", default=RULES_TEMPLATE)
    parser.add_argument("--vars", action="append", default=[], help="YAML file of variables (after the defaults)")
    parser.add_argument("-e", dest="extra", action="append", default=[], help="key=value override")
    parser.add_argument("--out", help="output file (default: monitoring/prometheus/rules/quantdb.rules.yml for the rules)")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)

    template = os.path.abspath(args.template)
    if args.out:
        out = args.out
    elif template == RULES_TEMPLATE:
        out = RULES_OUT
    else:
        out = template[:-3] if template.endswith(".j2") else template + ".out"
    text = render(template, load_vars([DEFAULTS] + args.vars, args.extra))
    if args.check:
        try:
            with open(out, encoding="utf-8") as handle:
                current = handle.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True), out, "rendered"))
            print("render_rules: %s is out of date; run python tools/render_rules.py" % os.path.relpath(out, PROJECT))
            return 1
        return 0
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(text)
    print("render_rules: wrote %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
