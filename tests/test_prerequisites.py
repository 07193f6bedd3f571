"""The README's test command on a machine without a prerequisite: one line naming
what to install, a non-zero exit, no test run (tests/conftest.py checks first)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import CONTRACT_PARSER_TEST

ROOT = Path(__file__).resolve().parent.parent

# Loaded with `-p` before tests/conftest.py: tests/broker.py then resolves mosquitto as
# it does on a machine without it (not on PATH, and no /usr/sbin/mosquitto).
NO_SBIN_PLUGIN = """
import tests.broker

tests.broker.MOSQUITTO = {missing!r}
"""


# The same for node_modules (`npm ci` not run): tests/conftest.py looks there.
NO_NODE_MODULES_PLUGIN = """
import pathlib

import tests.conftest

tests.conftest.NODE_MODULES = pathlib.Path({missing!r})
"""


def bin_dir_with(tmp_path: Path, *programs: str) -> Path:
    """A directory to be the whole PATH, holding only `programs` (those installed here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in programs:
        found = shutil.which(name)
        if found is not None:
            (bin_dir / name).symlink_to(found)
    return bin_dir


def pytest_without(
    tmp_path: Path,
    path: Path,
    *args: str,
    plugin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The README's test command (on a few tests) with `path` as the whole PATH."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VOICEBUS_URL")}
    env = {**environ, **(env or {}), "PATH": str(path)}
    extra: list[str] = []
    if plugin is not None:
        (tmp_path / "no_sbin_mosquitto.py").write_text(plugin)
        env["PYTHONPATH"] = str(tmp_path)
        extra = ["-p", "no_sbin_mosquitto"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def assert_one_line_naming(result: subprocess.CompletedProcess[str], install: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    lines = [line for line in output.splitlines() if install in line]
    assert len(lines) == 1, output
    assert "see README" in lines[0]
    assert "no tests ran" in output
    for noise in ("FileNotFoundError", "Traceback", "Error", "passed", "failed"):
        assert noise not in output, output
    assert len([line for line in output.splitlines() if line.strip()]) <= 3, output


def test_without_mosquitto_the_run_stops_at_once_naming_the_package(tmp_path: Path) -> None:
    path = bin_dir_with(tmp_path, "mosquitto_pub", "mosquitto_sub", "node")
    plugin = NO_SBIN_PLUGIN.format(missing=str(tmp_path / "usr" / "sbin" / "mosquitto"))
    result = pytest_without(tmp_path, path, "tests/test_status.py", plugin=plugin)
    assert_one_line_naming(result, "sudo apt-get install mosquitto mosquitto-clients`")
    assert "mosquitto not found" in result.stdout + result.stderr


def test_without_mosquitto_clients_the_run_names_them(tmp_path: Path) -> None:
    path = bin_dir_with(tmp_path, "mosquitto", "node")
    result = pytest_without(tmp_path, path, "tests/test_status.py")
    assert_one_line_naming(result, "sudo apt-get install mosquitto-clients`")


def test_without_node_the_contract_test_names_node_and_npm_ci(tmp_path: Path) -> None:
    path = bin_dir_with(tmp_path, "mosquitto", "mosquitto_pub", "mosquitto_sub")
    result = pytest_without(tmp_path, path, f"tests/{CONTRACT_PARSER_TEST}")
    assert_one_line_naming(result, "sudo apt-get install nodejs npm && npm ci`")
    assert "node not found" in result.stdout + result.stderr


def test_without_node_red_its_tests_name_npm_ci(tmp_path: Path) -> None:
    """Not a skip (on CI too): the Node-RED tests stop the run, naming ``npm ci``."""
    path = bin_dir_with(tmp_path, "mosquitto", "mosquitto_pub", "mosquitto_sub", "node")
    plugin = NO_NODE_MODULES_PLUGIN.format(missing=str(tmp_path / "node_modules"))
    env_ci = {"CI": "true"}
    result = pytest_without(tmp_path, path, "tests/test_node_red.py", plugin=plugin, env=env_ci)
    assert_one_line_naming(result, "npm ci`")
    assert "node-red (node_modules) not found" in result.stdout + result.stderr


def test_a_deselected_contract_test_needs_no_node(tmp_path: Path) -> None:
    path = bin_dir_with(tmp_path, "mosquitto", "mosquitto_pub", "mosquitto_sub")
    file = CONTRACT_PARSER_TEST.split("::")[0]
    parser = f"tests/{CONTRACT_PARSER_TEST}"
    up_to_date = f"tests/{file}::test_committed_contract_is_up_to_date"
    result = pytest_without(tmp_path, path, up_to_date, parser, "--deselect", parser)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 deselected" in result.stdout, result.stdout


def test_tests_that_need_nothing_run_without_the_programs(tmp_path: Path) -> None:
    path = bin_dir_with(tmp_path)
    plugin = NO_SBIN_PLUGIN.format(missing=str(tmp_path / "usr" / "sbin" / "mosquitto"))
    result = pytest_without(tmp_path, path, "tests/test_exported_members.py", plugin=plugin)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_checked_contract_test_exists() -> None:
    """The check names the contract parser test by id: a rename must not silence it."""
    file, name = CONTRACT_PARSER_TEST.split("::")
    assert f"def {name}(" in (ROOT / "tests" / file).read_text()


def test_the_readme_says_what_to_install_first() -> None:
    """One line before the two commands names every program the check may ask for."""
    readme = (ROOT / "README.md").read_text()
    before = readme[readme.index("## Two commands") : readme.index("```bash")]
    install = next(line for line in before.splitlines() if "apt-get install" in line)
    for package in ("mosquitto", "mosquitto-clients", "nodejs", "npm", "python3-venv"):
        assert f" {package} " in f" {install.replace('&&', ' ')} ", package
    assert "npm ci" in install
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"Python {python.replace('>=', '>= ')}" in before
