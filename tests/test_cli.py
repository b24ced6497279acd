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
