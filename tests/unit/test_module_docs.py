"""Every module in library/ is readable by ansible-doc, and its DOCUMENTATION says exactly what
its argument_spec takes: names, types, defaults, choices, required, elements and aliases.

The argument_spec is read by running the module's main() against a stand-in AnsibleModule that
records its arguments and stops, so the test needs no database and no host. Connection options
come from the doc fragment doc_fragments/quantdb_pg.py, merged by ansible-doc like any other.
"""
import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODULES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(PROJECT, "library", "*.py")))
DEFAULT_TYPE = "str"


class SpecCaptured(Exception):
    def __init__(self, kwargs):
        super().__init__("argument_spec captured")
        self.kwargs = kwargs


class RecordingModule(object):
    def __init__(self, *args, **kwargs):
        raise SpecCaptured(kwargs)


def argument_spec(name):
    """Import library/<name>.py with the project's module_utils and return the kwargs its
    main() gives AnsibleModule."""
    import ansible.module_utils
    import ansible.module_utils.basic as basic
    utils = os.path.join(PROJECT, "module_utils")
    if utils not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(utils)
    real = basic.AnsibleModule
    basic.AnsibleModule = RecordingModule
    try:
        spec = importlib.util.spec_from_file_location("qdb_lib_%s" % name, os.path.join(PROJECT, "library", name + ".py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with pytest.raises(SpecCaptured) as captured:
            module.main()
        return captured.value.kwargs
    finally:
        basic.AnsibleModule = real


def ansible_doc(name):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT, "ansible.cfg"))
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "-M",
                           os.path.join(PROJECT, "library"), "--json", name],
                          capture_output=True, text=True, env=env, cwd=PROJECT)
    assert proc.returncode == 0, "ansible-doc cannot read %s: %s" % (name, proc.stderr.strip()[-2000:])
    return json.loads(proc.stdout)[name]


def normalized(options):
    """An argument_spec or a DOCUMENTATION options mapping, reduced to what both must agree on
    (either side may leave out the type str, required false and empty lists)."""
    return {name: {"type": o.get("type", DEFAULT_TYPE), "required": bool(o.get("required", False)),
                   "default": o.get("default"), "choices": list(o["choices"]) if o.get("choices") else None,
                   "elements": o.get("elements"), "aliases": sorted(o.get("aliases") or [])}
            for name, o in (options or {}).items()}


def test_every_module_is_checked():
    assert len(MODULES) >= 5, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_the_argument_spec(name):
    doc = ansible_doc(name)
    spec = normalized(argument_spec(name)["argument_spec"])
    documented = normalized(doc["doc"].get("options"))
    assert sorted(documented) == sorted(spec), "%s: options documented %s, taken %s" % (
        name, sorted(set(documented) - set(spec)), sorted(set(spec) - set(documented)))
    drift = {o: {"doc": documented[o], "spec": spec[o]} for o in spec if documented[o] != spec[o]}
    assert not drift, "%s: DOCUMENTATION differs from argument_spec:\n%s" % (name, json.dumps(drift, indent=1, default=str))


@pytest.mark.parametrize("name", MODULES)
def test_examples_and_return_with_samples(name):
    doc = ansible_doc(name)
    assert doc.get("examples", "").strip(), "%s has no EXAMPLES" % name
    returns = doc.get("return") or {}
    assert returns, "%s has no RETURN" % name
    missing = sorted(k for k, v in returns.items() if "sample" not in v)
    assert not missing, "%s: RETURN entries without a sample: %s" % (name, missing)


@pytest.mark.parametrize("name", MODULES)
def test_database_modules_use_the_connection_fragment(name):
    spec = argument_spec(name)["argument_spec"]
    if "login_db" not in spec:
        pytest.skip("%s does not connect to a database" % name)
    with open(os.path.join(PROJECT, "library", name + ".py")) as handle:
        source = handle.read()
    assert "extends_documentation_fragment" in source and "quantdb_pg" in source, \
        "%s: document the connection options with extends_documentation_fragment: [quantdb_pg]" % name


@pytest.mark.parametrize("name", MODULES)
def test_check_mode_is_supported(name):
    assert argument_spec(name).get("supports_check_mode") is True, name


def test_committed_module_docs_are_up_to_date():
    """docs/modules/<module>.md is what scripts/module-docs.sh writes from ansible-doc today."""
    proc = subprocess.run(["bash", os.path.join(PROJECT, "scripts", "module-docs.sh"), "--check"],
                          capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0, "docs/modules is out of date, run bash scripts/module-docs.sh:\n%s%s" % (
        proc.stdout[-4000:], proc.stderr[-2000:])
    assert sorted(p[:-3] for p in os.listdir(os.path.join(PROJECT, "docs", "modules")) if p.endswith(".md")) == MODULES


def test_the_readme_links_every_module_page():
    with open(os.path.join(PROJECT, "README.md")) as handle:
        readme = handle.read()
    missing = [name for name in MODULES if "docs/modules/%s.md" % name not in readme]
    assert not missing, "README.md does not link docs/modules/ for %s" % missing
