"""Session 14 leftovers: email retries skip who got it, case-insensitive cube bands, SCL
values that are no class, clear errors from unreachable or misconfigured cube stores,
and deliveries stuck in retry reported by ``changedet alerts deliver``.

Email tests run a real aiosmtpd server on 127.0.0.1 (see ``tests/test_email_s13.py``);
store tests use no network beyond the loopback.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import timedelta

import numpy as np
import pytest

from changedet.alerts import Outbox
from changedet.alerts.delivery import ChannelConfig, flush
from tests.test_email_s13 import BAD, BUSY, GOOD, NOW, _finding, _Server

pytest.importorskip("aiosmtpd.controller")


def _email_channel(port: int) -> ChannelConfig:
    return ChannelConfig("email", "email", {"host": "127.0.0.1", "port": port, "sender": "changedet@example.org",
                                            "security": "none", "timeout_s": 5})


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path / "outbox", clock=lambda: NOW, retry_base_s=60) as ob:
        yield ob


# -- 1. a retry after a partial refusal reaches only who did not get it ------------------
def test_flush_retry_after_partial_refusal_skips_who_got_it(outbox):
    alert, _ = outbox.open_or_update(_finding())
    route = lambda a: {"email": (GOOD, BUSY)}  # noqa: E731
    with _Server({BUSY: "452 4.2.2 mailbox busy"}) as srv:
        ch = _email_channel(srv.port)
        assert flush(outbox, [ch], recipients_for=route, now=NOW)["email"]["failed"] == 1
        assert outbox.delivery_state(alert.id, "opened", "email")[0]["status"] == "failed"
        srv.handler.refuse.clear()
        assert flush(outbox, [ch], recipients_for=route, now=NOW + timedelta(hours=1))["email"]["sent"] == 1
        assert flush(outbox, [ch], recipients_for=route, now=NOW + timedelta(days=1))["email"]["sent"] == 0
    # The old flush sent [GOOD] then [GOOD, BUSY]: the analyst got the alert twice.
    assert [rcpts for _, rcpts in srv.handler.envelopes] == [[GOOD], [BUSY]]
    assert outbox.delivery_state(alert.id, "opened", "email")[0]["status"] == "delivered"
    # The To header still names everyone the alert is for.
    assert GOOD in srv.handler.messages[1]["To"] and BUSY in srv.handler.messages[1]["To"]


def test_permanently_refused_address_does_not_spam_the_others(outbox):
    alert, _ = outbox.open_or_update(_finding())
    route = lambda a: {"email": (GOOD, BAD)}  # noqa: E731
    with _Server({BAD: "550 5.1.1 no such user"}) as srv:
        ch = _email_channel(srv.port)
        for hours in (0, 1, 3, 7):
            assert flush(outbox, [ch], recipients_for=route, now=NOW + timedelta(hours=hours))["email"]["failed"] == 1
    # GOOD got it once; later attempts offered it to BAD only (refused again each time).
    assert [rcpts for _, rcpts in srv.handler.envelopes] == [[GOOD]]
    state = outbox.delivery_state(alert.id, "opened", "email")[0]
    assert state["status"] == "failed" and state["attempts"] == 4 and BAD in state["last_error"]


def test_recipients_reached_is_per_event_and_channel_and_case_insensitive(outbox):
    alert, _ = outbox.open_or_update(_finding())
    (event_id, _a, _e), = outbox.pending_events("email")
    outbox.mark_recipients_reached(event_id, "email", [" Analyst@Example.org ", ""])
    outbox.mark_recipients_reached(event_id, "email", ["analyst@example.org"])  # twice: no-op
    assert outbox.recipients_reached(event_id, "email") == {"analyst@example.org"}
    assert outbox.recipients_reached(event_id, "email2") == set()
    assert outbox.recipients_reached(event_id + 1, "email") == set()


def test_outbox_made_before_the_recipients_table_opens_and_retries(tmp_path):
    """An outbox database written by the previous code (no ``delivery_recipients``) keeps working."""
    root = tmp_path / "outbox"
    with Outbox(root, clock=lambda: NOW, retry_base_s=60) as ob:
        alert, _ = ob.open_or_update(_finding())
        ob.mark_failed(alert.id, "opened", "email", "421 try later", now=NOW)
    db = sqlite3.connect(root / "outbox.sqlite")
    db.execute("DROP TABLE delivery_recipients")  # the schema as the previous code left it
    db.commit()
    db.close()
    route = lambda a: {"email": (GOOD, BUSY)}  # noqa: E731
    with Outbox(root, clock=lambda: NOW, retry_base_s=60) as ob, _Server({BUSY: "452 busy"}) as srv:
        # The failed delivery from the old outbox is still due, and nothing marks anyone reached.
        assert flush(ob, [_email_channel(srv.port)], recipients_for=route,
                     now=NOW + timedelta(hours=1))["email"]["failed"] == 1
        srv.handler.refuse.clear()
        assert flush(ob, [_email_channel(srv.port)], recipients_for=route,
                     now=NOW + timedelta(hours=2))["email"]["sent"] == 1
        assert ob.delivery_state(alert.id, "opened", "email")[0]["status"] == "delivered"
    assert [rcpts for _, rcpts in srv.handler.envelopes] == [[GOOD], [BUSY]]


# -- 2. cube band names are compared whatever their case ---------------------------------
def test_cube_with_lower_case_bands_accepts_upper_case_scenes(tmp_path):
    from changedet.errors import CubeError
    from tests.test_cube import image, make_cube, scene

    cube = make_cube(tmp_path)
    assert cube.append(scene(1), image(1, bands=["b02", "b03", "b04"]))
    # A later scene from a catalogue spells them in upper case: the same bands.
    assert cube.append(scene(2), image(2, bands=["B02", "B03", "B04"]))
    assert cube.append(scene(3), image(3, bands=["B02", "b03", "B04"]))
    assert [s["scene_id"] for s in cube.scenes()] == ["s1", "s2", "s3"]
    out = cube.read()
    assert [str(b) for b in out["band"].values] == ["b02", "b03", "b04"]  # stored names kept
    np.testing.assert_allclose(out.values[1], image(2).values, atol=1e-4)
    assert cube.info()["bands"] == ["b02", "b03", "b04"]
    # Other bands, or the same in another order, are still refused.
    for bands in (["B02", "B03", "B08"], ["B03", "B02", "B04"]):
        with pytest.raises(CubeError, match="has bands"):
            cube.append(scene(4), image(4, bands=bands))


def test_cube_class_bands_still_need_their_exact_name(tmp_path):
    """A lower-case ``clm`` in an old cube was stored as data, not as the cloud mask."""
    from changedet.errors import CubeError
    from tests.test_cube import image, make_cube, scene

    cube = make_cube(tmp_path)
    cube.append(scene(1), image(1, bands=["b02", "b03", "clm"]))
    with pytest.raises(CubeError, match="lower-case scl/clm"):
        cube.append(scene(2), image(2, bands=["B02", "B03", "CLM"]))
    # Names that differ only by case within one scene cannot be matched by name.
    other = make_cube(tmp_path / "two")
    other.append(scene(1), image(1, bands=["b02", "B02", "b04"]))
    with pytest.raises(CubeError, match="has bands"):
        other.append(scene(2), image(2, bands=["B02", "b02", "B04"]))


# -- 3. SCL values that are no class are not clear ---------------------------------------
def _scl(values):
    from changedet.grid import GridSpec

    v = np.asarray(values, dtype="float32").reshape(1, -1)
    return GridSpec.from_bounds("EPSG:32633", (0, 0, 10 * v.shape[1], 10), 10.0).attach(v)


def test_scl_values_outside_the_classes_are_no_data():
    from changedet.cloudmask import scl_cloud

    got = scl_cloud(_scl([4, 5, 8, 12, 255, 65535, 4.5, -1, 99, np.nan, 0])).values[0]
    # 4, 5 clear; 8 cloud; 12, 255, 65535, 4.5, -1, 99 are no class: not observed (the old code said clear).
    np.testing.assert_array_equal(got[:3], [0, 0, 1])
    assert np.isnan(got[3:]).all()


def test_scl_band_that_is_one_fill_value_is_all_no_data():
    from changedet.cloudmask import cloud_fraction, scl_cloud

    mask = scl_cloud(_scl([255] * 6))
    assert np.isnan(mask.values).all() and cloud_fraction(mask) is None


def test_band_named_scl_without_scl_classes_is_refused():
    from changedet.cloudmask import NotSCLBandError as SourceError  # not retried: see test_not_scl_band_...
    from changedet.cloudmask import cloud_mask, with_cloud_band
    from tests.test_cloudmask import _bands

    da = _bands(["B02", "B03", "B04", "SCL"])
    rng = np.random.default_rng(0)
    da.loc[{"band": "SCL"}] = rng.uniform(0.01, 0.6, da.shape[1:]).astype("float32")  # reflectance, not classes
    da.attrs["source"] = "scene_2023-10-05.tif"
    with pytest.raises(SourceError, match=r"band SCL of scene_2023-10-05.tif is not a Sentinel-2 SCL band"):
        cloud_mask(da)
    with pytest.raises(SourceError, match="not a Sentinel-2 SCL band"):
        with_cloud_band(da)
    # With real classes somewhere, values that are no class are only left out.
    da.loc[{"band": "SCL"}][0, 0] = 4
    mask, method = cloud_mask(da)
    assert method == "scl" and mask.values[0, 0] == 0 and np.isnan(mask.values).sum() == mask.size - 1


# -- 4. cube store failures are clear errors naming the store and the fix ----------------
def _cube(root, **kw):
    from changedet.cube import Cube
    from tests.test_cube import GRID

    return Cube(root, "site", "vhr", GRID, **kw)


def test_unknown_store_protocol_is_a_clear_error():
    from changedet.cube import CubeStoreError

    with pytest.raises(CubeStoreError, match=r"cube store foo://bucket/x: unknown storage protocol foo://"):
        _cube("foo://bucket/x")


def test_missing_store_backend_says_what_to_install(monkeypatch):
    from fsspec.registry import known_implementations

    from changedet.cube import CubeStoreError

    monkeypatch.setitem(known_implementations, "nobackend",
                        {"class": "changedet_no_such_pkg.FS", "err": "Install changedet-no-such-pkg for nobackend://"})
    with pytest.raises(CubeStoreError, match="fsspec backend for nobackend:// is not installed") as err:
        _cube("nobackend://bucket/x")
    assert "changedet-no-such-pkg" in str(err.value) and "install it" in str(err.value)


def test_credentials_in_the_store_url_are_refused_and_not_shown():
    from changedet.cube import CubeStoreError

    for url in ("s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/prefix", "s3://AKIAEXAMPLE@bucket/prefix",
                "https://alice:hunter22@example.org/cubes",
                # About half of AWS secret keys hold a "/"; a password may hold "@".
                "s3://AKIAEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCY@bucket/prefix",
                "s3://AKIAEXAMPLE:p@ssw0rd@bucket/prefix", "gs://AKIAEXAMPLE:a/b@c?d#e@bucket/prefix"):
        with pytest.raises(CubeStoreError, match="carries credentials") as err:
            _cube(url)
        text = str(err.value)
        for secret in ("wJalrXUtnFEMI", "K7MDENG", "AKIAEXAMPLE", "hunter22", "p@ss", "ssw0rd", "a/b", "c?d"):
            assert secret not in text, (url, text)
        assert "***@bucket/prefix" in text or "***@example.org/cubes" in text, text


def test_remote_store_permission_denied_names_the_store(monkeypatch):
    import sys
    import uuid

    from fsspec.implementations.memory import MemoryFileSystem

    from changedet.cube import CubeStoreError
    from tests.test_cube import image, scene

    class Denied(MemoryFileSystem):
        """A memory:// store whose writes are refused, as S3 answers AccessDenied."""

        protocol = "deniedmem"

        def pipe_file(self, path, value, **kw):
            raise PermissionError("Access Denied")

    registry = sys.modules["fsspec.registry"]
    monkeypatch.setitem(registry._registry, "deniedmem", Denied)
    cube = _cube(f"deniedmem://bucket-{uuid.uuid4().hex[:8]}/x", storage_options={"secret": "s3cr3tvalue"})
    with pytest.raises(CubeStoreError, match=r"cube store deniedmem://bucket-\w+/x/cubes/site/vhr_1m.zarr: cannot "
                                             r"store scene s1: permission denied") as err:
        cube.append(scene(1), image(1))
    assert "check the credentials" in str(err.value)


