"""Session 18: daily-run defects left open in session 17.

1. ``changedet serve`` (``flows.deploy.build_deployments``) deploys the valid AOIs when an AOI
   file of the registry is broken, naming the broken file(s); it refuses only when no AOI is
   valid or an AOI the user named is broken.
2. ``changedet report`` over the whole registry reports the valid AOIs when one file is broken,
   names the broken ones (stderr and the index page) and exits 1.
3. A new AOI with no source usable here (Sentinel Hub credentials missing, no local folder) is a
   configuration error (``SourceConfigError``, not retried), naming the AOI file, each entry and
   the environment variables to set, never a secret.
4. Every changedet exception pickles with its message and fields (errors cross process
   boundaries in Dask and Prefect).
5. STAC probes send the headers the fetch uses.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import logging
import pickle
import pkgutil
from datetime import date

import sys
from pathlib import Path

import pytest

import changedet
from changedet.errors import ChangedetError, SourceConfigError

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline_s17 import no_prefect_context, scenes  # noqa: E402,F401  (fixtures)

# -- 4. pickling ------------------------------------------------------------------------------


def _all_modules():
    """Every module of changedet and flows; those needing an optional package absent here are skipped."""
    import flows

    for pkg in (changedet, flows):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if info.name.endswith("__main__"):  # runs the CLI on import
                continue
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] in ("changedet", "flows"):
                    raise
            except ImportError:
                pass


def _subclasses(cls):
    out = set()
    for sub in cls.__subclasses__():
        out.add(sub)
        out |= _subclasses(sub)
    return out


def _value(name: str):
    """A non-default value for an exception's ``__init__`` parameter ``name`` (None: not known)."""
    from changedet.acquire import FetchReport, SceneOutcome

    report = FetchReport("yard", "local", "vhr", "/data/yard", (SceneOutcome("s1", "2024-01-02T10:00:00", "failed",
                                                                             "no band"),), stopped="stopped at s1")
    values = {
        "message": "the message naming the input and the fix", "report": report, "option": "bands",
        "reason": "the file is there but cannot be read", "results": {"yard": [{"status": "ok"}]},
        "failures": [("yard", "2024-01-02", "boom")], "broken": ["/reg/x.yaml: bad"], "address": "tcp://s:8786",
        "date": "after", "index": 2, "band": "nir", "value": 0.5, "indices": (2, 3), "bands": ("nir", "swir"),
    }
    if name == "outcome":
        from changedet.alerts.email import EmailOutcome

        return EmailOutcome(accepted=("a@x.org",), refused={"b@x.org": (550, "no such user")})
    return values.get(name)


def _instance(cls):
    kwargs, args = {}, []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            if not args:  # Exception's own (*args): the message
                args.append(_value("message"))
            continue
        v = Path("/out/report/index.html") if "Path" in str(p.annotation) else _value(p.name)
        if v is None:
            assert p.default is not p.empty, f"{cls.__qualname__}.__init__ takes {p.name!r}: give _value one for it"
            continue
        (args.append(v) if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and not kwargs
         else kwargs.__setitem__(p.name, v))
    return cls(*args, **kwargs)


def _plain_round_trip(exc):
    """``exc`` pickled and back by plain pickle: tblib, which Dask and Prefect install into copyreg
    for the exception classes they meet, rebuilds some exceptions pickle itself cannot, and a
    process that never imported them (a Prefect result reader, multiprocessing) has only pickle."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf)
    pickler.dispatch_table = {}  # not copyreg's
    pickler.dump(exc)
    return pickle.loads(buf.getvalue())


def _every_exception_class():
    _all_modules()
    return sorted(_subclasses(ChangedetError) | {ChangedetError}, key=lambda c: (c.__module__, c.__qualname__))


def test_every_changedet_exception_pickles_with_its_message_and_fields():
    classes = _every_exception_class()
    names = {c.__qualname__ for c in classes}
    assert {"FetchStopped", "SourceConfigError", "DailyFailed", "BackfillFailed", "RecipientsRefused",
            "ReportIncomplete", "ConstantBandError"} <= names
    broken = []
    for cls in classes:
        exc = _instance(cls)
        try:
            back = _plain_round_trip(exc)
        except Exception as e:  # noqa: BLE001 - collected, all named below
            broken.append(f"{cls.__module__}.{cls.__qualname__}: {type(e).__name__}: {e}")
            continue
        if type(back) is not cls or str(back) != str(exc) or back.args != exc.args \
                or vars(back) != vars(exc):
            broken.append(f"{cls.__module__}.{cls.__qualname__}: {back!r} {vars(back)} != {exc!r} {vars(exc)}")
    assert not broken, "\n".join(broken)


def test_fetch_stopped_round_trips_with_its_report_and_option():
    from changedet.acquire import FetchStopped

    exc = _instance(FetchStopped)
    back = _plain_round_trip(exc)
    assert back.report == exc.report and back.report.stopped == "stopped at s1"
    assert back.option == "bands" and str(back) == "the message naming the input and the fix"
    assert isinstance(back, changedet.errors.SourceError)


def test_every_changedet_exception_can_be_sent_from_a_dask_worker():
    """A guard only, not a test of ``__reduce__``: it passes without it too (tblib, as Dask installs
    it, rebuilds those exceptions); it keeps every class sendable through ``flows.tasks.sendable``."""
    from flows.tasks import sendable

    for cls in _every_exception_class():
        assert sendable(_instance(cls)), cls


# -- 1. changedet serve deploys the valid AOIs ------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
BROKEN = "broken_site"


def _shipped_registry_with_a_broken_file(tmp_path):
    """The shipped AOIs and one site whose YAML has an analyst's typo."""
    import shutil

    reg = tmp_path / "aois"
    shutil.copytree(REPO / "aois", reg)
    (reg / f"{BROKEN}.geojson").write_text((reg / "dunai_port.geojson").read_text().replace("dunai_port", BROKEN))
    (reg / f"{BROKEN}.yaml").write_text("id: [unclosed\n")
    return reg


