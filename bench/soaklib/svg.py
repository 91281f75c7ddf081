"""The soak's plot as a self-contained SVG (no plotting library): open fds
(with the open-connections gauge) and RSS over time, the warm-up shaded,
each panel's baseline and allowance drawn, injected faults marked. Pure.
"""
import math
from xml.sax.saxutils import escape

W, PANEL_H, LEFT, RIGHT, TOP, GAP = 960, 230, 70, 20, 40, 60

FAULT_COLOURS = {"kill9": "#d62728", "hang": "#9467bd", "stall": "#ff7f0e", "cap_flood": "#2ca02c"}


def _ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    t = (lo // step) * step
    out = []
    while t <= hi + 1e-9:
        if t >= lo - 1e-9:
            out.append(t)
        t += step
    return out


def _fmt(v):
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def _panel(out, y0, title, series, t_max, lines, warmup, events, y_label, load_end=None):
    """series: [(label, colour, [(t, v)])]; lines: [(y value, colour, label)]."""
    vals = [v for _, _, pts in series for _, v in pts] + [y for y, _, _ in lines]
    lo, hi = (min(vals), max(vals)) if vals else (0, 1)
    pad = (hi - lo) * 0.08 or 1
    lo, hi = max(0, lo - pad), hi + pad
    x1, x2 = LEFT, W - RIGHT
    y1, y2 = y0, y0 + PANEL_H

    def X(t):
        return x1 + (x2 - x1) * (t / t_max if t_max else 0)

    def Y(v):
        return y2 - (y2 - y1) * ((v - lo) / (hi - lo))

    out.append(f'<text x="{x1}" y="{y0 - 8}" font-size="14" font-weight="bold">{escape(title)}</text>')
    out.append(f'<rect x="{x1}" y="{y1}" width="{x2 - x1}" height="{PANEL_H}" fill="none" stroke="#888"/>')
    if warmup:
        out.append(f'<rect x="{x1}" y="{y1}" width="{X(warmup) - x1:.1f}" height="{PANEL_H}" fill="#eee"/>')
        out.append(f'<text x="{x1 + 4}" y="{y1 + 14}" font-size="11" fill="#666">warm-up</text>')
    for ev in events:
        c = FAULT_COLOURS.get(ev["kind"], "#999")
        xa, xb = X(ev["t0"]), max(X(ev["t1"]), X(ev["t0"]) + 1.5)
        out.append(f'<rect x="{xa:.1f}" y="{y1}" width="{xb - xa:.1f}" height="{PANEL_H}" fill="{c}" opacity="0.25"/>')
    if load_end is not None and load_end < t_max:
        xe = X(load_end)
        out.append(f'<line x1="{xe:.1f}" x2="{xe:.1f}" y1="{y1}" y2="{y2}" stroke="#444" stroke-dasharray="2,3"/>')
        # At the bottom: the allowance labels sit at the top right.
        out.append(f'<text x="{xe - 4:.1f}" y="{y2 - 6}" font-size="11" fill="#444" text-anchor="end">load ends</text>')
    for v in _ticks(lo, hi):
        out.append(f'<line x1="{x1 - 4}" x2="{x1}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#888"/>')
        out.append(f'<text x="{x1 - 6}" y="{Y(v) + 4:.1f}" font-size="11" text-anchor="end">{_fmt(v)}</text>')
    for m in _ticks(0, t_max / 60.0, 10):
        x = X(m * 60.0)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y2}" y2="{y2 + 4}" stroke="#888"/>')
        out.append(f'<text x="{x:.1f}" y="{y2 + 16}" font-size="11" text-anchor="middle">{_fmt(m)}</text>')
    out.append(f'<text x="{(x1 + x2) / 2}" y="{y2 + 32}" font-size="11" text-anchor="middle">minutes</text>')
    out.append(f'<text x="14" y="{(y1 + y2) / 2}" font-size="11" transform="rotate(-90 14 {(y1 + y2) / 2})" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    for y, colour, label in lines:
        out.append(f'<line x1="{X(warmup or 0):.1f}" x2="{x2}" y1="{Y(y):.1f}" y2="{Y(y):.1f}" '
                   f'stroke="{colour}" stroke-dasharray="5,4"/>')
        out.append(f'<text x="{x2 - 4}" y="{Y(y) - 4:.1f}" font-size="10" text-anchor="end" fill="{colour}">'
                   f'{escape(label)}</text>')
    # The legend follows the panel's title (about 8.5 px a character at 14 px bold).
    lx = x1 + 8.5 * len(title) + 24
    for label, colour, pts in series:
        if pts:
            d = " ".join(f"{X(t):.1f},{Y(v):.1f}" for t, v in pts)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{d}"/>')
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{y0 - 12}" y2="{y0 - 12}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 22}" y="{y0 - 8}" font-size="11">{escape(label)}</text>')
        lx += 30 + 7 * len(label)


def plot(samples, t0, events, warmup_s, flat, title, load_s=None):
    """samples: dicts with t (monotonic), fds, rss_kib and optionally
    portcullis_open_connections; t0: the run's start; events: faults;
    load_s: when the load stopped (the samples after it show the gateway settling)."""
    t_max = max((s["t"] - t0 for s in samples), default=1.0) or 1.0
    rel = [dict(s, t=s["t"] - t0) for s in samples]
    evs = [dict(e, t0=e["t0"] - t0, t1=e["t1"] - t0) for e in events]
    H = TOP + 2 * PANEL_H + 2 * GAP + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" viewBox="0 0 {W} {H}">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{LEFT}" y="18" font-size="15">{escape(title)}</text>']
    fd_lines, rss_lines = [], []
    if flat.get("fds"):
        f = flat["fds"]
        fd_lines = [(f["baseline_floor"], "#1f77b4", "baseline floor"),
                    (f["baseline_floor"] + f["allow"], "#d62728", "allowance")]
        r = flat["rss"]
        rss_lines = [(r["baseline_kib"] / 1024, "#1f77b4", "baseline"),
                     ((r["baseline_kib"] + r["allow_kib"]) / 1024, "#d62728", "allowance")]
    _panel(out, TOP + 20, "Open file descriptors", [
        ("fds", "#1f77b4", [(s["t"], s["fds"]) for s in rel]),
        ("open client connections (gauge)", "#7f7f7f",
         [(s["t"], s["portcullis_open_connections"]) for s in rel if "portcullis_open_connections" in s]),
    ], t_max, fd_lines, warmup_s, evs, "count", load_s)
    _panel(out, TOP + 20 + PANEL_H + GAP, "Resident memory (VmRSS)", [
        ("RSS MiB", "#1f77b4", [(s["t"], s["rss_kib"] / 1024) for s in rel]),
    ], t_max, rss_lines, warmup_s, evs, "MiB", load_s)
    lx, ly = LEFT, H - 10
    out.append(f'<text x="{lx}" y="{ly}" font-size="11">faults:</text>')
    lx += 48
    for kind, c in FAULT_COLOURS.items():
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{c}" opacity="0.5"/>')
        out.append(f'<text x="{lx + 16}" y="{ly}" font-size="11">{kind}</text>')
        lx += 30 + 7 * len(kind)
    out.append("</svg>")
    return "\n".join(out) + "\n"
