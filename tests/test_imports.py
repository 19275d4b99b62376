"""The core imports without torch; the CLI's help and usage errors answer without loading it.

Each check runs in a fresh interpreter (this test process has torch loaded already), with the
repository root first on PYTHONPATH so that this checkout's code is the one imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "matplotlib")


def python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules in sys.modules after `code` ran in a fresh interpreter."""
    done = python("-c", f"{code}\nimport sys\nprint('loaded:', *[m for m in {HEAVY!r} if m in sys.modules])")
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()[1:]


def test_core_modules_import_without_torch():
    core = "lstmcast.data, lstmcast.timegrid, lstmcast.config, lstmcast.errors, lstmcast.outputs"
    assert loaded_after(f"import lstmcast, {core}") == []


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["predict", "--help"],
                                  ["evaluate", "--help"], ["plot", "--help"], ["version"]])
def test_cli_help_does_not_load_torch(args):
    # The console script's own entry point, as `lstmcast ...` calls it.
    code = (f"import sys\nfrom lstmcast.cli import main\nsys.argv = ['lstmcast', *{args!r}]\n"
            f"try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code")
    assert loaded_after(code) == []


def test_cli_usage_error_does_not_load_torch():
    code = ("import sys\nfrom lstmcast.cli import main\nsys.argv = ['lstmcast', 'train', 'x.csv']\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 2, exc.code")
    assert loaded_after(code) == []


def test_python_m_lstmcast_help():
    done = python("-X", "importtime", "-m", "lstmcast", "--help")
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "lstmcast.cli" in imported   # the import log is there to read
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.parametrize("first", ["", "import lstmcast.evaluate, lstmcast.train, lstmcast.plot"])
def test_python_api_still_exports_the_functions(first):
    # `first`: the submodules loaded before the package's names are asked for (they must not
    # replace the functions with the modules of the same name).
    code = f"""{first}
import inspect
import lstmcast
from lstmcast import evaluate, load_run, predict, train
for name, value in [("evaluate", evaluate), ("load_run", load_run), ("predict", predict), ("train", train)]:
    assert inspect.isfunction(value), (name, value)
    assert getattr(lstmcast, name) is value, name
assert train.__module__ == "lstmcast.train" and predict.__module__ == "lstmcast.predict"
assert evaluate.__module__ == "lstmcast.evaluate"
assert set(lstmcast.__all__) <= set(dir(lstmcast))
"""
    assert loaded_after(code) == ["torch"]


def test_unknown_package_attribute_is_an_attribute_error():
    import lstmcast

    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        lstmcast.nonexistent  # noqa: B018
