"""The CLI as a user meets it: exit codes and messages.

Most commands are called in-process through ``changedet.cli.main`` (the same parser,
dispatch and error handling as the console script, without paying the interpreter and
import start-up per call); a few tests run the real ``python -m changedet`` entry point
in a subprocess: ``--help``, the multi-process demo and the secret-leak check, where
the whole of what a user's terminal would show (logs included) must be inspected.
"""

import json
import subprocess
import sys

import pytest

from changedet.cli import main


def changedet(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "changedet", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``changedet ARGS`` in-process: (exit code, stdout, stderr); argparse exits count too."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse rejects a value: usage line + message, exit 2
        rc = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_help_and_aois_list(capsys):
    out = changedet("--help")
    assert out.returncode == 0 and "demo" in out.stdout
    rc, stdout, _ = cli(capsys, "aois", "list")
    assert rc == 0
    for site in ("tumangang_railyard", "khasan_railyard", "tumangang_khasan_bridge", "rajin_port", "dunai_port",
                 "vostochny_port", "tikhoretsk_depot", "chongjin_port"):
        assert site in stdout


def test_bad_dates_get_a_clear_error(tmp_path, capsys):
    rc, _, err = cli(capsys, "run", "--aoi", "rajin_port", "--date", "2023-13-45", "--data-dir", tmp_path)
    assert rc == 2 and "YYYY-MM-DD" in err
    rc, _, err = cli(capsys, "run", "--aoi", "rajin_port", "--start", "2023-07-10", "--end", "2023-07-01",
                     "--data-dir", tmp_path)
    assert rc == 2 and "swap" in err and "Traceback" not in err
    rc, _, err = cli(capsys, "run", "--aoi", "no_such_site", "--date", "2023-07-01", "--data-dir", tmp_path)
    assert rc == 2 and "no_such_site" in err and "Traceback" not in err


def test_run_then_alerts_list(tmp_path, capsys):
    rc, stdout, err = cli(capsys, "run", "--aoi", "dunai_port", "--date", "2023-06-08", "--data-dir", tmp_path,
                          "--json")
    assert rc == 0, err
    doc = json.loads(stdout.splitlines()[-1])
    assert doc["aoi_id"] == "dunai_port" and doc["day"] == "2023-06-08"
    rc, stdout, _ = cli(capsys, "alerts", "--data-dir", tmp_path, "list")
    assert rc == 0 and "no alerts" in stdout


@pytest.mark.slow
def test_demo_on_a_short_range_prints_progress_and_summary(tmp_path):
    out = changedet("demo", "--aoi", "dunai_port", "--start", "2023-06-01", "--end", "2023-06-22",
                    "--data-dir", str(tmp_path / "demo"), "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "[dunai_port 4/4]" in out.stdout
    assert "No alert at: dunai_port" in out.stdout


def test_alerts_deliver_without_channels_keeps_alerts(tmp_path, capsys, monkeypatch):
    import os

    for k in [k for k in os.environ if k.startswith("CHANGEDET_")]:
        monkeypatch.delenv(k)
    rc, stdout, _ = cli(capsys, "alerts", "--data-dir", tmp_path, "deliver")
    assert rc == 0 and "no delivery channel configured" in stdout


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
