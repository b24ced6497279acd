"""The CLI as a user meets it: real subprocesses, exit codes and messages."""

import json
import subprocess
import sys


def changedet(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "changedet", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


def test_help_and_aois_list():
    out = changedet("--help")
    assert out.returncode == 0 and "demo" in out.stdout
    out = changedet("aois", "list")
    assert out.returncode == 0
    for site in ("tumangang_railyard", "khasan_railyard", "tumangang_khasan_bridge", "rajin_port", "dunai_port",
                 "vostochny_port", "tikhoretsk_depot", "chongjin_port"):
        assert site in out.stdout


def test_bad_dates_get_a_clear_error(tmp_path):
    out = changedet("run", "--aoi", "rajin_port", "--date", "2023-13-45", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "YYYY-MM-DD" in out.stderr
    out = changedet("run", "--aoi", "rajin_port", "--start", "2023-07-10", "--end", "2023-07-01",
                    "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "swap" in out.stderr and "Traceback" not in out.stderr
    out = changedet("run", "--aoi", "no_such_site", "--date", "2023-07-01", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "no_such_site" in out.stderr and "Traceback" not in out.stderr


def test_run_then_alerts_list(tmp_path):
    out = changedet("run", "--aoi", "dunai_port", "--date", "2023-06-08", "--data-dir", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.splitlines()[-1])
    assert doc["aoi_id"] == "dunai_port" and doc["day"] == "2023-06-08"
    out = changedet("alerts", "--data-dir", str(tmp_path), "list")
    assert out.returncode == 0 and "no alerts" in out.stdout


def test_demo_on_a_short_range_prints_progress_and_summary(tmp_path):
    out = changedet("demo", "--aoi", "dunai_port", "--start", "2023-06-01", "--end", "2023-06-22",
                    "--data-dir", str(tmp_path / "demo"), "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "[dunai_port 4/4]" in out.stdout
    assert "No alert at: dunai_port" in out.stdout


def test_alerts_deliver_without_channels_keeps_alerts(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEDET_")}
    out = changedet("alerts", "--data-dir", str(tmp_path), "deliver", env=env)
    assert out.returncode == 0 and "no delivery channel configured" in out.stdout


def test_alerts_deliver_to_a_dead_webhook_fails_without_leaking_the_url(tmp_path):
    import os

    from changedet.alerts.outbox import Outbox
    from changedet.baselines import Finding
    from datetime import datetime, timezone

    Outbox(tmp_path / "outbox").open_or_update(Finding(
        aoi_id="rajin_port", aoi_name="Rajin port", rule_id="ships_surge", metric="ships", feature_id="__site__",
        time=datetime(2023, 7, 6, tzinfo=timezone.utc), value=5.0, severity="medium", kind="robust_z",
        figures={"sign": 1}, message="5 ships at Rajin port"))
    secret = "http://127.0.0.1:9/services/T000/B000/very-secret-token"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CHANGEDET_")},
           "CHANGEDET_SLACK_WEBHOOK_URL": secret}
    out = changedet("alerts", "--data-dir", str(tmp_path), "deliver", env=env)
    assert out.returncode == 1 and "failed 1" in out.stdout
    assert "very-secret-token" not in out.stdout + out.stderr
