#!/usr/bin/env python3
"""Turns scripts/soak.sh's samples (DIR/procs.csv, DIR/host.csv) into DIR/summary.md and
line charts DIR/rss.svg, DIR/fds.svg, DIR/threads.svg, DIR/tasks.svg, DIR/host.svg (plain SVG, no
plotting library needed). Usage: soak-plot.py DIR"""
import csv
import sys
from collections import defaultdict
from pathlib import Path

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def chart(path, title, unit, series):
    """series: {name: [(t, v), ...]} -> an SVG line chart."""
    w, h, left, right, top, bottom = 760, 300, 60, 120, 30, 40
    ts = [t for pts in series.values() for t, _ in pts] or [0, 1]
    vs = [v for pts in series.values() for _, v in pts] or [0, 1]
    t0, t1 = min(ts), max(ts) or 1
    v1 = max(vs) * 1.1 or 1
    sx = lambda t: left + (t - t0) / max(t1 - t0, 1) * (w - left - right)
    sy = lambda v: h - bottom - v / v1 * (h - top - bottom)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="13">{title}</text>',
           f'<line x1="{left}" y1="{h-bottom}" x2="{w-right}" y2="{h-bottom}" stroke="#888"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h-bottom}" stroke="#888"/>']
    for i in range(5):
        v = v1 * i / 4
        out.append(f'<text x="{left-4}" y="{sy(v)+4:.1f}" text-anchor="end">{v:.0f}</text>')
        out.append(f'<line x1="{left}" y1="{sy(v):.1f}" x2="{w-right}" y2="{sy(v):.1f}" stroke="#eee"/>')
    for i in range(6):
        t = t0 + (t1 - t0) * i / 5
        out.append(f'<text x="{sx(t):.1f}" y="{h-bottom+14}" text-anchor="middle">{t/60:.0f} min</text>')
    out.append(f'<text x="{left-50}" y="{top-8}">{unit}</text>')
    for i, (name, pts) in enumerate(sorted(series.items())):
        c = COLOURS[i % len(COLOURS)]
        d = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in pts)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{d}"/>')
        out.append(f'<text x="{w-right+8}" y="{top+14*i+10}" fill="{c}">{name}</text>')
    out.append("</svg>")
    Path(path).write_text("\n".join(out))


def main():
    d = Path(sys.argv[1])
    procs = defaultdict(list)
    with open(d / "procs.csv") as f:
        for r in csv.DictReader(f):
            tasks = int(r.get("tokio_tasks") or 0)  # older runs did not record it
            procs[r["proc"]].append((int(r["t"]), int(r["rss_bytes"]), int(r["open_fds"]), int(r["threads"]), tasks))
    host = []
    with open(d / "host.csv") as f:
        for r in csv.DictReader(f):
            host.append({k: int(v) for k, v in r.items()})
    chart(d / "rss.svg", "Resident memory per process", "MiB",
          {p: [(t, r / 2**20) for t, r, _, _, _ in s] for p, s in procs.items()})
    chart(d / "fds.svg", "Open file descriptors per process", "fds",
          {p: [(t, fd) for t, _, fd, _, _ in s] for p, s in procs.items()})
    chart(d / "threads.svg", "Threads per process", "threads",
          {p: [(t, th) for t, _, _, th, _ in s] for p, s in procs.items()})
    chart(d / "tasks.svg", "Tokio tasks per process", "tasks",
          {p: [(t, k) for t, _, _, _, k in s] for p, s in procs.items()})
    chart(d / "host.svg", "Host: shoal mounts, cgroups, veths, processes", "count",
          {k: [(h["t"], h[k]) for h in host] for k in ("mounts", "cgroups", "veths", "processes")})
    lines = ["| process | RSS first / max / last (MiB) | fds first / max / last | threads first / max / last"
             " | tokio tasks first / max / last |",
             "|---|---|---|---|---|"]
    for p in sorted(procs):
        s = procs[p]
        col = lambda i, scale=1: f"{s[0][i]/scale:.0f} / {max(x[i] for x in s)/scale:.0f} / {s[-1][i]/scale:.0f}"
        lines.append(f"| {p} | {col(1, 2**20)} | {col(2)} | {col(3)} | {col(4)} |")
    lines += ["", "| host | first | max | last |", "|---|---|---|---|"]
    for k in ("mounts", "cgroups", "veths", "processes"):
        lines.append(f"| {k} | {host[0][k]} | {max(h[k] for h in host)} | {host[-1][k]} |")
    for name in ("churn.txt", "host-before.txt", "host-after.txt"):
        if (d / name).exists():
            lines += ["", f"`{name}`: {(d / name).read_text().strip()}"]
    (d / "summary.md").write_text("\n".join(lines) + "\n")
    print((d / "summary.md").read_text())


if __name__ == "__main__":
    main()
