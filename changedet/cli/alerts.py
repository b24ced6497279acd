"""``changedet alerts``: list, show, acknowledge, resolve and deliver alerts; check the alerting setup."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from changedet.cli import default_data_dir

# Literal copies of changedet.alerts.outbox.STUCK_* (checked by a test): importing the
# outbox here would load the alert stack for every CLI command.
STUCK_ATTEMPTS = 10
STUCK_HOURS = 24.0

#: Exit status of ``alerts deliver`` when some delivery is stuck (see DELIVER_HELP).
EXIT_STUCK = 3

DELIVER_HELP = f"""\
Send the alert notifications that are due to the channels configured in the environment
(CHANGEDET_SLACK_WEBHOOK_URL, CHANGEDET_SMTP_*). A failed send stays in the outbox and is
retried by later runs with exponential backoff (1 min doubling, at most 6 h apart), for as
long as it takes: an alert is never dropped.

A delivery that keeps failing (--stuck-attempts failed attempts, default {STUCK_ATTEMPTS}, or 2+
failed attempts and still undelivered --stuck-hours after the alert event, default
{STUCK_HOURS:g} h) needs a person: a wrong address, a revoked webhook, a channel no longer
configured. Each run lists such deliveries under STUCK, on every channel of the outbox,
with the last error.

Stuck deliveries of a resolved alert, and on a channel no longer configured, are listed
but marked "not counted" and leave the exit status alone. `changedet alerts resolve ALERT`
cancels the alert's failed deliveries (marked cancelled in the outbox, never deleted; run it
again on a resolved alert to cancel what is left), which clears them from STUCK.