def test_local_store_without_write_permission(tmp_path):
    """A data directory the user may not write: one line naming it, not a PermissionError traceback."""
    import shutil
    import subprocess
    import sys
    import tempfile

    probe = ("import json, sys\n"
             "from changedet.cube import Cube\n"
             "from tests.test_cube import GRID, image, scene\n"
             "try:\n"
             "    Cube(sys.argv[1], 'site', 'vhr', GRID).append(scene(1), image(1))\n"
             "    print(json.dumps(['stored', '']))\n"
             "except Exception as exc:\n"
             "    print(json.dumps([type(exc).__name__, str(exc)]))\n")
    root = tempfile.mkdtemp(prefix="changedet-ro-")
    try:
        os.chmod(root, 0o555)
        cmd = [sys.executable, "-c", probe, root]
        if os.geteuid() == 0:
            # Root writes anywhere: run the probe as nobody, for whom the folder is read-only.
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: cannot drop write permission")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=os.getcwd())
        kind, text = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        os.chmod(root, 0o755)
        shutil.rmtree(root, ignore_errors=True)
    assert kind == "CubeStoreError", (kind, text, out.stderr[-2000:])
    assert f"cube store {root}/cubes/site/vhr_1m.zarr" in text and "permission denied" in text
    assert "write access" in text


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API (moto's server) on 127.0.0.1, with one bucket ``cubes``."""
    import socket

    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": url}, key="testing", secret="testing").mkdir("cubes")
    yield url
    server.stop()


def _s3_options(endpoint: str) -> dict:
    return {"client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}, "key": "testing",
            "secret": "testing-secret-value", "skip_instance_cache": True,
            "config_kwargs": {"connect_timeout": 1, "read_timeout": 2, "retries": {"max_attempts": 1}}}


def test_s3_store_round_trip_and_missing_bucket(s3_endpoint):
    from changedet.cube import CubeStoreError, CubeStoreUnavailable
    from tests.test_cube import image, scene

    cube = _cube("s3://cubes/prefix", storage_options=_s3_options(s3_endpoint))
    assert cube.append(scene(1), image(1))
    np.testing.assert_allclose(cube.read().values[0], image(1).values, atol=1e-4)
    missing = _cube("s3://no-such-bucket/prefix", storage_options=_s3_options(s3_endpoint))
    with pytest.raises(CubeStoreError, match="cube store s3://no-such-bucket/prefix/cubes/site/vhr_1m.zarr: "
                                             "cannot store scene s1: it does not exist") as err:
        missing.append(scene(1), image(1))
    assert "create the bucket" in str(err.value) and not isinstance(err.value, CubeStoreUnavailable)
    assert "testing-secret-value" not in str(err.value)


def test_unreachable_s3_endpoint_is_a_transient_store_error():
    import socket

    from changedet.cube import CubeStoreUnavailable
    from changedet.errors import CubeError, StoreError
    from tests.test_cube import image, scene

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cube = _cube("s3://cubes/prefix", storage_options=_s3_options(f"http://127.0.0.1:{port}"))
    for call in (lambda: cube.append(scene(1), image(1)), cube.scenes):
        with pytest.raises(CubeStoreUnavailable, match=r"cube store s3://cubes/prefix/cubes/site/vhr_1m.zarr: "
                                                       r"cannot .*: the store did not answer") as err:
            call()
        # Flows retry StoreError (transient) and not other CubeErrors: this is both.
        assert isinstance(err.value, StoreError) and isinstance(err.value, CubeError)
        assert "testing-secret-value" not in str(err.value)


# -- 5. deliveries that keep failing are reported as stuck (and still retried) -----------
def _failing(root, *, attempts: int, recorded=NOW, channel="email"):
    """An outbox whose one alert event (recorded at ``recorded``) failed ``attempts`` times on ``channel``."""
    with Outbox(root, clock=lambda: recorded, retry_base_s=60) as ob:
        alert, _ = ob.open_or_update(_finding())
        for k in range(attempts):
            ob.mark_failed(alert.id, "opened", channel, f"550 no such user (try {k + 1})", now=recorded)
    return alert


def test_outbox_stuck_by_attempts_or_age(tmp_path):
    from changedet.errors import StoreError

    a = _failing(tmp_path / "a", attempts=10)
    with Outbox(tmp_path / "a") as ob:
        (d,) = ob.stuck(now=NOW + timedelta(minutes=1))
        assert (d["alert_id"], d["event"], d["channel"], d["attempts"]) == (a.id, "opened", "email", 10)
        assert "try 10" in d["last_error"] and d["since"].startswith("2023-10-06T08:00")
        assert ob.stuck(now=NOW, max_attempts=11) == []
        assert ob.stuck("slack", now=NOW) == []
        # Still due for its retry: nothing is dropped.
        assert ob.pending_events("email", now=NOW + timedelta(hours=7))
        for bad in ({"max_attempts": 0}, {"max_attempts": 2.5}, {"max_age_h": 0}, {"max_age_h": float("nan")}):
            with pytest.raises(StoreError, match="max_"):
                ob.stuck(**bad)
    _failing(tmp_path / "b", attempts=2)
    with Outbox(tmp_path / "b") as ob:
        assert ob.stuck(now=NOW + timedelta(hours=23)) == []
        assert [d["attempts"] for d in ob.stuck(now=NOW + timedelta(hours=24))] == [2]
        assert ob.stuck(now=NOW + timedelta(hours=2), max_age_h=1.5) != []


def test_outbox_stuck_skips_delivered_untried_and_in_flight(tmp_path):
    alert = _failing(tmp_path / "o", attempts=12)
    later = NOW + timedelta(days=3)
    with Outbox(tmp_path / "o", clock=lambda: later) as ob:
        assert ob.stuck(now=later) and ob.stuck("email2", now=later) == []  # never tried there
        (event_id, _a, _e), = ob.pending_events("email", now=later)
        assert ob.claim(event_id, "email", now=later, lease_s=300) is not None
        assert ob.stuck(now=later) == []  # a sender holds it right now
        assert len(ob.stuck(now=later + timedelta(minutes=10))) == 1  # its lease ran out: stuck again
        ob.mark_delivered(alert.id, "opened", "email", event_id=event_id)
        assert ob.stuck(now=later + timedelta(minutes=10)) == []


def _deliver(capsys, monkeypatch, root, *extra, keep=()):
    """``changedet alerts deliver`` with no CHANGEDET_* settings but ``keep``: (exit, stdout or JSON, stderr)."""
    from changedet.cli import main

    for k in [k for k in os.environ if k.startswith("CHANGEDET_") and k not in keep]:
        monkeypatch.delenv(k)
    rc = main(["alerts", "--data-dir", str(root), "deliver", *extra])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if "--json" in extra else out.out), out.err


