"""The package's import graph: model and conditions import cleanly alone, the library never needs the CLI."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import pytest

import midas_cli
import midas_cli.conditions
import midas_cli.model


def _modules(package) -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + "."))


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a child per module")
def test_each_model_and_conditions_module_imports_alone():
    """An import circle shows only when a module in it is imported first, in a fresh interpreter."""
    names = [midas_cli.model.__name__, midas_cli.conditions.__name__] + _modules(midas_cli.model) + \
        _modules(midas_cli.conditions)
    # One interpreter imports torch once, then forks a child per module: each child starts with
    # no midas_cli module loaded (as a fresh interpreter would) without paying torch's import again.
    script = f"""
import importlib, json, os, sys, traceback
import numpy, torch
assert not any(m.startswith("midas_cli") for m in sys.modules)
failed = {{}}
for name in {names!r}:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            code, msg = 0, b""
        except BaseException:
            code, msg = 1, traceback.format_exc().strip().splitlines()[-1].encode()
        os.write(w, msg)
        os._exit(code)
    os.close(w)
    msg = os.read(r, 4096).decode()
    os.close(r)
    if os.waitpid(pid, 0)[1]:
        failed[name] = msg or "crashed"
print(json.dumps(failed))
"""
    r = _fresh(script)
    assert r.returncode == 0, r.stderr
    failed = json.loads(r.stdout.strip().splitlines()[-1])
    assert not failed, failed


def test_the_model_config_is_a_leaf_conditions_build_on():
    """conditions → model.config, never back: the config and its constants pull in no other stage."""
    r = _fresh("import sys, json, midas_cli.model.config; "
               "print(json.dumps(sorted(m for m in sys.modules if m.startswith('midas_cli.'))))")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["midas_cli.errors", "midas_cli.model", "midas_cli.model.config"]


def test_library_modules_never_import_the_cli():
    """Every command is a thin layer over the library (STYLE.md): no library module needs `midas_cli.cli`."""
    names = [n for n in _modules(midas_cli)
             if not (n == "midas_cli.cli" or n.startswith("midas_cli.cli.") or n == "midas_cli.__main__")]
    script = f"""
import importlib, json, sys
report = {{"pulled_cli": [], "unimportable": {{}}}}
for name in {names!r}:
    try:
        importlib.import_module(name)
    except ImportError as e:  # an optional extra that is not installed is not this test's business
        report["unimportable"][name] = str(e)
        continue
    if "midas_cli.cli" in sys.modules:
        report["pulled_cli"].append(name)
        break  # later imports can no longer be told apart
print(json.dumps(report))
"""
    r = _fresh(script)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["pulled_cli"] == [], f"{report['pulled_cli'][0]} imports midas_cli.cli"
    assert not any("midas_cli" in why for why in report["unimportable"].values()), report["unimportable"]
