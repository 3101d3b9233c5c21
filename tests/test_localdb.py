"""scripts/localdb.py: where the project cluster lives, from any clone location; and conftest's
choice of test server, which never reads DATABASE_URL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import localdb

ROOT = Path(__file__).resolve().parent.parent
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the postgres OS user only matters when run as root")


@pytest.fixture()
def open_dir() -> Iterator[Path]:
    """A temp dir that every user can search (pytest's tmp_path lives under a mode-700 dir)."""
    path = Path(tempfile.mkdtemp(prefix="paycore-localdb-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def locked_dir(tmp_path: Path) -> Path:
    """A mode-700 directory owned by root, like /root."""
    path = tmp_path / "home"
    path.mkdir()
    path.chmod(0o700)
    return path


def test_project_cluster_in_repo_when_reachable(open_dir: Path) -> None:
    repo = open_dir / "paycore"
    repo.mkdir()
    assert localdb.project_datadir(repo) == (repo / ".pgdata", None)


def test_project_cluster_falls_back_when_socket_path_too_long(open_dir: Path) -> None:
    repo = open_dir / ("a-very-long-directory-name-" * 4) / "paycore"
    repo.mkdir(parents=True)
    datadir, why = localdb.project_datadir(repo)
    assert datadir == localdb.fallback_datadir(repo)
    assert why is not None and "socket path" in why
    assert len(os.fsencode(str(localdb.Cluster(datadir).socket))) <= localdb.MAX_SOCKET_PATH


@as_root
def test_project_cluster_of_an_unreachable_clone_lives_in_fallback(locked_dir: Path) -> None:
    """A clone under a mode-700 dir: the cluster starts in /var/lib/paycore/<hash>, answers, is
    found again by the next command, and clean removes it (and the base dir if it emptied it)."""
    repo = locked_dir / "paycore"
    repo.mkdir()
    base = localdb.fallback_base()
    datadir, why = localdb.project_datadir(repo)
    assert datadir == localdb.fallback_datadir(repo) and datadir.parent == base
    assert why is not None and "cannot reach" in why and "chmod o+x " in why and str(locked_dir) in why
    try:
        cluster, state, _ = localdb.start_project(repo)
        assert (cluster.datadir, state) == (datadir, "created")
        assert localdb.server_can_reach(cluster.sockdir)
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            served = conn.execute("select current_setting('data_directory')").fetchone()[0]
        assert served == str(cluster.pgdata)
        assert (datadir / "repo").read_text().strip() == str(repo)
        assert not (repo / ".pgdata").exists(), "nothing is created in the clone"
        # The next run, stop and clean find it again.
        assert localdb.project_datadir(repo)[0] == datadir
        assert localdb.start_project(repo)[1] == "running"
        assert localdb.project_cluster(repo).stop()
        assert localdb.project_datadir(repo)[0] == datadir
    finally:
        removed = localdb.clean_project(repo)
    assert removed == [datadir]
    assert not datadir.exists()
    assert not base.exists() or any(base.iterdir()), "an empty base dir is removed too"


@as_root
def test_stale_pgdata_run_of_a_failed_run_is_removed(locked_dir: Path) -> None:
    repo = locked_dir / "paycore"
    (repo / ".pgdata" / "run").mkdir(parents=True)
    try:
        localdb.start_project(repo)
        assert not (repo / ".pgdata").exists()
    finally:
        localdb.clean_project(repo)


@as_root
def test_unreachable_location_fails_before_creating_anything(locked_dir: Path) -> None:
    cluster = localdb.Cluster(locked_dir / "x" / "pg")
    with pytest.raises(SystemExit, match="cannot reach") as excinfo:
        cluster.start()
    assert "chmod o+x " in str(excinfo.value) and str(locked_dir) in str(excinfo.value)
    assert list(locked_dir.iterdir()) == []


def test_too_long_socket_path_fails_before_creating_anything(open_dir: Path) -> None:
    cluster = localdb.Cluster(open_dir / ("x" * 100) / "pg")
    with pytest.raises(SystemExit, match="socket path"):
        cluster.start()
    assert list(open_dir.iterdir()) == []


def test_cluster_that_does_not_start_is_removed_again(open_dir: Path) -> None:
    cluster = localdb.Cluster(open_dir / "new" / "pg", settings={"shared_buffers": "'lots'"})
    with pytest.raises(SystemExit, match="did not start") as excinfo:
        cluster.start()
    assert "shared_buffers" in str(excinfo.value), "the server's log is shown"
    assert list(open_dir.iterdir()) == []


def test_stop_where_clean_work_without_psycopg() -> None:
    """make clean runs localdb with the system python3 when the venv is gone."""
    code = "import sys; sys.modules['psycopg'] = None; import localdb; sys.exit(localdb.main(['where']))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == localdb.project_datadir()[0]


INNER_TEST = """
import os
import subprocess
import sys

import psycopg


def test_fixtures_do_not_use_database_url(pg_server, make_database):
    assert "DATABASE_URL" not in os.environ
    child = subprocess.run([sys.executable, "-c", "import os; print('DATABASE_URL' in os.environ)"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "False"
    expected = os.environ.get("EXPECTED_SERVER")
    assert pg_server == (expected or pg_server)
    with psycopg.connect(make_database("env_probe")) as conn:
        assert conn.execute("select current_database()").fetchone()[0] == "paycore_test_env_probe"
"""


@pytest.mark.parametrize("server", ["throwaway cluster", "PAYCORE_TEST_DATABASE_URL"])
def test_database_url_is_ignored_by_the_fixtures(server: str, pg_server: str, tmp_path: Path) -> None:
    """A pytest run with DATABASE_URL pointing at a bogus 'production' passes: nothing used it."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    env = {k: v for k, v in os.environ.items() if k != "PAYCORE_TEST_DATABASE_URL"}
    env["DATABASE_URL"] = "postgresql+psycopg://prod@/production?host=/nonexistent-paycore-production&port=5432"
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (ROOT / "tests", ROOT / "scripts", ROOT))
    if server == "PAYCORE_TEST_DATABASE_URL":
        env["PAYCORE_TEST_DATABASE_URL"] = env["EXPECTED_SERVER"] = pg_server
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