def test_cli_deliver_reports_stuck_deliveries_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    alert = _failing(tmp_path / "outbox", attempts=10)
    # The email channel is not configured here: listed and marked, but not counted (exit 0).
    rc, doc, err = _deliver(capsys, monkeypatch, tmp_path, "--json")
    assert rc == 0 and doc["exit"] == 0 and doc["stuck_count"] == 0 and doc["stuck_not_counted"] == 1
    assert doc["stuck"][0]["alert_id"] == alert.id and doc["stuck"][0]["channel"] == "email"
    assert doc["stuck"][0]["not_counted"] == "channel not configured"
    assert "no delivery channel configured" in err  # the human lines leave stdout to the JSON
    rc, text, _ = _deliver(capsys, monkeypatch, tmp_path)
    assert rc == 0 and "STUCK: 1 delivery failing for 10+ attempts or 24+ h" in text
    assert f"{alert.id} (opened) on email: 10 failed attempt(s)" in text and "try 10" in text
    assert "[not counted: channel not configured" in text
    # Below the attempts limit it is still stuck by age (recorded in 2023), unless the age limit is longer.
    rc, doc, _ = _deliver(capsys, monkeypatch, tmp_path, "--json", "--stuck-attempts", "11")
    assert doc["stuck_not_counted"] == 1
    rc, doc, _ = _deliver(capsys, monkeypatch, tmp_path, "--json", "--stuck-attempts", "11",
                          "--stuck-hours", str(24 * 365 * 100))
    assert rc == 0 and doc["stuck"] == []


