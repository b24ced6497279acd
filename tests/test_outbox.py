"""Alert outbox: lifecycle, idempotent replays, cooldown, JSON mirror, concurrency, deliveries."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from changedet.alerts import Alert, Outbox, alert_id
from changedet.baselines import Finding
from changedet.errors import StoreError

T0 = datetime(2023, 10, 5, tzinfo=timezone.utc)
NOW = datetime(2023, 10, 6, 8, 0, tzinfo=timezone.utc)


def finding(value: float = 72, days: float = 0, **kw) -> Finding:
    base = dict(
        aoi_id="tumangang",
        aoi_name="Tumangang railyard",
        rule_id="rail-spike",
        metric="railcars",
        feature_id="__site__",
        time=T0 + timedelta(days=days),
        value=float(value),
        severity="high",
        kind="robust_z",
        figures={"median": 14.0, "z": 8.4, "sign": 1},
        message=f"{value} railcars at Tumangang railyard",
    )
    base.update(kw)
    return Finding(**base)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def box(tmp_path, clock):
    with Outbox(tmp_path / "outbox", clock=clock) as ob:
        yield ob


def file_matches_db(box: Outbox, alert: Alert) -> bool:
    path = box.alerts_dir / f"{alert.id}.json"
    return json.loads(path.read_text()) == box.get(alert.id).to_dict()


def test_full_lifecycle(box):
    a, action = box.open_or_update(finding(72))
    assert action == "opened"
    assert a.status == "open" and a.findings == 1 and a.peak_value == 72
    assert a.opened_at == T0 and a.last_time == T0 and a.updated_at == NOW
    assert a.id == alert_id("tumangang", "rail-spike", "__site__", T0)
    assert a.id.startswith("tumangang--rail-spike--__site__--2023-10-05--")

    # A later, similar finding updates the alert without a notification.
    a, action = box.open_or_update(finding(80, days=7))
    assert action == "updated"
    assert (a.status, a.findings, a.value, a.peak_value) == ("open", 2, 80, 80)
    assert a.last_time == T0 + timedelta(days=7)

    # More than 1.25 x the value last notified (72 -> 90): escalation.
    a, action = box.open_or_update(finding(95, days=14))
    assert action == "escalated"
    assert (a.status, a.findings, a.peak_value) == ("escalated", 3, 95)

    # Replays of observations already seen change nothing.
    before = box.get(a.id)
    for days in (7, 14):
        r, action = box.open_or_update(finding(500, days=days))
        assert action == "suppressed" and r.id == a.id
    assert box.get(a.id) == before

    # Quiet for less than 28 days: stays; then resolved at the observation time.
    assert box.resolve_quiet(aoi_id="tumangang", rule_id="rail-spike", feature_id="__site__",
                             time=T0 + timedelta(days=14 + 27)) is None
    resolved_at = T0 + timedelta(days=14 + 28)
    r = box.resolve_quiet(aoi_id="tumangang", rule_id="rail-spike", feature_id="__site__", time=resolved_at)
    assert r is not None and r.status == "resolved" and r.resolved_at == resolved_at

    # Within the cooldown: suppressed; after it: a new alert.
    s, action = box.open_or_update(finding(90, days=14 + 28 + 10))
    assert action == "suppressed" and s.id == a.id and s.status == "resolved"
    n, action = box.open_or_update(finding(90, days=14 + 28 + 15))
    assert action == "opened" and n.id != a.id and n.status == "open"

    assert [x.id for x in box.list()] == [a.id, n.id]
    assert [x.id for x in box.list(status="open")] == [n.id]
    assert [x.id for x in box.list(status=["resolved", "escalated"], aoi_id="tumangang")] == [a.id]
    assert box.list(aoi_id="elsewhere") == []
    for x in box.list():
        assert file_matches_db(box, x)
    # Re-running the whole sequence of findings is a no-op.
    for days, v in [(0, 72), (7, 80), (14, 95), (57, 90)]:
        assert box.open_or_update(finding(v, days=days))[1] == "suppressed"


def test_events_recorded_with_alert(box):
    a, _ = box.open_or_update(finding(72))
    box.open_or_update(finding(80, days=1))
    box.open_or_update(finding(100, days=2))
    box.open_or_update(finding(130, days=3))  # 130 > 1.25 * 100: second escalation
    rows = box._read("SELECT event, value FROM events WHERE alert_id = :a ORDER BY id", {"a": a.id})
    assert [(r["event"], r["value"]) for r in rows] == [("opened", 72), ("escalated", 100), ("escalated", 130)]


def test_slow_creep_escalates_against_last_notified_value(box):
    # Each step is < 1.25 x the previous one, but 100 is > 1.25 x the 72 notified.
    actions = [box.open_or_update(finding(v, days=d))[1] for d, v in enumerate([72, 80, 88, 100])]
    assert actions == ["opened", "updated", "updated", "escalated"]


def test_downward_findings_escalate_when_lower(box):
    down = dict(rule_id="rail-drop", figures={"sign": -1})
    assert box.open_or_update(finding(20, **down))[1] == "opened"
    assert box.open_or_update(finding(18, days=1, **down))[1] == "updated"
    a, action = box.open_or_update(finding(15, days=2, **down))  # 15 * 1.25 < 20
    assert action == "escalated" and a.peak_value == 15 and a.sign == -1


def test_ack_and_manual_resolve(box, clock):
    a, _ = box.open_or_update(finding(72))
    acked = box.ack(a.id)
    assert acked.status == "acknowledged"
    assert box.ack(a.id).status == "acknowledged"  # idempotent
    # Acknowledged alerts still absorb findings quietly and escalate when bigger.
    assert box.open_or_update(finding(75, days=1))[0].status == "acknowledged"
    assert box.open_or_update(finding(100, days=2))[1] == "escalated"
    clock.now = NOW + timedelta(days=3)
    r = box.resolve(a.id)
    assert r.status == "resolved" and r.resolved_at == clock.now and r.updated_at == clock.now
    with pytest.raises(StoreError, match="resolved"):
        box.ack(a.id)
    with pytest.raises(StoreError, match="no alert"):
        box.get("nope")
    assert file_matches_db(box, r)


def test_keys_are_independent(box):
    assert box.open_or_update(finding(72))[1] == "opened"
    assert box.open_or_update(finding(72, feature_id="track-3"))[1] == "opened"
    assert box.open_or_update(finding(72, rule_id="rail-max"))[1] == "opened"
    assert box.open_or_update(finding(72, aoi_id="rason"))[1] == "opened"
    assert len(box.list(status="open")) == 4
    assert len({a.id for a in box.list()}) == 4


def test_zero_cooldown_reopen_same_day_gets_distinct_id(box):
    a, _ = box.open_or_update(finding(72))
    box.resolve(a.id, time=T0 + timedelta(hours=1))
    b, action = box.open_or_update(finding(72, days=0.5), cooldown_days=0)
    assert action == "opened" and b.id == a.id + "-2"


def test_json_mirror_restored_when_missing(tmp_path, clock):
    root = tmp_path / "ob"
    with Outbox(root, clock=clock) as box:
        a, _ = box.open_or_update(finding(72))
        path = box.alerts_dir / f"{a.id}.json"
        assert path.exists() and file_matches_db(box, a)
        path.unlink()
        box.get(a.id)  # get() restores it
        assert file_matches_db(box, a)
        path.write_text("{stale")
    with Outbox(root, clock=clock) as box:  # opening re-syncs stale files
        assert file_matches_db(box, a)
        assert box.sync_files() == 0
    assert not list((root / "alerts").glob(".tmp-*"))


@pytest.mark.parametrize("shared", [False, True])
def test_concurrent_open_creates_exactly_one_alert(tmp_path, shared):
    root = tmp_path / "ob"
    Outbox(root).close()
    for round_ in range(10):
        f = finding(72, aoi_id=f"site-{round_}")
        boxes = [Outbox(root)] * 2 if shared else [Outbox(root), Outbox(root)]
        barrier = threading.Barrier(2)
        results, errors = [], []

        def worker(b: Outbox) -> None:
            try:
                barrier.wait()
                results.append(b.open_or_update(f))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(b,)) for b in boxes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(action for _, action in results) == ["opened", "suppressed"]
        assert results[0][0].id == results[1][0].id
        for b in set(boxes):
            b.close()
    with Outbox(root) as box:
        assert len(box.list()) == 10
        events = box._read("SELECT COUNT(*) AS n FROM events")[0]["n"]
        assert events == 10


def test_pending_deliveries_and_backoff(box, clock):
    a, _ = box.open_or_update(finding(72))
    box.open_or_update(finding(100, days=1))  # escalated
    pending = box.pending_deliveries("slack")
    assert [(al.id, ev) for al, ev in pending] == [(a.id, "opened"), (a.id, "escalated")]
    assert pending[0][0].status == "escalated"  # the alert as it is now

    box.mark_delivered(a.id, "opened", "slack")
    assert [ev for _, ev in box.pending_deliveries("slack")] == ["escalated"]
    # Another channel keeps its own bookkeeping.
    assert [ev for _, ev in box.pending_deliveries("email")] == ["opened", "escalated"]

    t1 = NOW
    nxt = box.mark_failed(a.id, "escalated", "slack", "HTTP 500", now=t1)
    assert nxt == t1 + timedelta(seconds=60)
    assert box.pending_deliveries("slack", now=t1 + timedelta(seconds=59)) == []
    assert [ev for _, ev in box.pending_deliveries("slack", now=nxt)] == ["escalated"]
    nxt2 = box.mark_failed(a.id, "escalated", "slack", "HTTP 502", now=nxt)
    assert nxt2 - nxt == timedelta(seconds=120)
    nxt3 = box.mark_failed(a.id, "escalated", "slack", "HTTP 503", now=nxt2)
    assert nxt3 - nxt2 == timedelta(seconds=240)
    (state,) = box.delivery_state(a.id, "escalated", "slack")
    assert (state["status"], state["attempts"], state["last_error"]) == ("failed", 3, "HTTP 503")

    box.mark_delivered(a.id, "escalated", "slack")
    assert box.pending_deliveries("slack", now=nxt3 + timedelta(days=1)) == []
    box.mark_delivered(a.id, "escalated", "slack")  # marking again is harmless
    with pytest.raises(StoreError, match="no 'escalated' event"):
        box.mark_delivered("nope", "escalated", "slack")
    with pytest.raises(StoreError, match="unknown event"):
        box.mark_delivered(a.id, "resolved", "slack")


def test_backoff_is_capped(tmp_path, clock):
    with Outbox(tmp_path / "ob", clock=clock, retry_base_s=60, retry_cap_s=300) as box:
        a, _ = box.open_or_update(finding(72))
        delays = []
        t = NOW
        for _ in range(6):
            nxt = box.mark_failed(a.id, "opened", "sms", "timeout", now=t)
            delays.append((nxt - t).total_seconds())
            t = nxt
        assert delays == [60, 120, 240, 300, 300, 300]


def test_two_escalations_are_two_deliveries(box):
    a, _ = box.open_or_update(finding(72))
    box.open_or_update(finding(100, days=1))
    box.open_or_update(finding(130, days=2))
    assert [ev for _, ev in box.pending_deliveries("slack")] == ["opened", "escalated", "escalated"]
    box.mark_delivered(a.id, "escalated", "slack")
    assert [ev for _, ev in box.pending_deliveries("slack")] == ["opened", "escalated"]


def test_errors_are_redacted(box):
    a, _ = box.open_or_update(finding(72))
    secret_error = (
        "POST https://hooks.slack.com/services/T000/B000/XXXXSECRET failed; "
        "https://api.telegram.org/bot123456:ABCDEFsecret/sendMessage; Authorization: Bearer abcdefghijkl; "
        "token=s3cr3t&x=1 password: hunter2 " + "x" * 1000
    )
    box.mark_failed(a.id, "opened", "slack", secret_error)
    (state,) = box.delivery_state(a.id, "opened", "slack")
    err = state["last_error"]
    for secret in ("XXXXSECRET", "ABCDEFsecret", "abcdefghijkl", "s3cr3t", "hunter2", "T000"):
        assert secret not in err
    assert "hooks.slack.com" in err and len(err) <= 500


def test_invalid_inputs(box):
    with pytest.raises(StoreError, match="Finding"):
        box.open_or_update({"value": 1})
    with pytest.raises(StoreError, match="severity"):
        box.open_or_update(replace(finding(), severity="critical"))
    with pytest.raises(StoreError, match="escalate_ratio"):
        box.open_or_update(finding(), escalate_ratio=0.5)
    with pytest.raises(StoreError, match="status"):
        box.list(status="closed")


def test_claim_reserves_an_event_for_one_sender(box, clock):
    box.open_or_update(finding())
    (event_id, aid, event), = box.pending_events("slack")
    assert event == "opened"
    alert, ev = box.claim(event_id, "slack", lease_s=300)
    assert alert.id == aid and ev == "opened"
    # A second sender (another process) finds it taken, and it is not pending meanwhile.
    assert box.claim(event_id, "slack", lease_s=300) is None
    assert box.pending_events("slack") == []
    assert box.delivery_state(aid, "opened", "slack")[0]["status"] == "sending"
    # Another channel is independent.
    assert box.claim(event_id, "email") is not None
    # A sender that died: the lease runs out and the event is due again, nothing lost.
    later = NOW + timedelta(seconds=301)
    assert [e[0] for e in box.pending_events("slack", now=later)] == [event_id]
    assert box.claim(event_id, "slack", now=later) is not None
    box.mark_delivered(aid, "opened", "slack", event_id=event_id)
    # The first sender reporting a failure late must not undo the delivery.
    assert box.mark_failed(aid, "opened", "slack", "timeout", event_id=event_id) is None
    assert box.delivery_state(aid, "opened", "slack")[0]["status"] == "delivered"
    assert box.claim(event_id, "slack", now=later + timedelta(days=1)) is None
    with pytest.raises(StoreError, match="lease_s"):
        box.claim(event_id, "email", lease_s=0)
