"""The built wheel carries py.typed, the migration branch and the Alembic templates: build it,
install it into a fresh venv, and look from there."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

# Its tests share one built wheel (a session fixture): under pytest-xdist they run on one
# worker (make test uses --dist loadgroup), so it is built once. (A module fixture can be
# built twice there: the worker may run other modules' tests between this module's.)
pytestmark = pytest.mark.xdist_group("wheel")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    [built] = out.glob("pgqrs_sqla-*.whl")
    return built


def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "pgqrs_sqla/py.typed" in names
    assert "pgqrs_sqla/migrations/versions/pgqrs_0001_initial.py" in names
    for template in ("async", "sync"):
        for part in ("env.py", "script.py.mako", "alembic.ini.mako", "README"):
            assert f"pgqrs_sqla/alembic_templates/{template}/{part}" in names
    # the dashboard's templates and static files (contrib/dashboard)
    board = "pgqrs_sqla/contrib/dashboard"
    for page in ("base", "overview", "runs", "run", "workers", "dead_letters", "schedules"):
        assert f"{board}/templates/{page}.html" in names
    for asset in ("dashboard.css", "dashboard.js", "favicon.svg"):
        assert f"{board}/static/{asset}" in names


def test_installed_wheel_finds_its_branch_and_templates(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)],
        check=True,
        timeout=300,
    )
    # Dependencies come from the test environment (appended after the venv's own packages).
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    check = f"""
import pathlib, pgqrs_sqla
from pgqrs_sqla import alembic_support
pkg = pathlib.Path(pgqrs_sqla.__file__).parent
assert pkg.is_relative_to({site!r}), pkg
assert (pkg / "py.typed").exists()
assert (pathlib.Path(alembic_support.version_location()) / "pgqrs_0001_initial.py").exists()
assert alembic_support.templates_directory().is_relative_to(pkg)
ini = alembic_support.scaffold({str(tmp_path / "app" / "alembic")!r}, template="sync")
assert "pgqrs_sqla:migrations/versions" in ini.read_text()

# The branch, found as a package resource of the installed wheel, builds the tables.
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
import sqlalchemy as sa
cfg = Config(str(ini))
cfg.set_main_option("sqlalchemy.url", "sqlite:///app.db")
root = ScriptDirectory.from_config(cfg).get_revision("pgqrs_0001_initial")
assert pathlib.Path(root.path).is_relative_to(pkg), root.path
command.upgrade(cfg, "heads")
engine = sa.create_engine("sqlite:///app.db")
assert set(sa.inspect(engine).get_table_names()) == set(alembic_support.pgqrs_table_names()) | {{"alembic_version"}}
engine.dispose()

# The dashboard finds its templates and static files in the installed package.
from pgqrs_sqla.contrib.dashboard import _app, _render
assert pathlib.Path(_app.STATIC).is_relative_to(pkg)
assert (pathlib.Path(_app.STATIC) / "dashboard.css").exists()
template = _render.environment().get_template("run.html")
assert pathlib.Path(template.filename).is_relative_to(pkg), template.filename
print("ok")
"""
    (tmp_path / "app").mkdir()
    done = subprocess.run(
        [str(python), "-c", check],
        cwd=tmp_path / "app",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