def test_cli_deliver_counts_stuck_per_configured_channel(tmp_path, capsys, monkeypatch):
    """A channel that fails again this run: its line and the JSON carry the stuck count."""
    import urllib.error
    import urllib.request

    def down(request, timeout=None):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    _failing(tmp_path / "outbox", attempts=3, channel="slack")
    monkeypatch.setattr(urllib.request, "urlopen", down)
    monkeypatch.setenv("CHANGEDET_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/s3cr3tToken")
    rc, doc, err = _deliver(capsys, monkeypatch, tmp_path, "--json", "--stuck-attempts", "4",
                            keep=("CHANGEDET_SLACK_WEBHOOK_URL",))
    # The retry was due (its backoff ran out in 2023) and failed a 4th time: stuck now.
    assert rc == 3 and doc["channels"]["slack"]["failed"] == 1 and doc["channels"]["slack"]["stuck"] == 1
    assert doc["stuck"][0]["attempts"] == 4 and "s3cr3tToken" not in json.dumps(doc) + err


def test_cli_deliver_refuses_bad_stuck_limits(tmp_path, capsys, monkeypatch):
    from changedet.alerts import outbox
    from changedet.cli import alerts as cli_alerts

    assert (cli_alerts.STUCK_ATTEMPTS, cli_alerts.STUCK_HOURS) == (outbox.STUCK_ATTEMPTS, outbox.STUCK_HOURS)
    _failing(tmp_path / "outbox", attempts=1)
    for args in (("--stuck-attempts", "0"), ("--stuck-hours", "-1"), ("--stuck-hours", "nan")):
        rc, _out, err = _deliver(capsys, monkeypatch, tmp_path, *args)
        assert rc == 2 and "--stuck-" in err


