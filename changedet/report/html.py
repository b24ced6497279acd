"""HTML pieces of the static report: one stylesheet, page shell, tables and sparklines.

Everything that comes from data (AOI names, notes, alert messages, feature ids, paths)
goes through :func:`esc`; markup is only ever built here, from constants. Pages carry
a Content-Security-Policy that forbids scripts and remote loads, so a name that slipped
through escaping could still not run or phone home.
"""

from __future__ import annotations

import html
import math
from typing import Iterable, Sequence
from urllib.parse import quote

CSS = """
:root { --fg:#1b1b1b; --muted:#5a5a5a; --line:#d0d0d0; --alert:#D55E00; --ok:#009E73; --warn:#E69F00;
        --band:#56B4E9; --series:#0072B2; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1180px; padding: 16px 24px 48px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
p.meta, .muted { color: var(--muted); }
nav a { margin-right: 12px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.fig { max-width: 100%; height: auto; border: 1px solid var(--line); display: block; }
figure { margin: 8px 0 16px; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
.pair { display: flex; gap: 12px; flex-wrap: wrap; }
.pair figure { flex: 1 1 360px; margin: 0; }
.series svg { max-width: 100%; height: auto; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         color: #fff; background: var(--muted); }
.badge.alert { background: var(--alert); }
.badge.ok { background: var(--ok); }
.badge.nodata { background: #8c8c8c; }
.badge.stale { background: var(--warn); color: #1b1b1b; }
.sev-high { color: var(--alert); font-weight: 700; }
.sev-medium { color: #9a6a00; font-weight: 600; }
svg.spark { vertical-align: middle; }
.spark-row { white-space: nowrap; }
.spark-name { display: inline-block; min-width: 9em; color: var(--muted); font-size: 12px; }
.note { background: #f7f7f7; border-left: 3px solid var(--line); padding: 6px 10px; }
"""

CSP = ("default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'none'; "
       "base-uri 'none'; form-action 'none'")


def esc(value: object) -> str:
    """HTML-escape any value for text or a quoted attribute (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def href(*segments: str) -> str:
    """A relative URL from path segments, each percent-encoded, then HTML-escaped."""
    return esc("/".join(quote(str(s), safe="") if s not in ("..", ".") else s for s in segments))


def rel_href(path_text: str) -> str:
    """A relative filesystem path (``a/b/c``) as an encoded, escaped URL."""
    parts = path_text.replace("\\", "/").split("/")
    return href(*parts)


def page(title: str, body: str, *, nav: str = "") -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{esc(CSP)}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        # An empty icon: browsers would otherwise request /favicon.ico and log a failure.
        "<link rel=\"icon\" href=\"data:,\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"{nav}{body}\n</body>\n</html>\n"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "", numeric: Sequence[int] = ()) -> str:
    """Table from already-escaped cell HTML (headers are escaped here)."""
    head = "".join(f"<th scope=\"col\">{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f"<td class=\"num\">{c}</td>" if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f"<tr><td colspan=\"{len(headers)}\" class=\"muted\">none</td></tr>")
    c = f" class=\"{esc(cls)}\"" if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def fmt_num(v: float | None) -> str:
    if v is None or not math.isfinite(float(v)):
        return "–"
    v = float(v)
    return f"{int(v):,}" if v.is_integer() else f"{v:,.1f}"


def sparkline(times: Sequence[float], values: Sequence[float], *, alert_times: Sequence[float] = (),
              width: int = 140, height: int = 32, label: str = "") -> str:
    """A tiny inline SVG line (numbers only go into it) with alert times as vermillion dots.

    ``times`` and ``alert_times`` are numbers on one axis (e.g. epoch seconds).
    """
    pts = [(float(t), float(v)) for t, v in zip(times, values) if math.isfinite(float(v))]
    aria = esc(label or "sparkline")
    if not pts:
        return (f"<svg class=\"spark\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{aria}\">"
                f"<text x=\"2\" y=\"{height - 10}\" font-size=\"10\" fill=\"#8c8c8c\">no data</text></svg>")
    t0, t1 = min(p[0] for p in pts), max(p[0] for p in pts)
    v0, v1 = min(p[1] for p in pts), max(p[1] for p in pts)
    pad = 3.0

    def sx(t: float) -> float:
        return pad + (t - t0) / (t1 - t0 or 1.0) * (width - 2 * pad)

    def sy(v: float) -> float:
        return height - pad - (v - v0) / (v1 - v0 or 1.0) * (height - 2 * pad)

    line = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in pts)
    dots = []
    for ta in alert_times:
        ta = float(ta)
        # The dot sits on the last observation at or before the alert.
        before = [p for p in pts if p[0] <= ta] or pts[:1]
        t, v = before[-1]
        dots.append(f"<circle class=\"spark-alert\" cx=\"{sx(ta if t0 <= ta <= t1 else t):.1f}\" "
                    f"cy=\"{sy(v):.1f}\" r=\"3\" fill=\"#D55E00\"/>")
    last_t, last_v = pts[-1]
    return (f"<svg class=\"spark\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" "
            f"role=\"img\" aria-label=\"{aria}\" data-alerts=\"{len(dots)}\">"
            f"<polyline fill=\"none\" stroke=\"#0072B2\" stroke-width=\"1.5\" points=\"{line}\"/>"
            f"<circle cx=\"{sx(last_t):.1f}\" cy=\"{sy(last_v):.1f}\" r=\"2\" fill=\"#0072B2\"/>"
            + "".join(dots) + "</svg>")
