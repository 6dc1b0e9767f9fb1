#!/usr/bin/env python3
"""The Grafana dashboard (roles/grafana/files/quantdb.json) without Grafana, against a live
Prometheus: check that every panel's PromQL returns data, and draw the panels to a PNG.

    python tools/dashboard.py check --prometheus http://127.0.0.1:59090
    python tools/dashboard.py png --prometheus http://127.0.0.1:59090 --out docs/dashboard.png --minutes 30

`make dashboard` runs both against the lab's Prometheus (qdb-lab-mon1, published on
127.0.0.1:59090). Grafana's variables are replaced as a browser would send them ($region:
every region, $__rate_interval: --rate-interval). `check` exits 1 naming each panel none of
whose queries returns a series. `png` plots each panel's series over the last --minutes
(time series as lines, the other panel types as their latest values in a bar chart), one
subplot per panel in dashboard order, titled with the row and panel title.
"""
import argparse
import json
import math
import os
import sys
import time
import urllib.parse
import urllib.request

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DASHBOARD = os.path.join(PROJECT, "roles", "grafana", "files", "quantdb.json")


def panels(dashboard):
    """(row title, panel) in dashboard order; rows themselves are not panels."""
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            for inner in panel.get("panels", []):
                yield row, inner
        else:
            yield row, panel


def expressions(panel, rate_interval):
    values = {"$__rate_interval": rate_interval, "$__interval": "15s", "$__range": "1h", "$region": ".*"}
    for target in panel.get("targets", []):
        expr = target["expr"]
        for var, value in values.items():
            expr = expr.replace(var, value)
        yield target, expr


def get(base, path, params):
    url = base.rstrip("/") + path + "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError("%s: %s" % (params.get("query"), body))
    return body["data"]["result"]


def legend(target, metric):
    fmt = target.get("legendFormat") or ""
    if fmt:
        for key, value in metric.items():
            fmt = fmt.replace("{{%s}}" % key, value).replace("{{ %s }}" % key, value)
        return fmt
    labels = {k: v for k, v in metric.items() if k not in ("__name__", "job", "instance")}
    return ",".join("%s=%s" % kv for kv in sorted(labels.items())) or metric.get("__name__", "value")


def check(args, dashboard):
    empty = []
    count = 0
    for row, panel in panels(dashboard):
        count += 1
        answers = [len(get(args.prometheus, "/api/v1/query", {"query": expr}))
                   for _, expr in expressions(panel, args.rate_interval)]
        status = "ok" if any(answers) else "NO DATA"
        print("%-8s %-26s %-36s series per query: %s" % (status, row[:26], panel["title"][:36], answers))
        if not any(answers):
            empty.append(panel["title"])
    print("dashboard: %d panels, %d without data" % (count, len(empty)))
    return 1 if empty else 0


def png(args, dashboard):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(panels(dashboard))
    cols = 3
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 5.2, rows * 2.6))
    end = time.time()
    start = end - args.minutes * 60
    step = max(15, int(args.minutes * 60 / 120))
    for ax, (row, panel) in zip(axes.flat, items):
        ax.set_title("%s / %s" % (row, panel["title"]), fontsize=8)
        ax.tick_params(labelsize=6)
        drawn = 0
        if panel["type"] == "timeseries":
            for target, expr in expressions(panel, args.rate_interval):
                for series in get(args.prometheus, "/api/v1/query_range",
                                  {"query": expr, "start": start, "end": end, "step": step})[:8]:
                    xs = [(float(t) - end) / 60 for t, _ in series["values"]]
                    ys = [float(v) for _, v in series["values"]]
                    ax.plot(xs, ys, linewidth=1, label=legend(target, series["metric"])[:28])
                    drawn += 1
            ax.set_xlabel("minutes", fontsize=6)
        else:
            labels, values = [], []
            for target, expr in expressions(panel, args.rate_interval):
                for series in get(args.prometheus, "/api/v1/query", {"query": expr})[:12]:
                    labels.append(legend(target, series["metric"])[:24])
                    values.append(float(series["value"][1]))
            finite = [(l, v) for l, v in zip(labels, values) if math.isfinite(v)]
            if finite:
                ax.barh([l for l, _ in finite], [v for _, v in finite], color="#4c72b0")
                for i, (_, v) in enumerate(finite):
                    ax.text(v, i, " %.4g" % v, va="center", fontsize=6)
                drawn = len(finite)
        if drawn and panel["type"] == "timeseries":
            ax.legend(fontsize=5, loc="best")
        if not drawn:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    fig.suptitle("quantdb dashboard (%s), last %d minutes, from %s" % (
        dashboard.get("title", ""), args.minutes, args.prometheus), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(args.out, dpi=80)
    print("dashboard: wrote %s (%d panels)" % (args.out, len(items)))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["check", "png"])
    parser.add_argument("--prometheus", default="http://127.0.0.1:59090")
    parser.add_argument("--dashboard", default=DASHBOARD)
    parser.add_argument("--rate-interval", default="2m", help="what $__rate_interval becomes (default 2m)")
    parser.add_argument("--minutes", type=int, default=30, help="png: the time range drawn")
    parser.add_argument("--out", default=os.path.join(PROJECT, "docs", "dashboard.png"))
    args = parser.parse_args(argv)
    with open(args.dashboard, encoding="utf-8") as handle:
        dashboard = json.load(handle)
    return check(args, dashboard) if args.action == "check" else png(args, dashboard)


if __name__ == "__main__":
    sys.exit(main())