Exit status: 0 all due deliveries sent (or waiting for their retry); 1 a send failed in
this run; {EXIT_STUCK} some counted delivery is stuck (whatever this run did); 2 a usage or
setup error.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("alerts", help="list, show, ack, resolve, deliver and check alerts")
    p.add_argument("--data-dir", type=Path, default=None, help="default: $CHANGEDET_DATA_DIR or ./changedet-data")
    s = p.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    # Also after the action (`changedet alerts list --data-dir data/`), where run, report,
    # fetch and cube take it; SUPPRESS keeps a value given before the action.
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                          help="default: $CHANGEDET_DATA_DIR or ./changedet-data")
    ls = s.add_parser("list", help="list alerts", parents=[data_dir])
    ls.add_argument("--status", choices=["open", "escalated", "acknowledged", "resolved"])
    ls.add_argument("--aoi")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    dl = s.add_parser("deliver", parents=[data_dir],
                      help="send due alert notifications to the channels configured in the environment "
                      "(CHANGEDET_SLACK_WEBHOOK_URL, CHANGEDET_SMTP_*); failed sends are retried by later runs",
                      description=DELIVER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    dl.add_argument("--stuck-attempts", type=int, default=STUCK_ATTEMPTS, metavar="N",
                    help=f"report a delivery as stuck after N failed attempts (default {STUCK_ATTEMPTS})")
    dl.add_argument("--stuck-hours", type=float, default=STUCK_HOURS, metavar="H",
                    help=f"... or when its alert event is still undelivered after H hours and 2+ failed attempts "
                         f"(default {STUCK_HOURS:g})")
    dl.add_argument("--json", action="store_true", help="print the outcome as JSON (warnings go to stderr)")
    dl.set_defaults(func=cmd_deliver)
    ck = s.add_parser("check", help="check the AOIs' alert rules, channels and delivery settings (no network)")
    ck.add_argument("--aoi", action="append", help="AOI id or YAML path (repeatable; default: every AOI)")
    ck.add_argument("--require-delivery", action="store_true",
                    help="also fail when a channel used by a rule has no settings (as deliver does)")
    ck.set_defaults(func=cmd_check)
    for name, func, helptext in (("show", cmd_show, "show one alert"), ("ack", cmd_ack, "acknowledge an alert"),
                                 ("resolve", cmd_resolve, "resolve an alert and cancel its failed deliveries "
                                  "(kept in the outbox marked cancelled; no longer retried or reported stuck)")):
        q = s.add_parser(name, help=helptext, parents=[data_dir])
        q.add_argument("alert_id")
        q.set_defaults(func=func)


def _outbox_dir(args) -> Path:
    return Path(args.data_dir or default_data_dir()) / "outbox"


def _outbox(args):
    """The data directory's outbox; refused where none exists (a mistyped --data-dir).

    Opening an outbox creates one, so ``alerts list`` on a wrong directory used to
    make an empty outbox there and answer "no alerts".
    """
    from changedet.alerts.outbox import Outbox
    from changedet.errors import StoreError

    root = _outbox_dir(args)
    if not (root / "outbox.sqlite").is_file():
        raise StoreError(f"no outbox at {root}: no alert was ever raised under this data directory; check "
                         "--data-dir or CHANGEDET_DATA_DIR (runs create the outbox with their first alert)")
    return Outbox(root)


def _no_outbox_note(args) -> str | None:
    root = _outbox_dir(args)
    if (root / "outbox.sqlite").is_file():
        return None
    return (f"no alerts: no outbox at {root} yet (runs create it with their first alert); check --data-dir "
            "or CHANGEDET_DATA_DIR if you expected some")


def cmd_list(args) -> int:
    note = _no_outbox_note(args)
    if note:
        if args.json:
            print("[]")
        print(note, file=sys.stderr if args.json else sys.stdout)
        return 0
    alerts = _outbox(args).list(status=args.status, aoi_id=args.aoi)
    if args.json:
        print(json.dumps([a.to_dict() for a in alerts], default=str, indent=1))
        return 0
    if not alerts:
        print("no alerts")
    for a in alerts:
        # Labelled: the alert keeps a time, not the run's day (its message names that day).
        print(f"{a.id}  {a.status:<12} {a.severity:<6} {a.last_time.date()} UTC  {a.message}")
    return 0


def cmd_show(args) -> int:
    print(json.dumps(_outbox(args).get(args.alert_id).to_dict(), default=str, indent=1))
    return 0


def cmd_ack(args) -> int:
    a = _outbox(args).ack(args.alert_id)
    print(f"{args.alert_id}: {getattr(a, 'status', 'acknowledged')}")
    return 0


def cmd_resolve(args) -> int:
    outbox = _outbox(args)
    a = outbox.resolve(args.alert_id)
    # Its failed deliveries would be retried (and reported stuck) for ever otherwise.
    n = outbox.cancel_failed(args.alert_id)
    extra = f"; {n} failed deliver{'y' if n == 1 else 'ies'} cancelled" if n else ""
    print(f"{args.alert_id}: {getattr(a, 'status', 'resolved')}{extra}")
    return 0


def _aois(names):
    from changedet.aoi import list_aois, load_aoi

    return [load_aoi(n) for n in names] if names else list_aois()


def cmd_check(args) -> int:
    from changedet.alerts.config import check_alerting

    aois = _aois(args.aoi)
    check_alerting(aois, require_delivery=args.require_delivery)
    n_rules = sum(len(a.rules) for a in aois)
    print(f"alerting OK: {n_rules} rule(s) in {len(aois)} AOI(s)")
    return 0


def _say(args, text: str) -> None:
    """A human line: stdout, or stderr under --json (stdout is the JSON document)."""
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout)


