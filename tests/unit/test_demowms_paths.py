"""Where the demo WMS finds demo/demo.map, wherever the package is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import demowms

REPO = Path(__file__).resolve().parents[2]


def fake_demo(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "demo.map").write_text("MAP END\n")
    return folder


def test_an_explicit_folder_wins(tmp_path, monkeypatch):
    mine = fake_demo(tmp_path / "mine")
    monkeypatch.setenv("DEMO_DIR", str(fake_demo(tmp_path / "env")))
    assert demowms.find_demo_dir(mine) == mine.resolve()


def test_the_environment_comes_next(tmp_path, monkeypatch):
    env = fake_demo(tmp_path / "env")
    monkeypatch.setenv("DEMO_DIR", str(env))
    assert demowms.find_demo_dir() == env.resolve()


def test_a_named_folder_without_the_mapfile_is_one_line_naming_demo_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMO_DIR", str(tmp_path))
    with pytest.raises(demowms.NotInstalledError) as info:
        demowms.find_demo_dir()
    assert str(info.value).startswith("DEMO_DIR: no demo.map in ")
    assert demowms.unavailable_reason().startswith("demo WMS: DEMO_DIR: no demo.map")


def test_a_checkout_finds_its_own_demo_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DEMO_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # not the repository: found beside the package
    assert demowms.find_demo_dir() == REPO / "demo"


def run_installed_copy(tmp_path: Path, code: str, cwd: Path, env: dict[str, str]) -> str:
    """Run `code` with a copy of the demo tools installed in site-packages of nowhere."""
    site = tmp_path / "site-packages"
    shutil.copytree(
        REPO / "devtools", site / "devtools", ignore=shutil.ignore_patterns("__pycache__")
    )
    answer = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.strip()


FIND = """
from devtools import demowms
try:
    print(demowms.find_demo_dir())
except demowms.NotInstalledError as exc:
    print("error:", exc)
"""


def test_an_installed_copy_is_told_to_set_demo_dir(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run_installed_copy(tmp_path, FIND, elsewhere, {})
    assert out.startswith("error: no demo/demo.map beside the package"), out
    assert "DEMO_DIR" in out


@pytest.mark.parametrize("how", ["DEMO_DIR", "working directory"])
def test_an_installed_copy_finds_the_demo_by_setting_or_from_the_repo_root(tmp_path, how):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if how == "DEMO_DIR":
        out = run_installed_copy(tmp_path, FIND, elsewhere, {"DEMO_DIR": str(REPO / "demo")})
    else:
        out = run_installed_copy(tmp_path, FIND, REPO, {})
    assert out == str(REPO / "demo")