# -- review of e3d98fa (MEND1) -----------------------------------------------------------
def _failing_store(monkeypatch, protocol: str, exc: BaseException):
    """A memory:// store under ``protocol`` whose writes raise ``exc`` (what s3fs/aiohttp/botocore raise)."""
    import sys
    import uuid

    from fsspec.implementations.memory import MemoryFileSystem

    class Failing(MemoryFileSystem):
        def pipe_file(self, path, value, **kw):
            raise exc

    Failing.protocol = protocol
    monkeypatch.setitem(sys.modules["fsspec.registry"]._registry, protocol, Failing)
    return f"{protocol}://bucket-{uuid.uuid4().hex[:8]}/x"


def _transient(exc: BaseException) -> bool:
    """What ``flows/tasks.py::worth_retrying`` decides (without importing prefect)."""
    from changedet.cube import CubeLocked
    from changedet.errors import ChangedetError, SourceError, StoreError

    return not isinstance(exc, ChangedetError) or isinstance(exc, (SourceError, StoreError, CubeLocked))


def test_transient_store_failures_stay_retried_and_configuration_errors_do_not(monkeypatch):
    """An S3 500 (s3fs: OSError(EREMOTEIO)), a dropped connection or a payload cut mid-transfer
    is retried by flows as before e3d98fa; a misspelt region, missing credentials or a 403 is not."""
    import errno

    aiohttp = pytest.importorskip("aiohttp")
    be = pytest.importorskip("botocore.exceptions")
    from yarl import URL

    from changedet.cube import CubeStoreError, CubeStoreUnavailable
    from tests.test_cube import image, scene

    request = aiohttp.RequestInfo(URL("https://s3.example/x"), "PUT", {}, URL("https://s3.example/x"))
    transient = {
        "s3500": OSError(errno.EREMOTEIO, "We encountered an internal error. Please try again."),
        "plainoserr": OSError("Connection broken: IncompleteRead"),
        "disc": aiohttp.ServerDisconnectedError(),
        "payload": aiohttp.ClientPayloadError("Response payload is not completed"),
        "stream": be.ResponseStreamingError(error="connection broken"),
        "http503": aiohttp.ClientResponseError(request, (), status=503, message="Slow Down"),
        "http429": aiohttp.ClientResponseError(request, (), status=429, message="Too Many Requests"),
    }
    permanent = {
        "region": be.UnknownEndpointError(service_name="s3", region_name="us-esat-1"),
        "resolve": be.EndpointResolutionError(msg="bad endpoint rule"),
        "endpointcfg": be.InvalidEndpointConfigurationError(msg="bad endpoint"),
        "nocreds": be.NoCredentialsError(),
        "param": be.ParamValidationError(report="Invalid bucket name"),
        "http403": aiohttp.ClientResponseError(request, (), status=403, message="Forbidden"),
        "einval": OSError(errno.EINVAL, "Invalid argument"),
    }
    for name, exc in {**transient, **permanent}.items():
        cube = _cube(_failing_store(monkeypatch, name, exc))
        with pytest.raises(CubeStoreError, match=f"cube store {name}://bucket-") as err:
            cube.append(scene(1), image(1))
        assert isinstance(err.value, CubeStoreUnavailable) == (name in transient), (name, err.value)
        assert _transient(err.value) == (name in transient), (name, err.value)


