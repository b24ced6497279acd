"""Metric store on a real PostgreSQL server that this test starts on 127.0.0.1.

The server is a throw-away cluster (``initdb`` + ``pg_ctl``) in a temporary folder,
run as the ``postgres`` system user when the tests run as root (PostgreSQL refuses to
run as root). CI installs the server with ``apt-get install postgresql``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from changedet.errors import StoreError
from changedet.metrics import SITE, MetricStore

try:
    import psycopg
except ImportError:  # pragma: no cover - the test extra installs it
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("psycopg is not installed (pip install 'psycopg[binary]')", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "pg-Test-Secret-42"


def _pg_bin() -> Path:
    """Folder with initdb and pg_ctl: $PG_BIN, then Debian's versioned folders, then PATH."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    message = "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql or set PG_BIN"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _has_locale(name: str) -> bool:
    # A linguistic collation sorts differently from SQLite's bytewise one; use it when
    # the machine has it, so that the test would catch SQL that relies on the order.
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return False
    return name.lower() in out.lower().split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """Start a PostgreSQL cluster on 127.0.0.1 for the session; yield its admin URL."""
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="changedet-pg-"))
    data, sock, pwfile, logfile = root / "data", root / "sock", root / "pw", root / "server.log"
    sock.mkdir()
    pwfile.write_text(PASSWORD + "\n")
    as_user: dict = {}
    if os.geteuid() == 0:
        # The server refuses to run as root: hand the folder to the postgres user and
        # run initdb and pg_ctl as that user.
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no 'postgres' user to run the server as; apt-get install postgresql")
        for p in (root, sock, pwfile):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    port = _free_port()

    def run(args: list[str], check: bool = True) -> None:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=root, **as_user)
        if check and proc.returncode != 0:
            log = logfile.read_text() if logfile.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}\n{log}")

    run([str(bindir / "initdb"), "-D", str(data), "-U", "changedet", f"--pwfile={pwfile}",
         "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync", "-E", "UTF8", "--locale=en_US.UTF-8" if _has_locale("en_US.utf8") else "--locale=C"])
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
    run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-o", opts, "-w", "-t", "60", "start"])
    try:
        yield f"postgresql://changedet:{PASSWORD}@127.0.0.1:{port}"
    finally:
        run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the session's server."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{pg_server}/{name}"


def test_same_api_as_sqlite(pg_url, tmp_path):
    rows = [
        dict(aoi_id="tum", metric="railcars", time=date(2023, 10, d), value=v, provenance={"scene_id": f"S{d}"})
        for d, v in [(5, 72), (1, 14), (3, 20)]
    ] + [dict(aoi_id="tum", metric="railcars", feature_id="T1", time="2023-10-05", value=30),
         dict(aoi_id="tum", metric="changed_area_m2", time="2023-10-05T00:00:00+09:00", value=1234.5)]
    results = []
    for target in (pg_url, tmp_path / "m.sqlite"):
        with MetricStore(target) as s:
            s.record_many(rows)
            s.record(aoi_id="tum", metric="railcars", time="2023-10-05", value=71, provenance={"scene_id": "S5b"})
            results.append((
                s.series("tum", "railcars"),
                s.series("tum", "railcars", start="2023-10-02", end=datetime(2023, 10, 5, tzinfo=timezone.utc)),
                s.series("tum", "changed_area_m2"),
                s.series("tum", "nothing"),
                s.metrics("tum"),
                s.features("tum", "railcars"),
                s.provenance("tum", "railcars", "2023-10-05"),
                s.provenance("tum", "railcars", "2023-10-04"),
            ))
    pg, lite = results
    assert pg[0].tolist() == [14.0, 20.0, 71.0]
    assert pg[0].index[0] == pd.Timestamp("2023-10-01", tz="UTC")
    assert pg[1].tolist() == [20.0, 71.0]
    assert pg[2].index[0] == pd.Timestamp("2023-10-04T15:00", tz="UTC")
    assert pg[3].empty and str(pg[3].index.tz) == "UTC"
    assert pg[4] == ["changed_area_m2", "railcars"]
    assert pg[5] == sorted([SITE, "T1"])
    assert pg[6] == {"scene_id": "S5b"}
    assert pg[7] is None
    for a, b in zip(pg, lite):
        if isinstance(a, pd.Series):
            pd.testing.assert_series_equal(a, b)
        else:
            assert a == b


def test_failed_batch_writes_nothing_and_data_survives_reconnect(pg_url):
    with MetricStore(pg_url) as s:
        s.record(aoi_id="a", metric="ships", time="2023-01-01", value=3)
        with pytest.raises(StoreError):
            s.record_many([dict(aoi_id="a", metric="ships", time="2023-01-02", value=4),
                           dict(aoi_id="a", metric="ships", time="2023-01-03", value=float("nan"))])
    with MetricStore(pg_url) as s:
        assert s.series("a", "ships").tolist() == [3.0]
        assert "pg-Test-Secret" not in repr(s)


def test_wrong_password_error_hides_it(pg_server):
    bad = pg_server.replace(PASSWORD, "Wrong-Pass-99") + "/postgres"
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as info:
        MetricStore(bad)
    assert "Wrong-Pass-99" not in str(info.value)
    assert PASSWORD not in str(info.value)


def test_concurrent_writers_in_two_processes(pg_url):
    # Two processes create the table and upsert overlapping days at the same time.
    script = textwrap.dedent(
        """
        import sys
        from datetime import date, timedelta
        from changedet.metrics import MetricStore
        url, who = sys.argv[1], int(sys.argv[2])
        with MetricStore(url) as s:
            for i in range(60):
                s.record(aoi_id="a", metric="railcars", time=date(2023, 1, 1) + timedelta(days=i), value=who * 1000 + i,
                         provenance={"writer": who})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, pg_url, str(w)], cwd=REPO) for w in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with MetricStore(pg_url) as s:
        series = s.series("a", "railcars")
        assert len(series) == 60
        for i, v in enumerate(series.tolist()):
            writer = int(v) // 1000
            assert writer in (1, 2) and int(v) % 1000 == i
            assert s.provenance("a", "railcars", date(2023, 1, 1) + timedelta(days=i)) == {"writer": writer}
