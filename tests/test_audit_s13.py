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
    # The re-run opens the alert; its evidence pack fails this time, so the day stays
    # unmarked and the next run rebuilds the pack without a second notification.
    import changedet.pipeline as pipeline

    with monkeypatch.context() as m:
        m.setattr(pipeline, "_write_evidence", disk_full)
        again = run_day(aoi, date(2023, 10, 5), cfg)
    assert again.status == "processed" and [a["action"] for a in again.alerts] == ["opened"]
    assert "evidence_error" in again.alerts[0] and "run this day again" in again.skipped["evidence"]
    alert_id = again.alerts[0]["alert_id"]
    assert not (tmp_path / "data" / "evidence" / alert_id / "manifest.json").exists()
    third = run_day(aoi, date(2023, 10, 5), cfg)
    assert third.status == "processed" and third.alerts == [] and "evidence" not in third.skipped
    manifest = json.loads((tmp_path / "data" / "evidence" / alert_id / "manifest.json").read_text())
    assert manifest["event"] == "opened"
    assert run_day(aoi, date(2023, 10, 5), cfg).status == "already_processed"

    # Interrupted after the alert was stored, before the day was marked done: the re-run
    # completes the day and does not notify twice.
    from changedet.cube import Cube

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
            run_day(aoi, date(2023, 10, 12), cfg)
    assert calls["n"] == 1
    later = run_day(aoi, date(2023, 10, 12), cfg)
    assert later.status == "processed" and later.alerts == []
    assert run_day(aoi, date(2023, 10, 12), cfg).status == "already_processed"
    db = sqlite3.connect(tmp_path / "data" / "outbox" / "outbox.sqlite")
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 1


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