def test_store_error_text_masks_option_secrets_and_signed_urls(monkeypatch):
    """The backend's own error text carries the secret and a pre-signed URL: neither is shown."""
    import errno

    from changedet.cube import CubeStoreError
    from tests.test_cube import image, scene

    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz"
    signed = ("https://bucket.s3.amazonaws.com/x/data?X-Amz-Algorithm=AWS4-HMAC-SHA256"
              "&X-Amz-Credential=AKIAEXAMPLE%2F20231006&X-Amz-Signature=0123456789abcdef")
    for name, exc in (("maskdenied", PermissionError(f"Access Denied for secret {secret} at {signed}")),
                      ("mask500", OSError(errno.EREMOTEIO, f"InternalError at {signed} (key secret {secret})"))):
        cube = _cube(_failing_store(monkeypatch, name, exc), storage_options={"secret": secret})
        with pytest.raises(CubeStoreError) as err:
            cube.append(scene(1), image(1))
        text = str(err.value)
        assert "***" in text and secret not in text and "K7MDENG" not in text, text
        assert "X-Amz-Signature" not in text and "0123456789abcdef" not in text and "AKIAEXAMPLE" not in text, text
        assert "https://bucket.s3.amazonaws.com/x/data" in text  # the URL is still named


def test_stuck_by_age_needs_two_failed_attempts(tmp_path):
    """An event recorded long before its first try (a backlog) is not stuck after one greylisting."""
    with Outbox(tmp_path / "o", clock=lambda: NOW, retry_base_s=60) as ob:
        alert, _ = ob.open_or_update(_finding())
    later = NOW + timedelta(hours=25)
    with Outbox(tmp_path / "o", clock=lambda: later, retry_base_s=60) as ob:
        ob.mark_failed(alert.id, "opened", "email", "451 4.7.1 greylisted", now=later)
        assert ob.stuck(now=later) == []
        ob.mark_failed(alert.id, "opened", "email", "451 4.7.1 greylisted", now=later + timedelta(minutes=2))
        assert [d["attempts"] for d in ob.stuck(now=later + timedelta(minutes=2))] == [2]
        assert ob.stuck(now=later + timedelta(minutes=2), max_attempts=1) != []