def cmd_deliver(args) -> int:
    from changedet.alerts.config import alerting_problems
    from changedet.alerts.delivery import channels_from_env, flush
    from changedet.aoi import load_aoi
    from changedet.errors import StoreError

    if isinstance(args.stuck_attempts, bool) or args.stuck_attempts < 1:
        raise StoreError(f"--stuck-attempts {args.stuck_attempts} must be at least 1, e.g. {STUCK_ATTEMPTS}")
    if not 0 < args.stuck_hours < float("inf"):
        raise StoreError(f"--stuck-hours {args.stuck_hours:g} must be a positive number of hours, e.g. {STUCK_HOURS:g}")
    channels = channels_from_env()
    if not channels:
        _say(args, "no delivery channel configured: set CHANGEDET_SLACK_WEBHOOK_URL and/or CHANGEDET_SMTP_HOST "
                   "(see infra/.env.example); alerts stay in the outbox")
    note = _no_outbox_note(args)
    if note:
        if channels:
            _say(args, f"nothing to deliver; {note}")
        if args.json:
            print(json.dumps({"channels": {}, "stuck": [], "stuck_count": 0, "exit": 0}))
        return 0
    outbox = _outbox(args)
    result: dict[str, dict] = {}
    if channels:
        # A channel that rules use but that is not configured would hold its alerts back
        # silently; say so (the configured channels are still served).
        from changedet.errors import AOIError

        known = []
        for aoi_id in sorted({a.aoi_id for a in outbox.list(status=("open", "escalated", "acknowledged"))}):
            try:
                known.append(load_aoi(aoi_id))
            except AOIError as exc:  # its alerts fail one by one below, with this reason
                _say(args, f"warning: {exc}")
        for problem in alerting_problems(known, require_delivery=True):
            _say(args, f"warning: {problem}")
        cache: dict[str, dict] = {}

        def recipients_for(alert):
            # Recipients by channel name come from the AOI file of the alert's site.
            if alert.aoi_id not in cache:
                cache[alert.aoi_id] = dict(load_aoi(alert.aoi_id).recipients)
            return cache[alert.aoi_id]

        result = flush(outbox, channels, recipients_for=recipients_for,
                       evidence_root=Path(args.data_dir or default_data_dir()) / "evidence")
    # Stuck on any channel of the outbox, configured or not: a channel dropped from the
    # settings holds its alerts back for good, which is exactly what must be seen.
    stuck = outbox.stuck(max_attempts=args.stuck_attempts, max_age_h=args.stuck_hours)
    # ... but only what an operator can still act on sets the exit status: a resolved
    # alert (`alerts resolve` cancels its deliveries) and a channel no longer configured
    # are listed, marked, and not counted, so exit 3 can be cleared.
    configured = {c.name for c in channels}
    for d in stuck:
        d["not_counted"] = ("alert resolved" if d.get("alert_status") == "resolved" else
                            None if d["channel"] in configured else "channel not configured")
    counted = [d for d in stuck if not d["not_counted"]]
    report: dict[str, dict] = {}
    for channel, counts in result.items():
        n_wait, next_at = outbox.waiting(channel)
        n_busy, _lease_end = outbox.in_flight(channel)
        n_stuck = sum(1 for d in counted if d["channel"] == channel)
        report[channel] = {**counts, "waiting": n_wait, "next_retry_at": next_at.isoformat() if next_at else None,
                           "in_flight": n_busy, "stuck": n_stuck}
        wait = f", waiting for retry {n_wait} (next after {next_at:%Y-%m-%d %H:%M} UTC)" if n_wait else ""
        wait += f", in flight with another sender {n_busy}" if n_busy else ""
        wait += f", STUCK {n_stuck}" if n_stuck else ""
        _say(args, f"{channel}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + wait)
    if stuck:
        _say(args, f"STUCK: {len(stuck)} deliver{'y' if len(stuck) == 1 else 'ies'} failing for "
                   f"{args.stuck_attempts}+ attempts or {args.stuck_hours:g}+ h (still retried; fix the cause):")
        for d in stuck:
            mark = (f" [not counted: {d['not_counted']}; `changedet alerts resolve {d['alert_id']}` cancels it]"
                    if d["not_counted"] else "")
            _say(args, f"  {d['alert_id']} ({d['event']}) on {d['channel']}: {d['attempts']} failed attempt(s), "
                       f"undelivered since {d['since']}; last error: {d['last_error'] or '-'}{mark}")
    rc = EXIT_STUCK if counted else (1 if any(c.get("failed") for c in result.values()) else 0)
    if args.json:
        print(json.dumps({"channels": report, "stuck": stuck, "stuck_count": len(counted),
                          "stuck_not_counted": len(stuck) - len(counted), "exit": rc}, indent=1))
    return rc
