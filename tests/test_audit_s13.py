"""Audit of the AOI, run, alerts and report paths (session 13): each test failed on the code before it."""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path

import pandas as pd
import pytest
import yaml

from changedet.alerts.delivery import ChannelConfig, flush
from changedet.alerts.outbox import Outbox
from changedet.aoi import load_aoi, validate
from changedet.baselines import Finding, evaluate, validate_params
from changedet.cli import main
from changedet.errors import DateError, RuleError
from changedet.pipeline import RunConfig, dates_between, run_day

AOIS = Path(__file__).resolve().parents[1] / "aois"
SECRET_PATH = "T0AUDIT/B0AUDIT/s3cr3tWebhookToken"


def _registry(tmp_path: Path, mutate) -> Path:
    reg = tmp_path / "aois"
    reg.mkdir()
    doc = yaml.safe_load((AOIS / "tumangang_railyard.yaml").read_text())
    mutate(doc)
    (reg / "tumangang_railyard.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(AOIS / "tumangang_railyard.geojson", reg)
    return reg


def _finding(value=75.0, day=date(2023, 10, 5)) -> Finding:
    return Finding(aoi_id="tumangang_railyard", aoi_name="Tumangang railyard", rule_id="railcar_surge",
                   metric="railcars", feature_id="__site__",
                   time=datetime(day.year, day.month, day.day, 2, tzinfo=timezone.utc), value=value,
                   severity="high", kind="robust_z", figures={"sign": 1}, message=f"{value:g} railcars")


# -- rules: day spans that overflow time arithmetic ------------------------------------------------
@pytest.mark.parametrize("kind,params", [("robust_z", {"window_days": 1e12}), ("trend", {"window_days": 1e6}),
                                         ("cusum", {"recent_days": 1e12}), ("robust_z", {"quiet_days": 1e12}),
                                         ("robust_z", {"cooldown_days": 1e10})])
def test_day_spans_beyond_a_century_are_refused_up_front(kind, params):
    # Before: validation passed and every run died in pandas/datetime with OutOfBoundsTimedelta.
    with pytest.raises(RuleError, match=r"<= 36525 \(100 years\)"):
        validate_params(kind, params, rule_id="r")
    s = pd.Series([5.0] * 10 + [80.0], index=pd.date_range("2023-06-01", periods=11, freq="7D", tz="UTC"))
    with pytest.raises(RuleError):
        evaluate(s, rule_id="r", kind=kind, params=params, severity="high", aoi_id="a", aoi_name="A", metric="m")
    assert validate_params(kind, {next(iter(params)): 36525}, rule_id="r") is not None


def test_aoi_with_a_huge_window_fails_validation_naming_file_and_rule_once(tmp_path):
    reg = _registry(tmp_path, lambda d: d["rules"][0]["params"].update(window_days=10**12))
    errors = validate(reg)
    assert len(errors) == 1
    text = str(errors[0])
    assert "tumangang_railyard.yaml" in text and "window_days" in text and "36525" in text
    # The rule is named once, not "rule 'railcar_surge': rule 'railcar_surge': ...".
    assert text.count("railcar_surge") == 1


# -- run: dates, steps, data directory -------------------------------------------------------------
def test_future_day_is_refused_before_any_work(tmp_path):
    aoi = load_aoi("tumangang_railyard")
    with pytest.raises(DateError, match="in the future at tumangang_railyard"):
        run_day(aoi, date.today() + timedelta(days=3), RunConfig(data_dir=tmp_path / "d"))
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("every", [0, -7])
def test_range_step_below_one_is_refused(every, tmp_path, capsys):
    with pytest.raises(DateError, match="whole number >= 1"):
        dates_between(date(2023, 7, 13), date(2023, 7, 20), every)
    # Before: --every 0 silently meant the AOI cadence and --every -7 ran no day at all, exit 0.
    rc = main(["run", "--aoi", "tumangang_railyard", "--start", "2023-07-13", "--end", "2023-07-20",
               "--every", str(every), "--data-dir", str(tmp_path / "d")])
    assert rc == 2 and f"--every {every}" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_unwritable_data_dir_is_one_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    rc = main(["run", "--aoi", "tumangang_railyard", "--date", "2023-07-13", "--data-dir", str(blocker / "data")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be written" in err and str(blocker / "data") in err and "--data-dir" in err


def test_os_errors_of_any_command_are_one_line_not_a_traceback(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    (tmp_path / "data").mkdir()
    rc = main(["report", "--aoi", "khasan_railyard", "--data-dir", str(tmp_path / "data"), "--out", str(blocker / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("changedet: error:") and "Traceback" not in err and "writable" in err


@pytest.mark.slow
def test_failed_rule_evaluation_is_redone_by_the_rerun_not_lost(tmp_path, monkeypatch):
    """The day used to be marked done (pixels stored) before its rules ran: a failure there lost the alert."""
    import changedet.pipeline as pipeline
    from changedet.cube import Cube

    reg = _registry(tmp_path, lambda d: d.update(rules=[{
        "id": "record", "metric": "railcars", "kind": "historical_max", "severity": "high", "channels": ["slack"],
        "params": {"min_history": 1, "factor": 1.5, "min_delta": 10}}]))
    aoi = load_aoi(reg / "tumangang_railyard.yaml")
    cfg = RunConfig(data_dir=tmp_path / "data")
    assert run_day(aoi, date(2023, 7, 13), cfg).status == "processed"   # 15 railcars

    def disk_full(*a, **k):
        raise OSError("disk full (simulated)")

    with monkeypatch.context() as m:
        m.setattr(Outbox, "open_or_update", disk_full)
        with pytest.raises(OSError):
            run_day(aoi, date(2023, 10, 5), cfg)                          # 75 railcars: the record
    # The re-run opens the alert; its evidence pack fails this time. The day's pixels are
    # stored all the same, the outbox keeps the pack pending, and a later day processed
    # in between does not stop the next run of 10-05 from rebuilding it (no second notice).
    with monkeypatch.context() as m:
        m.setattr(pipeline, "_write_evidence", disk_full)
        again = run_day(aoi, date(2023, 10, 5), cfg)
    assert again.status == "processed" and [a["action"] for a in again.alerts] == ["opened"]
    assert "evidence_error" in again.alerts[0] and "run this day again" in again.skipped["evidence"]
    alert_id = again.alerts[0]["alert_id"]
    assert not (tmp_path / "data" / "evidence" / alert_id / "manifest.json").exists()
    full = Cube(cfg.store_root(), aoi.id, "vhr", pipeline.aoi_grid(aoi, 0.5))
    assert full.has(again.scene_id)                                       # pixels never kept out
    assert run_day(aoi, date(2023, 10, 12), cfg).status == "processed"   # a later day in between
    third = run_day(aoi, date(2023, 10, 5), cfg)
    assert third.status == "processed" and third.alerts == [] and "evidence" not in third.skipped
    assert third.rebuilt == [alert_id] and "ALERT" not in third.summary()
    manifest = json.loads((tmp_path / "data" / "evidence" / alert_id / "manifest.json").read_text())
    assert manifest["event"] == "opened"
    assert run_day(aoi, date(2023, 10, 5), cfg).status == "already_processed"

    # Interrupted after the alert was stored, before the day was marked done, on the day
    # that opens the alert: the re-run completes the day and does not notify twice.
    cfg2 = RunConfig(data_dir=tmp_path / "data2")
    assert run_day(aoi, date(2023, 7, 13), cfg2).status == "processed"
    real_append = Cube.append
    calls = {"n": 0}

    def crash_on_full_resolution(self, scene, data, **k):
        if self.grid.resolution == 0.5:
            calls["n"] += 1
            raise KeyboardInterrupt
        return real_append(self, scene, data, **k)

    with monkeypatch.context() as m:
        m.setattr(Cube, "append", crash_on_full_resolution)
        with pytest.raises(KeyboardInterrupt):
            run_day(aoi, date(2023, 10, 5), cfg2)
    assert calls["n"] == 1
    db = sqlite3.connect(tmp_path / "data2" / "outbox" / "outbox.sqlite")
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1          # opened before the stop
    later = run_day(aoi, date(2023, 10, 5), cfg2)
    assert later.status == "processed" and later.alerts == []
    assert run_day(aoi, date(2023, 10, 5), cfg2).status == "already_processed"
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 1
    (alert_id2,) = db.execute("SELECT id FROM alerts").fetchone()
    assert (tmp_path / "data2" / "evidence" / alert_id2 / "manifest.json").exists()


def _record_rule_aoi(tmp_path):
    reg = _registry(tmp_path, lambda d: d.update(rules=[{
        "id": "record", "metric": "railcars", "kind": "historical_max", "severity": "high", "channels": ["slack"],
        "params": {"min_history": 1, "factor": 1.0, "min_delta": 10}}]))
    return load_aoi(reg / "tumangang_railyard.yaml")


def _replay_packs(tmp_path, monkeypatch, values, fail_day, rerun_day):
    """Feed (day, railcars) to the rule stage with a stub pack writer failing on ``fail_day``."""
    import changedet.pipeline as pipeline
    from changedet.metrics import MetricStore

    aoi = _record_rule_aoi(tmp_path)
    fail = {"on": False}

    def write(root, ev, alert, action, series, rule):
        if fail["on"]:
            raise OSError("disk full (simulated)")
        (root / alert.id).mkdir(parents=True, exist_ok=True)
        (root / alert.id / "manifest.json").write_text(json.dumps({"event": action, "when": str(series.index[-1])}))
        return root / alert.id / "manifest.json"

    monkeypatch.setattr(pipeline, "_write_evidence", write)
    store = MetricStore(tmp_path / "m.sqlite")
    ts = lambda d: datetime(2023, 10, d, 2, tzinfo=timezone.utc)  # noqa: E731
    ev = (tmp_path / "evidence", {})
    for d, v in values:
        store.record(aoi_id=aoi.id, metric="railcars", time=ts(d), value=v)
        fail["on"] = d == fail_day
        skipped: dict = {}
        pipeline._evaluate_rules(aoi, ts(d), store, tmp_path / "outbox", {"railcars"}, evidence=ev, skipped=skipped)
        assert ("evidence" in skipped) == (d == fail_day)
    fail["on"] = False
    skipped, rebuilt = {}, []
    out = pipeline._evaluate_rules(aoi, ts(rerun_day), store, tmp_path / "outbox", {"railcars"}, evidence=ev,
                                   skipped=skipped, rebuilt=rebuilt)
    (alert,) = Outbox(tmp_path / "outbox").list()
    manifest = tmp_path / "evidence" / alert.id / "manifest.json"
    return out, skipped, rebuilt, json.loads(manifest.read_text()) if manifest.exists() else None


def test_failed_opening_pack_is_rebuilt_after_a_later_day_updated_the_alert(tmp_path, monkeypatch):
    # Before: the rebuild needed last_time == t, so a later 'updated' finding hid it for good.
    out, skipped, rebuilt, manifest = _replay_packs(tmp_path, monkeypatch, [(1, 15), (5, 75), (12, 86)], 5, 5)
    assert out == [] and skipped == {} and len(rebuilt) == 1
    assert manifest["event"] == "opened" and manifest["when"].startswith("2023-10-05")


def test_failed_escalation_pack_is_rebuilt_though_the_opened_pack_exists(tmp_path, monkeypatch):
    # Before: the older 'opened' manifest made the re-run think the pack was there.
    out, skipped, rebuilt, manifest = _replay_packs(tmp_path, monkeypatch, [(1, 15), (5, 75), (12, 200)], 12, 12)
    assert out == [] and skipped == {} and len(rebuilt) == 1
    assert manifest["event"] == "escalated" and manifest["when"].startswith("2023-10-12")


def test_failed_rebuild_is_not_reported_as_an_alert(tmp_path, monkeypatch):
    import changedet.pipeline as pipeline

    _replay_packs(tmp_path, monkeypatch, [(1, 15), (5, 75)], 5, 1)
    monkeypatch.setattr(pipeline, "_write_evidence", lambda *a, **k: (_ for _ in ()).throw(OSError("still full")))
    from changedet.metrics import MetricStore

    skipped: dict = {}
    (tmp_path / "again").mkdir()
    out = pipeline._evaluate_rules(_record_rule_aoi(tmp_path / "again"), datetime(2023, 10, 5, 2, tzinfo=timezone.utc),
                                   MetricStore(tmp_path / "m.sqlite"), tmp_path / "outbox", {"railcars"},
                                   evidence=(tmp_path / "evidence2", {}), skipped=skipped)
    assert out == [] and "still full" in skipped["evidence"] and "run this day again" in skipped["evidence"]


def test_flow_task_fails_transiently_when_a_pack_was_not_written(tmp_path, monkeypatch):
    # Before: the flow logged a warning (with an incomplete command) and cached the day as done.
    import flows.tasks as tasks
    from changedet.errors import StoreError
    from changedet.pipeline import DayResult

    def fake_run_day(aoi, day, cfg):
        return DayResult(aoi.id, day, "processed", skipped={"evidence": "pack of alert x not written (full)"})

    monkeypatch.setattr(tasks, "run_day", fake_run_day)
    monkeypatch.setattr(tasks, "get_run_logger", lambda: __import__("logging").getLogger("t"))
    monkeypatch.setattr(tasks, "_acquire_source_slot", lambda name: __import__("contextlib").nullcontext())
    with pytest.raises(StoreError, match="pack of alert x") as info:
        tasks._process_aoi_day("tumangang_railyard", date(2023, 10, 5), str(tmp_path), 0, None, False, None)
    assert isinstance(info.value, tasks.TRANSIENT_ERRORS)


# -- alerts: secrets, retries, wrong data directory ------------------------------------------------
def test_slack_error_echoing_the_webhook_path_never_shows_the_secret(tmp_path, monkeypatch, caplog):
    url = f"https://hooks.slack.com/services/{SECRET_PATH}"

    def echoing_server(request, timeout=None):
        body = f"no_service for /services/{SECRET_PATH} (token {SECRET_PATH.rsplit('/', 1)[1]})".encode()
        raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, BytesIO(body))

    monkeypatch.setattr(urllib.request, "urlopen", echoing_server)
    ob = Outbox(tmp_path / "outbox")
    ob.open_or_update(_finding())
    with caplog.at_level("DEBUG"):
        counts = flush(ob, [ChannelConfig("slack", "slack", {"webhook_url": url})], evidence_root=tmp_path / "ev")
    assert counts["slack"]["failed"] == 1
    stored = "\n".join(sqlite3.connect(tmp_path / "outbox" / "outbox.sqlite").iterdump())
    for text in (caplog.text, stored):
        assert "HTTP 404" in text or text is stored
        for piece in (SECRET_PATH, "s3cr3tWebhookToken", "B0AUDIT", "T0AUDIT"):
            assert piece not in text


def test_deliver_reports_deliveries_waiting_for_their_retry(tmp_path, monkeypatch, capsys):
    def down(request, timeout=None):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", down)
    monkeypatch.setenv("CHANGEDET_SLACK_WEBHOOK_URL", f"https://hooks.slack.com/services/{SECRET_PATH}")
    for var in ("CHANGEDET_SMTP_HOST", "CHANGEDET_PUBLIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    Outbox(tmp_path / "outbox").open_or_update(_finding())
    assert main(["alerts", "--data-dir", str(tmp_path), "deliver"]) == 1
    capsys.readouterr()
    # The retry is not due yet: the second run sends nothing, and says that one waits.
    assert main(["alerts", "--data-dir", str(tmp_path), "deliver"]) == 0
    out = capsys.readouterr()
    assert "slack: sent 0, failed 0, skipped 0, waiting for retry 1 (next after" in out.out
    assert "s3cr3t" not in out.out + out.err
    n, when = Outbox(tmp_path / "outbox").waiting("slack")
    assert n == 1 and when > datetime.now(timezone.utc)


def test_alert_commands_on_a_data_dir_without_outbox_say_so_and_create_nothing(tmp_path, capsys):
    typo = tmp_path / "typo"
    assert main(["alerts", "--data-dir", str(typo), "list"]) == 0
    assert f"no outbox at {typo / 'outbox'}" in capsys.readouterr().out
    assert main(["alerts", "--data-dir", str(typo), "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    for action in ("show", "ack", "resolve"):
        assert main(["alerts", "--data-dir", str(typo), action, "some-id"]) == 2
        assert "no outbox at" in capsys.readouterr().err
    assert not typo.exists()


def test_unknown_alert_id_points_to_the_cli_listing(tmp_path, capsys):
    Outbox(tmp_path / "outbox").open_or_update(_finding())
    assert main(["alerts", "--data-dir", str(tmp_path), "show", "nope"]) == 2
    assert "changedet alerts list" in capsys.readouterr().err


# -- report: a count that was skipped is not "no detections" ---------------------------------------
def test_report_says_a_skipped_count_was_not_counted():
    from changedet.report.build import _MetricView, _uncounted

    aoi = load_aoi("rajin_port")
    when = pd.Timestamp("2023-10-05T02:00", tz="UTC")
    idx = pd.DatetimeIndex([when - pd.Timedelta(days=7), when])
    views = [_MetricView("ships", pd.Series([3.0, 0.0], index=idx), pd.DataFrame(index=idx), []),
             _MetricView("railcars", pd.Series([9.0], index=idx[:1]), pd.DataFrame(index=idx[:1]), [])]
    counted = [m for m in ("railcars", "containers_teu", "ships") if m in aoi.metrics]
    missing = _uncounted(aoi, views, when)
    assert "ships" not in missing                       # counted, zero: a real "no detections"
    assert set(missing) == set(counted) - {"ships"}     # not recorded on that image


# -- AOI files: what GIS tools and Windows editors write -------------------------------------------
def test_geojson_with_a_byte_order_mark_loads(tmp_path):
    reg = _registry(tmp_path, lambda d: None)
    path = reg / "tumangang_railyard.geojson"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert validate(reg) == []
    assert len(load_aoi(reg / "tumangang_railyard.yaml").features) == 5


def test_numeric_feature_id_is_named_as_such_not_as_missing(tmp_path):
    reg = _registry(tmp_path, lambda d: None)
    path = reg / "tumangang_railyard.geojson"
    doc = json.loads(path.read_text())
    doc["features"][2]["properties"]["id"] = 7
    path.write_text(json.dumps(doc))
    (err,) = validate(reg)
    assert "properties.id 7" in str(err) and 'write it as a string, e.g. "7"' in str(err)


def test_report_badge_shows_an_open_alert_even_without_data_in_the_period(tmp_path):
    from changedet.report import build_report

    finding = _finding()
    finding = Finding(**{**finding.__dict__, "message": '<script>alert(1)</script> & "q"'})
    Outbox(tmp_path / "outbox").open_or_update(finding)
    build_report(tmp_path, tmp_path / "r", aoi_ids=["tumangang_railyard"])
    page = (tmp_path / "r" / "tumangang_railyard" / "index.html").read_text()
    index = (tmp_path / "r" / "index.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    assert ">alert</span>" in page and ">no data</span>" not in page
    assert ">alert</span>" in index


def test_store_url_with_credentials_is_refused_without_showing_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHANGEDET_STORE_URL", "s3://AKIAAUDIT:s3cr3tKey@bucket/prefix")
    rc = main(["run", "--aoi", "khasan_railyard", "--date", "2023-07-13", "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2 and "carries credentials" in err and "s3://bucket/prefix" in err
    assert "s3cr3tKey" not in err and "AKIAAUDIT" not in err


# -- run: ranges past today, typos, scenes stamped after now ---------------------------------------
def _freeze(monkeypatch, now: datetime) -> None:
    import changedet.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_now_utc", lambda: now)


def test_range_crossing_today_is_cut_at_today_for_every_aoi(tmp_path, monkeypatch, capsys):
    # Before: the first future day raised DateError (exit 2) and the later --aoi never ran.
    import changedet.pipeline as pipeline
    from changedet.pipeline import DayResult

    _freeze(monkeypatch, datetime(2026, 12, 3, 1, 0, tzinfo=timezone.utc))
    ran = []

    def fake_run_day(aoi, day, cfg):
        pipeline._refuse_future(aoi, day)
        ran.append((aoi.id, day))
        return DayResult(aoi.id, day, "no_scene")

    monkeypatch.setattr(pipeline, "run_day", fake_run_day)
    rc = main(["run", "--aoi", "khasan_railyard", "--aoi", "rajin_port", "--start", "2026-12-01", "--end",
               "2026-12-06", "--every", "1", "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    days = [date(2026, 12, d) for d in (1, 2, 3)]
    assert rc == 0 and ran == [("khasan_railyard", d) for d in days] + [("rajin_port", d) for d in days]
    assert err.count("range cut at today (2026-12-03 at the site): 3 later day(s) not run") == 2


@pytest.mark.parametrize("args", [["--aoi", "tumangang_railyad", "--date", "2023-10-05"],
                                  ["--aoi", "tumangang_railyard", "--date", "2031-01-01"]])
def test_run_with_a_typo_or_future_date_creates_no_data_dir(args, tmp_path, capsys):
    rc = main(["run", *args, "--data-dir", str(tmp_path / "d")])
    assert rc == 2 and not (tmp_path / "d").exists()


def test_scene_stamped_after_now_is_not_acquired_yet(tmp_path, monkeypatch):
    # Local "today" at a UTC+9 site starts at 15:00 UTC the day before; the simulator
    # stamps its scene 01:30 UTC. Before: stored as an observation from the future.
    aoi = load_aoi("tumangang_railyard")
    _freeze(monkeypatch, datetime(2023, 10, 4, 20, 0, tzinfo=timezone.utc))   # 10-05 at the site
    r = run_day(aoi, date(2023, 10, 5), RunConfig(data_dir=tmp_path / "d"))
    assert r.status == "no_scene" and "after now" in r.note and r.scene_id
    assert not (tmp_path / "d" / "metrics.sqlite").exists() and not list((tmp_path / "d").rglob("*.zarr"))


# -- CLI errors: debug traceback, path hint only for path errors, broken pipe, s3 paths -------------
def _failing_command(monkeypatch, exc):
    import changedet.cli.aois as aois_cli

    def boom(args):
        raise exc

    monkeypatch.setattr(aois_cli, "cmd_list", boom, raising=False)
    monkeypatch.setattr(aois_cli, "cmd_show", boom, raising=False)


def test_changedet_debug_shows_the_traceback(monkeypatch, capsys):
    # Before: every OSError became one line, with no way to see where it came from.
    _failing_command(monkeypatch, FileNotFoundError(2, "internal bug", "/x/y"))
    monkeypatch.setenv("CHANGEDET_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["aois", "show", "tumangang_railyard"])


def test_network_error_gets_no_filesystem_hint(monkeypatch, capsys):
    _failing_command(monkeypatch, ConnectionRefusedError(111, "Connection refused"))
    monkeypatch.delenv("CHANGEDET_DEBUG", raising=False)
    assert main(["aois", "show", "tumangang_railyard"]) == 2
    err = capsys.readouterr().err
    assert "ConnectionRefusedError" in err and "writable" not in err and "CHANGEDET_DEBUG=1" in err


def test_full_disk_keeps_the_path_hint_and_the_s3_path(monkeypatch, capsys):
    _failing_command(monkeypatch, OSError(28, "No space left on device", "s3://bucket/prefix/khasan/cube.zarr"))
    monkeypatch.delenv("CHANGEDET_DEBUG", raising=False)
    assert main(["aois", "show", "tumangang_railyard"]) == 2
    err = capsys.readouterr().err
    assert "s3://bucket/prefix/khasan/cube.zarr" in err and "free space" in err


def test_broken_pipe_exits_quietly(monkeypatch, capsys):
    # Before: "changedet: error: [Errno 32] Broken pipe; check that the path exists ..." and exit 2.
    _failing_command(monkeypatch, BrokenPipeError(32, "Broken pipe"))
    assert main(["aois", "show", "tumangang_railyard"]) == 141
    assert capsys.readouterr().err == ""


# -- secret masking: neither over nor under ---------------------------------------------------------
@pytest.mark.parametrize("text,secret", [
    ("HTTP 404 for hooks.slack.com/services/T0A/B0B/s3cretTok", "s3cretTok"),
    ("no_service for /services/T0A/B0B/s3cretTok", "s3cretTok"),
    ("PASSWORD hunter2 rejected", "hunter2"),
    ("password: hunter2", "hunter2"),
    ("POST discord.com/api/webhooks/1234567/AbCdEfToken failed", "AbCdEfToken"),
    ("org.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x1/y2 timed out", "IncomingWebhook/x1"),
    ("prod-01.westeurope.logic.azure.com:443/workflows/x/invoke?api-version=1&sp=x&sig=ABCdef123", "ABCdef123"),
    ("s3://AKIAKEY:SeCrEt@bucket/prefix/cube.zarr", "SeCrEt"),
])
def test_redact_masks_webhook_and_password_forms(text, secret):
    from changedet.alerts.outbox import _redact

    assert secret not in _redact(text)


def test_redact_keeps_object_store_paths_and_plain_words():
    from changedet.alerts.outbox import _redact

    assert _redact("s3://bucket/prefix/khasan/cube.zarr: [Errno 28]") == "s3://bucket/prefix/khasan/cube.zarr: [Errno 28]"
    assert _redact("s3://K:S@bucket/p/c.zarr") == "s3://***@bucket/p/c.zarr"
    assert _redact("password authentication failed for user") == "password authentication failed for user"


def test_slack_reply_keeps_query_keys_and_plain_path_words():
    # Before: with ?token=... in the URL, Slack's "invalid_token" read "invalid_***", and
    # "services", "json", "webhooks" were masked too.
    from changedet.alerts.slack import _without_url_parts

    url = f"https://hooks.slack.com/services/{SECRET_PATH}?token=abcDEF123"
    text = _without_url_parts(f"invalid_token: services json webhooks /services/{SECRET_PATH} abcDEF123", url)
    assert text.startswith("invalid_token: services json webhooks ")
    assert "s3cr3tWebhookToken" not in text and "abcDEF123" not in text and "T0AUDIT" not in text


def test_a_claimed_delivery_is_in_flight_not_waiting_for_retry(tmp_path):
    # Before: another sender's 300 s lease was counted as "waiting for retry".
    box = Outbox(tmp_path / "outbox")
    box.open_or_update(_finding())
    ((event_id, _alert_id, _event),) = box.pending_events("slack")
    assert box.claim(event_id, "slack") is not None
    assert box.waiting("slack") == (0, None)
    n, lease_end = box.in_flight("slack")
    assert n == 1 and lease_end > datetime.now(timezone.utc)


def test_report_caption_gives_the_recorded_skip_reason_not_always_cloud():
    # Before: every uncounted metric was said to be "e.g. under cloud", whatever the reason.
    from changedet.report.build import _MetricView, _uncounted_note

    aoi = load_aoi("tumangang_railyard")
    when = pd.Timestamp("2023-10-05T02:00", tz="UTC")
    views = [_MetricView("changed_area_m2", pd.Series([1.0], index=[when]), pd.DataFrame(index=[when]), [])]
    scene = {"scene_id": "s", "skipped": {"railcars": "image resolution 3 m is too coarse for railcars"}}
    note = _uncounted_note(aoi, views, when, scene, True)
    assert "railcars not counted (image resolution 3 m is too coarse" in note and "cloud" not in note
    assert "no value recorded" in _uncounted_note(aoi, views, when, {"scene_id": "s"}, True)
    assert "no metrics store" in _uncounted_note(aoi, [], when, scene, False)