def test_resolve_cancels_failed_deliveries_and_keeps_them(tmp_path):
    alert = _failing(tmp_path / "o", attempts=10, channel="slack")
    later = NOW + timedelta(days=3)
    with Outbox(tmp_path / "o", clock=lambda: later) as ob:
        assert ob.stuck(now=later) and ob.pending_events("slack", now=later)
        ob.resolve(alert.id)  # by default nothing is cancelled (the pipeline's own resolving)
        assert ob.stuck(now=later)[0]["alert_status"] == "resolved"
        ob.resolve(alert.id, cancel_failed=True)  # again, on a resolved alert: cancels
        (row,) = ob.delivery_state(alert.id, "opened", "slack")
        assert row["status"] == "cancelled" and row["attempts"] == 10  # kept, not deleted
        assert ob.stuck(now=later) == [] and ob.pending_events("slack", now=later) == []
        assert ob.cancel_failed(alert.id) == 0


def test_cli_deliver_exit_3_is_cleared_by_resolving_the_alert(tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    from changedet.cli import main

    def down(request, timeout=None):
        raise urllib.error.HTTPError("https://hooks.slack.com/services/x", 404, "no_service", {}, None)

    alert = _failing(tmp_path / "outbox", attempts=10, channel="slack")
    monkeypatch.setattr(urllib.request, "urlopen", down)
    monkeypatch.setenv("CHANGEDET_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/s3cr3tToken")
    keep = ("CHANGEDET_SLACK_WEBHOOK_URL",)
    rc, doc, _ = _deliver(capsys, monkeypatch, tmp_path, "--json", keep=keep)
    assert rc == 3 and doc["stuck_count"] == 1 and doc["stuck"][0]["not_counted"] is None
    # Resolved but not cancelled (e.g. resolved by the pipeline): listed, marked, not counted.
    with Outbox(tmp_path / "outbox") as ob:
        ob.resolve(alert.id)
    rc, text, _ = _deliver(capsys, monkeypatch, tmp_path, "--stuck-attempts", "1", keep=keep)
    assert rc != 3 and "[not counted: alert resolved" in text and f"alerts resolve {alert.id}" in text
    # `alerts resolve` (again) cancels what failed: no longer retried nor listed.
    assert main(["alerts", "--data-dir", str(tmp_path), "resolve", alert.id]) == 0
    assert "1 failed delivery cancelled" in capsys.readouterr().out
    rc, doc, _ = _deliver(capsys, monkeypatch, tmp_path, "--json", keep=keep)
    assert rc == 0 and doc["stuck"] == [] and doc["channels"]["slack"]["failed"] == 0
    with Outbox(tmp_path / "outbox") as ob:
        assert ob.delivery_state(alert.id, "opened", "slack")[0]["status"] == "cancelled"
    from changedet.cli.alerts import DELIVER_HELP

    assert "cancels the alert's failed deliveries" in DELIVER_HELP


def test_not_scl_band_names_the_scene_and_is_not_retried():
    from changedet.cloudmask import NotSCLBandError, cloud_mask, scl_cloud, with_cloud_band
    from changedet.errors import RasterError
    from tests.test_cloudmask import _bands

    da = _bands(["B02", "B03", "B04", "SCL"])
    da.loc[{"band": "SCL"}] = np.random.default_rng(0).uniform(0.01, 0.6, da.shape[1:]).astype("float32")
    da.attrs = {"scene_id": "S2B_MSIL2A_20231005T021319_T52TFN", "sensor": "s2"}  # as sources set them
    with pytest.raises(NotSCLBandError, match="band SCL of S2B_MSIL2A_20231005T021319_T52TFN is not") as err:
        cloud_mask(da)
    assert isinstance(err.value, RasterError) and not _transient(err.value)
    with pytest.raises(NotSCLBandError, match="band SCL of scene-42 is not"):
        with_cloud_band(da, source="scene-42")
    with pytest.raises(NotSCLBandError, match="band SCL of scene-43 is not"):
        scl_cloud(da.sel(band="SCL", drop=True), source="scene-43")
    da.attrs = {}
    with pytest.raises(NotSCLBandError, match="band SCL of the image is not"):
        cloud_mask(da)


@pytest.mark.slow
def test_pipeline_runs_on_a_cube_whose_bands_differ_in_case(tmp_path, monkeypatch):
    """A cube built from local files (b02...) then fed catalogue scenes (B02...): the change
    baseline and evidence read the history by the new scene's names (a KeyError before)."""
    from datetime import date

    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, dates_between, run_day
    from changedet.sources import simulator

    load = simulator.SimulatorSource.load
    lower = {"on": True}

    def lower_case_load(self, scene, grid, **kw):
        da = load(self, scene, grid, **kw)
        if lower["on"]:
            da = da.assign_coords(band=[b if b in ("CLM", "SCL") else b.lower() for b in map(str, da.band.values)])
        return da

    monkeypatch.setattr(simulator.SimulatorSource, "load", lower_case_load)
    cfg = RunConfig(data_dir=tmp_path)
    aoi = load_aoi("khasan_railyard")
    days = dates_between(date(2023, 7, 6), date(2023, 8, 3), 7)
    for day in days[:-1]:
        run_day(aoi, day, cfg)
    lower["on"] = False
    r = run_day(aoi, days[-1], cfg)
    assert r.status == "processed" and "changed_area_m2" in r.metrics, (r.status, r.skipped)