class _Records(logging.Handler):
    # On the logger itself: Prefect's logging setup replaces the root handlers (caplog's too).
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _deploy_logged(reg):
    """``build_deployments`` on registry ``reg``: ``(deployments, records logged by flows.deploy)``."""
    from flows.deploy import build_deployments

    seen, logger = _Records(), logging.getLogger("flows.deploy")
    logger.addHandler(seen)
    try:
        return build_deployments(registry=str(reg), data_dir="/data"), seen
    finally:
        logger.removeHandler(seen)


def test_serve_deploys_the_valid_aois_and_names_the_broken_file(tmp_path):
    from changedet.aoi import scan_registry

    reg = _shipped_registry_with_a_broken_file(tmp_path)
    valid = sorted(a.id for a in scan_registry(reg)[0])
    assert valid and BROKEN not in valid
    deps, seen = _deploy_logged(reg)
    daily = [d for d in deps if d.name.startswith("daily-")]
    assert sorted(i for d in daily for i in d.parameters["aoi_ids"]) == valid
    assert {d.name for d in deps} >= {"changedet-backfill", "changedet-report"}
    [rec] = seen.records
    text = rec.getMessage()
    assert rec.levelname == "WARNING" and str(reg / f"{BROKEN}.yaml") in text, text
    assert "NOT scheduled" in text and "changedet aois validate" in text and "restart `changedet serve`" in text


def test_serve_refuses_a_named_broken_aoi_and_a_registry_with_no_valid_one(tmp_path):
    from changedet.errors import AOIError
    from flows.deploy import build_deployments

    reg = _shipped_registry_with_a_broken_file(tmp_path)
    with pytest.raises(AOIError, match="named to serve") as info:
        build_deployments(aoi_ids=["dunai_port", BROKEN], registry=str(reg))
    assert str(reg / f"{BROKEN}.yaml") in str(info.value) and "--aoi" in str(info.value)
    with pytest.raises(AOIError, match="no AOI 'no_such_site'"):
        build_deployments(aoi_ids=["dunai_port", "no_such_site"], registry=str(reg))
    [d] = [d for d in build_deployments(aoi_ids=["dunai_port"], registry=str(reg)) if d.name.startswith("daily-")]
    assert d.parameters["aoi_ids"] == ["dunai_port"]
    for p in reg.glob("*.yaml"):
        if p.stem != BROKEN:
            p.unlink()
    with pytest.raises(AOIError, match=BROKEN):
        build_deployments(registry=str(reg))


# -- 2. changedet report over a registry with a broken file -----------------------------------


