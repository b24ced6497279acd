"""`changedet demo --data-dir DIR` deleted DIR whatever it held (AUDIT6, session 17)."""

from __future__ import annotations


# -- demo --data-dir: never wipe a folder the demo did not make (AUDIT6's finding, fixed by the lead)
def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path, capsys):
    from changedet.cli import main

    data = tmp_path / "data"
    (data / "outbox").mkdir(parents=True)
    (data / "outbox" / "my_notes.txt").write_text("precious")
    rc = main(["demo", "--data-dir", str(data), "--aoi", "tumangang_railyard",
               "--start", "2023-06-01", "--end", "2023-06-01"])
    assert rc == 2
    assert "--keep" in capsys.readouterr().err
    assert (data / "outbox" / "my_notes.txt").read_text() == "precious"


def test_demo_still_starts_afresh_in_its_own_folder(tmp_path):
    from changedet.cli import main
    from changedet.cli.run import DEMO_MARKER

    data = tmp_path / "demo"
    args = ["demo", "--data-dir", str(data), "--aoi", "tumangang_railyard", "--start", "2023-06-01",
            "--end", "2023-06-01", "--workers", "1"]
    assert main(args) == 0
    assert (data / DEMO_MARKER).exists()
    (data / "stale.txt").write_text("from the first demo")
    assert main(args) == 0  # its own earlier output (marker present) is replaced
    assert not (data / "stale.txt").exists() and (data / DEMO_MARKER).exists()
