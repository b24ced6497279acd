"""Cubes and products on S3 (``CHANGEDET_STORE_URL``), against a real S3-compatible server.

moto's server (``ThreadedMotoServer``) listens on 127.0.0.1 and speaks the S3 REST API;
changedet reaches it through s3fs exactly as it would reach AWS or MinIO, with the
endpoint and credentials in the standard ``AWS_*`` environment variables.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUCKET = "changedet-test"
SECRET = "s3cr3t-Key-that-must-never-be-printed"
DAYS = ["2023-07-13"]  # one clear day: cube, reference, detections (the suite's time budget)
AOI = "tumangang_railyard"  # railcar detections: products on every clear day


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "changedet-test-key", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=SECRET, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield env, client
    finally:
        server.stop()


def _keys(client, prefix: str) -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def _changedet(args, env, cwd):
    full = {k: v for k, v in os.environ.items() if k != "CHANGEDET_STORE_URL"}
    full.update({**env, "PYTHONPATH": str(REPO)})
    return subprocess.run([sys.executable, "-m", "changedet", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=600)


def _changedet_in_process(args, capsys) -> tuple[int, str]:
    """The same command through ``changedet.cli.main`` in this process (no interpreter start-up)."""
    from changedet.cli import main

    capsys.readouterr()
    rc = main(args)
    return rc, capsys.readouterr().out


@pytest.mark.slow
def test_run_writes_cubes_and_products_to_s3_and_matches_a_local_run(s3, tmp_path, capsys, monkeypatch):
    env, client = s3
    url = f"s3://{BUCKET}/site-a"
    common = ["run", "--aoi", AOI, "--start", DAYS[0], "--end", DAYS[-1], "--every", "7", "--json"]
    remote = _changedet([*common, "--data-dir", str(tmp_path / "remote")],
                        {**env, "CHANGEDET_STORE_URL": url}, tmp_path)
    assert remote.returncode == 0, remote.stderr[-3000:]
    # The local reference run: same command in-process, with no store URL in the environment.
    monkeypatch.delenv("CHANGEDET_STORE_URL", raising=False)
    rc, local_out = _changedet_in_process([*common, "--data-dir", str(tmp_path / "local")], capsys)
    assert rc == 0
    r_days = [json.loads(line) for line in remote.stdout.splitlines()]
    l_days = [json.loads(line) for line in local_out.splitlines()]
    assert [d["day"] for d in r_days] == DAYS
    # Same pixels in, same answers out: the store must not change a single figure.
    strip = ("alerts",)
    assert [{k: v for k, v in d.items() if k not in strip} for d in r_days] == \
           [{k: v for k, v in d.items() if k not in strip} for d in l_days]
    processed = [d for d in r_days if d["status"] == "processed"]
    assert len(processed) >= 1, [d["status"] for d in r_days]

    # Cubes and products are in the bucket, not on local disk; metrics and outbox stay local.
    keys = _keys(client, "site-a/")
    assert any(k.startswith(f"site-a/cubes/{AOI}/") and ".zarr/" in k for k in keys)
    from changedet.aoi import load_aoi

    aoi = load_aoi(AOI)
    spec = aoi.sources[0]
    prov_key = f"site-a/cubes/{AOI}/{spec.sensor}_{float(spec.resolution_m):g}m.provenance.json"
    assert prov_key in keys
    prov = json.loads(client.get_object(Bucket=BUCKET, Key=prov_key)["Body"].read())
    stored = {s["scene_id"] for s in prov["scenes"]}
    assert {d["scene_id"] for d in processed} <= stored
    assert not (tmp_path / "remote" / "cubes").exists() and not (tmp_path / "remote" / "products").exists()
    assert (tmp_path / "remote" / "metrics.sqlite").exists()
    # Products (detections, change maps) are the same files as a local run writes.
    local_products = sorted(str(p.relative_to(tmp_path / "local")) for p in (tmp_path / "local" / "products").rglob("*")
                            if p.is_file())
    assert local_products
    assert sorted(k[len("site-a/"):] for k in keys if k.startswith("site-a/products/")) == local_products

    # The cube on S3 reads back with the library, scene for scene.
    from changedet.cube import Cube
    from changedet.grid import aoi_grid

    for k, v in env.items():
        os.environ[k] = v
    try:
        cube = Cube(url, AOI, spec.sensor, aoi_grid(aoi, float(spec.resolution_m)))
        local_cube = Cube(tmp_path / "local", AOI, spec.sensor, aoi_grid(aoi, float(spec.resolution_m)))
        assert [s["sha256"] for s in cube.scenes()] == [s["sha256"] for s in local_cube.scenes()]
    finally:
        for k in env:
            os.environ.pop(k, None)

    # Re-running is idempotent against S3 too.
    again = _changedet([*common, "--data-dir", str(tmp_path / "remote")], {**env, "CHANGEDET_STORE_URL": url},
                       tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [json.loads(line)["status"] for line in again.stdout.splitlines()] == \
           ["already_processed" if d["status"] == "processed" else d["status"] for d in r_days]

    # The secret never reaches output or anything written.
    for text in (remote.stdout, remote.stderr, again.stdout, again.stderr):
        assert SECRET not in text
    for key in keys:
        if key.endswith(".json"):
            assert SECRET.encode() not in client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_bad_store_url_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from changedet.cli import main

    monkeypatch.setenv("CHANGEDET_STORE_URL", "nosuchscheme://bucket/x")
    capsys.readouterr()
    rc = main(["run", "--aoi", AOI, "--date", DAYS[0], "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "nosuchscheme://" in err and "CHANGEDET_STORE_URL" in err
    assert not (tmp_path / "cubes").exists()