def test_report_over_the_registry_reports_the_valid_aois_names_the_broken_and_exits_1(tmp_path, capsys):
    from changedet.aoi import scan_registry
    from changedet.cli import main

    reg = _shipped_registry_with_a_broken_file(tmp_path)
    # Two valid sites are enough to see the others reported (the whole shipped registry is slow to draw).
    keep = sorted(a.id for a in scan_registry(reg)[0])[:2]
    for p in list(reg.glob("*.yaml")) + list(reg.glob("*.geojson")):
        if p.stem not in keep + [BROKEN]:
            p.unlink()
    (tmp_path / "data").mkdir()
    out = tmp_path / "report"
    rc = main(["report", "--all", "--data-dir", str(tmp_path / "data"), "--registry", str(reg), "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 1, cap
    assert f"report: {out / 'index.html'}" in cap.out
    assert str(reg / f"{BROKEN}.yaml") in cap.err and "changedet aois validate" in cap.err, cap.err
    index = (out / "index.html").read_text()
    for aoi_id in keep:
        assert (out / aoi_id / "index.html").exists() and f"{aoi_id}/index.html" in index
    assert "broken-aois" in index and f"{BROKEN}.yaml" in index
    # The library says the same with a typed error holding the index and the problems.
    from changedet.report import ReportIncomplete, build_report

    with pytest.raises(ReportIncomplete) as info:
        build_report(tmp_path / "data", tmp_path / "again", registry=reg)
    assert info.value.index == tmp_path / "again" / "index.html" and len(info.value.broken) == 1
    # Named AOIs are all wanted: a broken one is an error, as before; a good one alone is fine.
    assert main(["report", "--aoi", BROKEN, "--data-dir", str(tmp_path / "data"), "--registry", str(reg),
                 "--out", str(tmp_path / "named")]) == 2
    assert main(["report", "--aoi", keep[0], "--data-dir", str(tmp_path / "data"), "--registry", str(reg),
                 "--out", str(tmp_path / "named")]) == 0


# -- 3. a new AOI with no usable source is a configuration error ------------------------------

SECRET = "s3cr3t-never-printed-8c1f"
#: The new AOI (an id of its own: the session-17 flow test counts failed task runs named like its AOI).
NEW = "new_yard"


@pytest.fixture
def no_usable_source(scenes, tmp_path, monkeypatch):
    """A registry with ``NEW`` (the reduced railyard) whose entries are Sentinel Hub without a client id
    (the secret set) and a local entry without a path, beside ``GOOD`` (a working local entry)."""
    from test_pipeline_s17 import AOI, _copy_aoi, _two_aois

    for var in ("SH_CLIENT_ID", "SH_PROFILE", "CHANGEDET_SH_DEPLOYMENT", "SH_BASE_URL", "SH_TOKEN_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SH_CLIENT_SECRET", SECRET)
    reg, _ = _two_aois(scenes, tmp_path)
    _copy_aoi(reg, AOI, NEW, [{"name": "sentinelhub", "sensor": "s2", "resolution_m": 10},
                              {"name": "local", "sensor": "vhr", "resolution_m": 0.5}])  # no path: the entry's own
    (reg / f"{AOI}.yaml").unlink()  # only NEW and GOOD
    (reg / f"{AOI}.geojson").unlink()
    (tmp_path / "data").mkdir()  # the store exists, and holds no series of NEW: a new AOI
    return reg


def _says_what_to_fix(text, reg, tmp_path):
    assert str(reg / f"{NEW}.yaml") in text, text
    assert "SH_CLIENT_ID" in text and "SH_CLIENT_SECRET" in text and "sentinelhub (s2, 10 m)" in text, text
    assert "local (vhr, 0.5 m): no 'path' given" in text and "retry cannot help" in text, text
    assert SECRET not in text


def test_the_flows_do_not_retry_a_new_aoi_with_no_usable_source(no_usable_source, tmp_path, no_prefect_context):
    from prefect.states import Failed

    from flows.tasks import _process_aoi_day, worth_retrying
    from test_pipeline_s17 import QUIET

    with pytest.raises(SourceConfigError) as info:
        _process_aoi_day(NEW, QUIET[0], str(tmp_path / "data"), 0, str(no_usable_source), False, None)
    assert info.value.option == "sources" and str(info.value).startswith(f"{NEW} {QUIET[0]}: AOI file ")
    _says_what_to_fix(str(info.value), no_usable_source, tmp_path)
    assert not worth_retrying(None, None, Failed(data=_plain_round_trip(info.value)))


def test_run_stops_a_new_aoi_with_no_usable_source_and_the_others_go_on(no_usable_source, tmp_path, capsys):
    from changedet.cli import main
    from test_pipeline_s17 import GOOD, QUIET

    rc = main(["run", "--aoi", NEW, "--aoi", GOOD, "--start", str(QUIET[0]), "--end", str(QUIET[1]), "--every", "7",
               "--registry", str(no_usable_source), "--data-dir", str(tmp_path / "data"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    docs = [json.loads(x) for x in out.splitlines()]
    assert [(d["aoi_id"], d["status"]) for d in docs] == [(NEW, "failed"), (GOOD, "processed"), (GOOD, "processed")]
    assert docs[0]["misconfigured"]["option"] == "sources"
    _says_what_to_fix(docs[0]["note"], no_usable_source, tmp_path)
    assert f"{NEW} stopped on {QUIET[0]}" in err and "setting 'sources'" in err and SECRET not in err, err


def test_missing_sentinel_hub_credentials_are_a_configuration_error_naming_the_variable(monkeypatch):
    from changedet.sources.sentinelhub import ENV_DEPLOYMENT, SHSettings

    with pytest.raises(SourceConfigError) as info:
        SHSettings.from_env({"SH_CLIENT_SECRET": SECRET})
    assert info.value.option == "credentials" and "SH_CLIENT_ID not set" in str(info.value)
    assert SECRET not in str(info.value)
    with pytest.raises(SourceConfigError, match="SH_CLIENT_SECRET not set"):
        SHSettings.from_env({"SH_CLIENT_ID": "my-id"})
    with pytest.raises(SourceConfigError) as info:
        SHSettings.from_env({"SH_CLIENT_ID": "my-id", "SH_CLIENT_SECRET": SECRET, ENV_DEPLOYMENT: "nope"})
    assert info.value.option == ENV_DEPLOYMENT and SECRET not in str(info.value)


@pytest.mark.slow
def test_the_daily_flow_runs_the_other_aois_and_fails_the_new_one_without_retries(no_usable_source, tmp_path,
                                                                                  prefect_env):
    """Before: the flow asked for each AOI's source limit first, so one AOI without credentials
    failed the whole run (plain SourceError) before any AOI ran."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.daily import DailyFailed, daily_monitor
    from test_pipeline_s17 import GOOD, QUIET
    from tests.prefect_runs import settled_task_runs

    state = daily_monitor.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))(
        aoi_ids=[NEW, GOOD], day=QUIET[0], data_dir=str(tmp_path / "data"), registry=str(no_usable_source),
        kernels_on_cluster=False, return_state=True)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert isinstance(err, DailyFailed), err
    assert [(r["aoi_id"], r["status"]) for r in err.results] == [(GOOD, "processed")]
    [(aoi_id, day, text)] = err.failures
    assert aoi_id == NEW and "SourceConfigError" in text and f"{NEW}.yaml" in text and SECRET not in text, text
    # this flow run's task runs only: other tests on the shared server run NEW's day too
    run = settled_task_runs(state.state_details.flow_run_id, expect=[(NEW, str(day))]).get((NEW, str(day)))
    assert run is not None and run.state.type.value == "FAILED" and run.run_count == 1, run


# -- 5. STAC probes send the loader's headers -------------------------------------------------


@pytest.fixture
def protected_asset():
    """``(url, hits)``: a 127.0.0.1 asset answering 403 unless the request has X-Api-Key: k1 and
    basic auth u:p, as a protected archive that GDAL (given its options) can read."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = []
    want = "Basic " + base64.b64encode(b"u:p").decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(dict(self.headers))
            ok = self.headers.get("X-Api-Key") == "k1" and self.headers.get("Authorization") == want
            self.send_response(206 if ok else 403)
            self.send_header("Content-Length", "1" if ok else "0")
            self.end_headers()
            if ok:
                self.wfile.write(b"x")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/tiles/B04.tif", hits
    server.shutdown()
    server.server_close()


def test_stac_probes_send_the_headers_the_asset_loader_sends(protected_asset, monkeypatch):
    from types import SimpleNamespace

    from changedet.sources.stac import _first_refused_or_missing

    url, hits = protected_asset
    item = SimpleNamespace(id="S2B_T52TGN_20230606", assets={"B04": SimpleNamespace(href=url)})
    for var in ("GDAL_HTTP_HEADERS", "GDAL_HTTP_HEADER_FILE", "GDAL_HTTP_USERPWD", "GDAL_HTTP_AUTH"):
        monkeypatch.delenv(var, raising=False)
    # Without GDAL's auth the archive refuses the probe as it would refuse the load.
    assert _first_refused_or_missing([item], {"red": "B04"}) == (item.id, "B04", url, 403)
    # With it (as GDAL sends it on every /vsicurl/ request), the probe is let in like the load.
    monkeypatch.setenv("GDAL_HTTP_HEADERS", 'X-Api-Key: k1, X-Note: "a, b"')
    monkeypatch.setenv("GDAL_HTTP_USERPWD", "u:p")
    assert _first_refused_or_missing([item], {"red": "B04"}) is None
    assert hits[-1]["X-Api-Key"] == "k1" and hits[-1]["X-Note"] == "a, b" and hits[-1]["Range"] == "bytes=0-0"


def test_a_source_entry_the_source_refuses_is_a_configuration_error_naming_the_setting(monkeypatch):
    """Refused when the source is built (before any day runs): the entry's, never retried."""
    from changedet.sources.base import get_source
    from changedet.sources.local import LocalSource

    monkeypatch.setenv("SH_CLIENT_ID", "my-id")
    monkeypatch.setenv("SH_CLIENT_SECRET", SECRET)
    for kwargs, option in (({"colection": "sentinel-2-l2a"}, "options"), ({"cloud_band": "QA60"}, "cloud_band"),
                           ({"max_px": 0}, "max_px"), ({"collection": "landsat"}, "collection")):
        with pytest.raises(SourceConfigError) as info:
            get_source("sentinelhub", **kwargs)
        assert info.value.option == option and SECRET not in str(info.value), (kwargs, info.value)
    with pytest.raises(SourceConfigError) as info:
        LocalSource(path="/x", bands="B04")
    assert info.value.option == "bands"
    with pytest.raises(SourceConfigError) as info:
        get_source("stak")
    assert info.value.option == "name"
    with pytest.raises(SourceConfigError) as info:
        get_source("local", path="/x", colour="red")
    assert info.value.option == "options"


# -- session 18 review (PIPE10): the probe's credentials -------------------------------------


@pytest.fixture
def redirecting_archive():
    """``(url, seen)``: an asset on 127.0.0.1 that answers 302 to the same path on ``localhost`` (another
    host: a CDN or a presigned bucket), which answers 206; ``seen`` maps host to the headers it got."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: dict[str, list[dict]] = {"archive": [], "other": []}
    servers = []

    def handler(role):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen[role].append({k.lower(): v for k, v in self.headers.items()})
                if role == "archive" and self.path.startswith("/cross"):
                    self.send_response(302)
                    self.send_header("Location", f"http://localhost:{servers[1].server_port}/tiles/B04.tif")
                elif role == "archive" and self.path.startswith("/same"):
                    self.send_response(302)
                    self.send_header("Location", "/tiles/B04.tif")
                else:
                    self.send_response(206)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass
        return Handler

    for role, host in (("archive", "127.0.0.1"), ("other", "localhost")):
        servers.append(ThreadingHTTPServer((host, 0), handler(role)))
        threading.Thread(target=servers[-1].serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{servers[0].server_port}", seen
    for s in servers:
        s.shutdown()
        s.server_close()


def _gdal_env(monkeypatch, **values):
    for var in ("GDAL_HTTP_HEADERS", "GDAL_HTTP_HEADER_FILE", "GDAL_HTTP_USERPWD", "GDAL_HTTP_AUTH",
                "GDAL_HTTP_BEARER"):
        monkeypatch.delenv(var, raising=False)
    for var, value in values.items():
        monkeypatch.setenv(var, value)


def test_stac_probe_sends_credentials_to_the_first_host_only_across_a_redirect(redirecting_archive, monkeypatch):
    """As curl (GDAL's loader) does: Authorization and Cookie never go to another host (review finding 1)."""
    from changedet.sources.stac import _http_status, _loader_headers

    base, seen = redirecting_archive
    _gdal_env(monkeypatch, GDAL_HTTP_USERPWD="alice:hunter2", GDAL_HTTP_HEADERS="Cookie: session=abc, X-Trace: 1")
    headers = _loader_headers()
    assert _http_status(f"{base}/cross/B04.tif", headers) == 206
    [first], [other] = seen["archive"], seen["other"]
    assert first["authorization"].startswith("Basic ") and first["cookie"] == "session=abc"
    assert "authorization" not in other and "cookie" not in other, other
    assert other["x-trace"] == "1"  # other headers follow, as in curl
    # a redirect on the same host keeps them (the load reads it with them)
    assert _http_status(f"{base}/same/B04.tif", headers) == 206
    assert seen["archive"][-1]["authorization"] == first["authorization"]


@pytest.mark.parametrize("auth", ["ANY", "ANYSAFE", "NTLM", "DIGEST", "NEGOTIATE", "anysafe"])
def test_stac_probe_sends_no_preemptive_basic_when_gdal_would_not(monkeypatch, auth):
    """curl sends Basic unasked only with CURLAUTH_BASIC (GDAL_HTTP_AUTH unset or BASIC) (review finding 2)."""
    from changedet.sources.stac import _loader_headers

    _gdal_env(monkeypatch, GDAL_HTTP_USERPWD="alice:hunter2", GDAL_HTTP_AUTH=auth)
    assert _loader_headers() == {}
    _gdal_env(monkeypatch, GDAL_HTTP_USERPWD="alice:hunter2", GDAL_HTTP_AUTH="basic")
    assert _loader_headers() == {"Authorization": "Basic YWxpY2U6aHVudGVyMg=="}
    _gdal_env(monkeypatch, GDAL_HTTP_AUTH="BEARER", GDAL_HTTP_BEARER="TOK")
    assert _loader_headers() == {"Authorization": "Bearer TOK"}


def test_stac_probe_an_explicit_authorization_wins_in_any_letter_case(monkeypatch, tmp_path):
    """Review finding 6: header names ignore case; the user's token is sent, not the password."""
    from changedet.sources.stac import _loader_headers

    _gdal_env(monkeypatch, GDAL_HTTP_USERPWD="alice:hunter2", GDAL_HTTP_HEADERS="authorization: Bearer TOKEN")
    assert _loader_headers() == {"authorization": "Bearer TOKEN"}
    header_file = tmp_path / "headers.txt"
    header_file.write_text("AUTHORIZATION: Bearer FILE\nx-key: 1\n")
    _gdal_env(monkeypatch, GDAL_HTTP_AUTH="BEARER", GDAL_HTTP_BEARER="B", GDAL_HTTP_HEADER_FILE=str(header_file),
              GDAL_HTTP_HEADERS="X-Key: 2")
    assert _loader_headers() == {"AUTHORIZATION": "Bearer FILE", "x-key": "2"}


def test_stac_probe_splits_gdal_http_headers_as_gdal_does(monkeypatch):
    """Review finding 7: GDAL's one-header rule (no ':' after the first comma) and its limited escapes."""
    from changedet.sources.stac import _loader_headers

    _gdal_env(monkeypatch, GDAL_HTTP_HEADERS="Accept: text/plain, application/json")
    assert _loader_headers() == {"Accept": "text/plain, application/json"}
    _gdal_env(monkeypatch, GDAL_HTTP_HEADERS='X-Path: "C:\\new\\dir", X-Q: "say \\"hi\\" \\\\ ok"')
    assert _loader_headers() == {"X-Path": "C:\\new\\dir", "X-Q": 'say "hi" \\ ok'}
    _gdal_env(monkeypatch, GDAL_HTTP_HEADERS="A: 1, b\r\nC: 2")
    assert _loader_headers() == {"A": "1, b", "C": "2"}


# -- session 18 review (PIPE10): a share not mounted is not a configuration error -------------


def _series_on_a_share(tmp_path):
    """``(registry, share, data_dir)``: AOI ``yard`` with one local entry, its imagery and the data
    directory both on ``share/`` (a common NFS layout), and a stored series (its provenance record)."""
    import yaml

    reg = tmp_path / "aois"
    reg.mkdir()
    share = tmp_path / "share"
    (share / "imagery").mkdir(parents=True)
    doc = yaml.safe_load((REPO / "aois" / "dunai_port.yaml").read_text())
    doc["id"] = "yard"
    doc.pop("rules", None)
    doc.pop("recipients", None)
    doc["sources"] = [{"name": "local", "sensor": "vhr", "resolution_m": 0.5, "path": str(share / "imagery")}]
    (reg / "yard.yaml").write_text(yaml.safe_dump(doc))
    (reg / "yard.geojson").write_text((REPO / "aois" / "dunai_port.geojson").read_text().replace("dunai_port", "yard"))
    data = share / "data"
    (data / "cubes" / "yard").mkdir(parents=True)
    (data / "cubes" / "yard" / "vhr_0.5m.provenance.json").write_text(
        json.dumps({"scenes": [{"source": "local", "entry": "local:x"}]}))
    return reg, share, data


def test_a_series_whose_share_is_not_mounted_is_retried_not_a_configuration_error(tmp_path, no_prefect_context,
                                                                                 capsys):
    """Review finding 3: with the share away the series cannot be seen either, and the missing folder
    is what an unmounted share looks like: a failure that may pass (retried), never 'sources'."""
    import shutil

    from prefect.states import Failed

    from changedet.cli import main
    from changedet.errors import SourceUnavailable
    from flows.tasks import _process_aoi_day, worth_retrying

    reg, share, data = _series_on_a_share(tmp_path)
    shutil.move(str(share), str(tmp_path / "away"))  # unmounted: the mount point is empty
    with pytest.raises(SourceUnavailable) as info:
        _process_aoi_day("yard", date(2024, 1, 2), str(data), 0, str(reg), False, None)
    assert not isinstance(info.value, SourceConfigError) and "tried again" in str(info.value), info.value
    assert worth_retrying(None, None, Failed(data=_plain_round_trip(info.value)))
    rc = main(["run", "--aoi", "yard", "--start", "2024-01-02", "--end", "2024-01-16", "--every", "7",
               "--registry", str(reg), "--data-dir", str(data), "--json"])
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    [doc] = [json.loads(x) for x in out.splitlines()]
    assert doc["status"] == "failed" and not doc["misconfigured"], doc
    assert "yard stopped on 2024-01-02" in err and "may pass" in err and "setting 'sources'" not in err, err


def test_no_usable_source_is_a_configuration_error_whether_or_not_the_data_directory_exists(tmp_path,
                                                                                            monkeypatch):
    """Review FINAL 3: a data directory not made yet (a first run, a store folder written with the
    first cube) is no share not mounted; credentials missing are what to fix either way."""
    import yaml

    from changedet.acquire import unusable_sources_error
    from changedet.aoi import load_aoi
    from changedet.errors import SourceError, SourceUnavailable
    from changedet.pipeline import choose_source

    for var in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    reg, _, data = _series_on_a_share(tmp_path)
    doc = yaml.safe_load((reg / "yard.yaml").read_text())
    doc["sources"] = [{"name": "sentinelhub", "sensor": "s2", "resolution_m": 10}]
    (reg / "yard.yaml").write_text(yaml.safe_dump(doc))
    aoi = load_aoi("yard", registry=reg)
    with pytest.raises(SourceError) as info:
        choose_source(aoi, 0, reg, data)
    kind = unusable_sources_error(aoi, info.value, registry=reg, data_dir=data)
    assert isinstance(kind, SourceConfigError) and kind.option == "sources"  # the store is there
    kind = unusable_sources_error(aoi, info.value, registry=reg, data_dir=tmp_path / "not_made_yet")
    assert isinstance(kind, SourceConfigError) and kind.option == "sources", kind
    assert not isinstance(kind, SourceUnavailable)


def test_a_changedet_error_mixed_with_a_builtin_keeps_the_builtins_fields_when_pickled():
    """Review finding 8: fields in C slots (OSError's errno/filename, UnicodeError's, StopIteration's
    value) survive plain pickle, as they did before ChangedetError had a __reduce__."""

    class Missing(ChangedetError, OSError):
        pass

    class Undecodable(ChangedetError, UnicodeDecodeError):
        pass

    class Stop(ChangedetError, StopIteration):
        pass

    globals().update(Missing=Missing, Undecodable=Undecodable, Stop=Stop)  # pickle finds classes by name
    for cls in (Missing, Undecodable, Stop):
        cls.__qualname__ = cls.__name__
    try:
        back = _plain_round_trip(Missing(2, "No such file", "/x"))
        assert (back.errno, back.strerror, back.filename) == (2, "No such file", "/x")
        assert str(back) == "[Errno 2] No such file: '/x'"
        exc = Undecodable("utf-8", b"\xff", 0, 1, "bad")
        assert str(_plain_round_trip(exc)) == str(exc) != ""
        assert _plain_round_trip(Stop(42)).value == 42
    finally:
        for name in ("Missing", "Undecodable", "Stop"):
            globals().pop(name, None)


# -- session 18 review (PIPE10): a file broken when serve starts is not forgotten --------------


def _registry_with_a_two_typo_file(tmp_path):
    """Two valid shipped AOIs and ``bad_site``: ONE file with two problems (cadence and timezone)."""
    import shutil

    reg = tmp_path / "aois"
    reg.mkdir()
    for stem in ("dunai_port", "rajin_port"):
        for ext in ("yaml", "geojson"):
            shutil.copy(REPO / "aois" / f"{stem}.{ext}", reg)
    y = (REPO / "aois" / "dunai_port.yaml").read_text().replace("dunai_port", "bad_site")
    y = y.replace("cadence: weekly", "cadence: weakly").replace("timezone: Asia/Vladivostok",
                                                                "timezone: Asia/Vladivostock")
    assert "weakly" in y and "Vladivostock" in y
    (reg / "bad_site.yaml").write_text(y)
    (reg / "bad_site.geojson").write_text((REPO / "aois" / "dunai_port.geojson").read_text()
                                          .replace("dunai_port", "bad_site"))
    return reg


def test_serve_gives_the_broken_files_to_one_daily_deployment_and_counts_files(tmp_path):
    """Review findings 4 and 5: the ids of files broken at serve start go to the first daily
    deployment (checked on each of its runs); one file with two typos is ONE broken file."""
    from changedet.aoi import scan_registry
    from flows.daily import broken_text

    reg = _registry_with_a_two_typo_file(tmp_path)
    assert len(scan_registry(reg)[1]) == 2  # two problems, one file
    deps, seen = _deploy_logged(reg)
    daily = sorted((d for d in deps if d.name.startswith("daily-")), key=lambda d: d.name)
    assert len(daily) == 2
    assert daily[0].parameters["unscheduled"] == ["bad_site"], daily[0].parameters
    assert "unscheduled" not in daily[1].parameters
    [rec] = seen.records
    text = rec.getMessage()
    assert text.startswith("changedet serve: 1 AOI file(s)") and "weakly" in text and "Vladivostock" in text, text
    assert f"every run of {daily[0].name} fails naming them" in text, text
    assert broken_text([str(p) for p in scan_registry(reg)[1]]).startswith("1 AOI file(s)")


def test_report_counts_broken_files_not_problems(tmp_path, capsys):
    """Review finding 5: index.html and stderr say 1 broken file for one file with two typos."""
    from changedet.cli import main

    reg = _registry_with_a_two_typo_file(tmp_path)
    (tmp_path / "data").mkdir()
    rc = main(["report", "--all", "--data-dir", str(tmp_path / "data"), "--registry", str(reg),
               "--out", str(tmp_path / "rep")])
    _, err = capsys.readouterr()
    assert rc == 1 and "1 AOI file(s) of the registry are broken" in err, err
    index = (tmp_path / "rep" / "index.html").read_text()
    assert "Not in this report: 1 broken AOI file(s)" in index
    assert "weakly" in index and "Vladivostock" in index


def test_unscheduled_aois_are_named_while_broken_and_run_once_they_parse(tmp_path):
    from flows.daily import unscheduled_aois

    reg = _registry_with_a_two_typo_file(tmp_path)
    aois, problems = unscheduled_aois(["bad_site", "gone_site"], str(reg), {"dunai_port"})
    assert aois == [] and len(problems) == 1 and str(reg / "bad_site.yaml") in problems[0], problems
    (reg / "bad_site.yaml").write_text((reg / "bad_site.yaml").read_text().replace("weakly", "weekly")
                                       .replace("Vladivostock", "Vladivostok"))
    aois, problems = unscheduled_aois(["bad_site", "gone_site"], str(reg), {"dunai_port"})
    assert [a.id for a in aois] == ["bad_site"] and problems == []
    assert unscheduled_aois(["bad_site"], str(reg), {"bad_site"}) == ([], [])


@pytest.mark.slow
def test_the_daily_deployment_given_unscheduled_files_fails_naming_them_then_runs_them(scenes, tmp_path,
                                                                                       prefect_env):
    """Review finding 4: a file broken at serve start fails every run of the deployment that holds
    its id (naming it), and is run by it once fixed (no restart needed to be monitored)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.daily import DailyFailed, daily_monitor
    from test_pipeline_s17 import BROKEN as BAD, GOOD, QUIET, _registry_with_a_broken_file

    reg = _registry_with_a_broken_file(scenes, tmp_path)
    kw = dict(data_dir=str(tmp_path / "data"), registry=str(reg), kernels_on_cluster=False, return_state=True)
    runner = ThreadPoolTaskRunner(max_workers=2)
    state = daily_monitor.with_options(task_runner=runner)(aoi_ids=[GOOD], unscheduled=[BAD], day=QUIET[0], **kw)
    err = state.result(raise_on_failure=False)
    assert state.is_failed() and isinstance(err, DailyFailed), err
    assert [r["aoi_id"] for r in err.results] == [GOOD] and f"{BAD}.yaml" in err.broken[0], err.broken
    (reg / f"{BAD}.yaml").write_text((reg / f"{GOOD}.yaml").read_text().replace(GOOD, BAD))
    state = daily_monitor.with_options(task_runner=runner)(aoi_ids=[GOOD], unscheduled=[BAD], day=QUIET[0], **kw)
    assert state.is_completed(), state.message
    assert sorted(r["aoi_id"] for r in state.result()) == sorted([GOOD, BAD])


def test_the_report_task_retries_a_passing_failure_but_not_a_broken_aoi_file(tmp_path):
    """Review finding 9: only an AOI file's problem is not retried; a data directory missing for a
    moment (a share) keeps the report task's one retry."""
    from prefect.states import Failed

    from changedet.errors import AOIError
    from changedet.report import ReportError, ReportIncomplete
    from flows.tasks import render_report

    retry = render_report.retry_condition_fn
    assert retry(None, None, Failed(data=ReportError("data directory /mnt/share/data does not exist")))
    assert not retry(None, None, Failed(data=ReportIncomplete("1 broken", tmp_path / "index.html", ["x: bad"])))
    assert not retry(None, None, Failed(data=AOIError("/reg/x.yaml: bad cadence")))


# -- review FINAL ------------------------------------------------------------------------------


@pytest.mark.parametrize("stored_series", [True, False])
def test_a_setting_the_source_rejects_stops_the_aoi_with_or_without_a_stored_series(tmp_path, capsys,
                                                                                    stored_series):
    """Review FINAL 1: a local ``bands:`` list naming a band twice was, for an AOI with a stored
    series, a passing ``failed`` day ("restore its path or credentials") on every later day;
    now it stops the AOI naming the setting, as it did for a new AOI."""
    import numpy as np
    import rasterio
    import yaml
    from rasterio.transform import from_origin

    from changedet.cli import main

    reg, share, data = _series_on_a_share(tmp_path)
    with rasterio.open(share / "imagery" / "a_20240102.tif", "w", driver="GTiff", width=8, height=8, count=2,
                       dtype="uint8", crs="EPSG:32637", transform=from_origin(500000, 5000000, 0.5, 0.5)) as f:
        f.write(np.ones((2, 8, 8), "uint8"))
    doc = yaml.safe_load((reg / "yard.yaml").read_text())
    doc["sources"][0]["bands"] = ["B02", "b02"]   # an edit: one band named twice
    (reg / "yard.yaml").write_text(yaml.safe_dump(doc))
    if not stored_series:
        (data / "cubes" / "yard" / "vhr_0.5m.provenance.json").unlink()
    rc = main(["run", "--aoi", "yard", "--start", "2024-01-02", "--end", "2024-01-16", "--every", "7",
               "--registry", str(reg), "--data-dir", str(data), "--json"])
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert rc == 1
    assert [(d["day"], d["status"]) for d in docs] == [("2024-01-02", "failed")], docs
    assert docs[0]["misconfigured"]["option"] == "bands", docs[0]
    assert "yard stopped on 2024-01-02" in err and "setting 'bands'" in err and "2 later day(s) not run" in err, err
