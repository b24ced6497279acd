"""``changedet alerts``: list, show, acknowledge and resolve alerts in the outbox."""

from __future__ import annotations

import json
from pathlib import Path

from changedet.cli import default_data_dir


def add_parser(sub) -> None:
    p = sub.add_parser("alerts", help="list, show, ack or resolve alerts")
    p.add_argument("--data-dir", type=Path, default=None, help="default: $CHANGEDET_DATA_DIR or ./changedet-data")
    s = p.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="list alerts")
    ls.add_argument("--status", choices=["open", "escalated", "acknowledged", "resolved"])
    ls.add_argument("--aoi")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    for name, func, helptext in (("show", cmd_show, "show one alert"), ("ack", cmd_ack, "acknowledge an alert"),
                                 ("resolve", cmd_resolve, "resolve an alert")):
        q = s.add_parser(name, help=helptext)
        q.add_argument("alert_id")
        q.set_defaults(func=func)


def _outbox(args):
    from changedet.alerts.outbox import Outbox

    return Outbox(Path(args.data_dir or default_data_dir()) / "outbox")


def cmd_list(args) -> int:
    alerts = _outbox(args).list(status=args.status, aoi_id=args.aoi)
    if args.json:
        print(json.dumps([a.to_dict() for a in alerts], default=str, indent=1))
        return 0
    if not alerts:
        print("no alerts")
    for a in alerts:
        print(f"{a.id}  {a.status:<12} {a.severity:<6} {a.last_time.date()}  {a.message}")
    return 0


def cmd_show(args) -> int:
    print(json.dumps(_outbox(args).get(args.alert_id).to_dict(), default=str, indent=1))
    return 0


def cmd_ack(args) -> int:
    a = _outbox(args).ack(args.alert_id)
    print(f"{args.alert_id}: {getattr(a, 'status', 'acknowledged')}")
    return 0


def cmd_resolve(args) -> int:
    a = _outbox(args).resolve(args.alert_id)
    print(f"{args.alert_id}: {getattr(a, 'status', 'resolved')}")
    return 0
