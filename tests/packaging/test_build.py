"""The build (setup.py): the compiled data plane when it can be built, the interpreted
form, installed and saying so, when it cannot (no Cython, or a C compiler that fails),
and a wheel that carries the built extensions but not the C that Cython generated.

The builds run `pip wheel --no-build-isolation` in a virtualenv made for the module
(setuptools and Cython from pip's cache), on a copy of the source that keeps the
generated C, so that each build costs a compiler's start, not Cython's minutes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.daemon import INSTALLED_FORM, REPO_ROOT

from haproxyd._build import COMPILED

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FALLBACK = "haproxyd: could not build the compiled data plane"


def _build_requirements() -> list[str]:
    import tomllib

    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["build-system"]["requires"]


def _run(
    *cmd: str | Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    assert result.returncode == 0, (
        f"{cmd}: rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="module")
def build_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the build requirements but Cython (each test adds what it needs)."""
    venv = tmp_path_factory.mktemp("build") / "venv"
    _run(sys.executable, "-m", "venv", venv)
    setuptools = next(r for r in _build_requirements() if r.startswith("setuptools"))
    _run(venv / "bin" / "pip", "install", "-q", setuptools, "wheel")
    return venv


def _source_copy(dest: Path) -> Path:
    """The project as a fresh checkout has it, plus the C Cython generated here (when
    there is some): no built extension, no generated include."""
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z", "setup.py", "pyproject.toml", "README.md", "haproxyd"],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    generated = [str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "haproxyd").rglob("*.c")]
    for name in filter(None, tracked + generated):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, dest / name)  # times kept: the C stays up to date
    return dest


def _wheel(venv: Path, source: Path, out: Path, env: dict[str, str]) -> tuple[Path, str]:
    result = _run(
        venv / "bin" / "pip",
        "wheel",
        "-v",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        out,
        source,
        env=env,
    )
    (wheel,) = out.glob("haproxyd-*.whl")
    return wheel, result.stdout + result.stderr


def _installed_form(venv: Path, wheel: Path) -> str:
    _run(venv / "bin" / "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel)
    # `version` imports no third-party package: the build venv needs no dependencies.
    return _run(venv / "bin" / "haproxyd", "version", cwd=wheel.parent).stdout


def _fallback_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if FALLBACK in line]


def test_without_cython_the_build_installs_the_interpreted_form(build_venv, tmp_path):
    _run(build_venv / "bin" / "pip", "uninstall", "-q", "-y", "Cython")  # another test's
    source = _source_copy(tmp_path / "src")
    wheel, output = _wheel(build_venv, source, tmp_path / "dist", {})
    assert any("Cython is not installed" in line for line in _fallback_lines(output)), output
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith((".so", ".c"))], names
    assert "(data plane: interpreted)" in _installed_form(build_venv, wheel)


def test_a_failing_c_compiler_installs_the_interpreted_form(build_venv, tmp_path):
    cython = next(r for r in _build_requirements() if r.startswith("Cython"))
    _run(build_venv / "bin" / "pip", "install", "-q", cython)
    source = _source_copy(tmp_path / "src")
    wheel, output = _wheel(build_venv, source, tmp_path / "dist", {"CC": "/bin/false"})
    lines = _fallback_lines(output)
    assert lines and all("C compiler" in line for line in lines), output
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith((".so", ".c", ".pxi"))], names
    assert "(data plane: interpreted)" in _installed_form(build_venv, wheel)


@pytest.mark.skipif(INSTALLED_FORM != "compiled", reason="no compiled build here to pack")
def test_the_wheel_reuses_the_tree_build_and_carries_no_c(build_venv, tmp_path):
    cython = next(r for r in _build_requirements() if r.startswith("Cython"))
    _run(build_venv / "bin" / "pip", "install", "-q", cython)
    # From the tree itself: setup.py reuses its up-to-date extensions (those the suite
    # runs) instead of compiling them again, as the README's second `pip install -e`
    # does. With a compiler that fails, any compiling would fall back and show here.
    wheel, output = _wheel(build_venv, REPO_ROOT, tmp_path / "dist", {"CC": "/bin/false"})
    assert not _fallback_lines(output), output
    names = zipfile.ZipFile(wheel).namelist()
    extensions = {n.split(".")[0].replace("/", ".") for n in names if n.endswith(".so")}
    assert extensions == set(COMPILED), names
    assert not [n for n in names if n.endswith((".c", ".pxi"))], names
    assert "(data plane: compiled)" in _installed_form(build_venv, wheel)
