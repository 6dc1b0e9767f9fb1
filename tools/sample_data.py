#!/usr/bin/env python3
"""Deterministic sample OHLCV data on real exchange calendars, with defects on request.

Writes three CSV files (gzipped when the name ends in .gz):
  <out>            ticker,region,date,open,high,low,close,volume  (one bar per session)
  <out>.tickers    ticker,region,exchange,name,currency,sector
  <out>.sessions   exchange,session   (the XKRX / XNYS calendars, holidays excluded)
and, with --manifest, a JSON file of what was written and every defect injected, with its
exact count, so tests can compare the quality audit's findings with the truth.

Prices are a seeded geometric random walk with Gaussian daily returns (2% a day): no fat
tails, so a correct audit finds nothing in clean data. KR prices are whole won, US cents.

  python tools/sample_data.py --tickers 100 --years 3 --out data/demo.csv.gz
  python tools/sample_data.py --tickers 40 --years 2 --inject all --manifest m.json --out d.csv
"""
import argparse
import gzip
import json
import os
import sys
from datetime import date, timedelta

import exchange_calendars as xcals
import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))
from quantdb_ohlcv import REGION_EXCHANGES  # noqa: E402  (the project's one region -> exchange map)

# Region: (exchange, currency, price decimals).
REGIONS = {"KR": (REGION_EXCHANGES["KR"], "KRW", 0), "US": (REGION_EXCHANGES["US"], "USD", 2)}
SECTORS = ["Technology", "Financials", "Healthcare", "Industrials", "Energy", "Consumer", "Materials", "Utilities"]
DEFECTS = ["duplicates", "missing_sessions", "extra_sessions", "null_values", "ohlc_violations",
           "non_positive_prices", "negative_volume", "price_spike", "unadjusted_split",
           "zero_volume_moves", "stale_ticker", "future_dates"]
# Which audit check each defect shows up in.
DEFECT_CHECK = {"duplicates": "duplicates", "missing_sessions": "missing_sessions",
                "extra_sessions": "extra_sessions", "null_values": "null_values",
                "ohlc_violations": "ohlc_violations", "non_positive_prices": "non_positive_prices",
                "negative_volume": "negative_volume", "price_spike": "price_anomalies",
                "unadjusted_split": "split_jumps", "zero_volume_moves": "zero_volume_moves",
                "stale_ticker": "stale_tickers", "future_dates": "future_dates"}
COLUMNS = ["ticker", "region", "date", "open", "high", "low", "close", "volume"]


def open_text(path, mode="wt"):
    return gzip.open(path, mode, compresslevel=3, newline="") if str(path).endswith(".gz") else open(path, mode, newline="")


def sessions(exchange, start, end):
    cal = xcals.get_calendar(exchange, start=start - timedelta(days=10), end=end + timedelta(days=400))
    return cal, cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))


def region_bars(region, n_tickers, start, end, rng):
    exchange, currency, decimals = REGIONS[region]
    _, days = sessions(exchange, start, end)
    n_days = len(days)
    sigma = 0.02
    start_price = np.exp(rng.uniform(np.log(10_000), np.log(200_000), n_tickers)) if region == "KR" \
        else np.exp(rng.uniform(np.log(20), np.log(400), n_tickers))
    log_ret = rng.normal(0.0002, sigma, (n_tickers, n_days))
    close = start_price[:, None] * np.exp(np.cumsum(log_ret, axis=1))
    prev = np.concatenate([start_price[:, None], close[:, :-1]], axis=1)
    open_ = prev * np.exp(rng.normal(0, sigma / 4, (n_tickers, n_days)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, sigma / 2, (n_tickers, n_days))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, sigma / 2, (n_tickers, n_days))))
    volume = np.exp(rng.normal(np.log(500_000), 0.6, (n_tickers, n_days))).astype(np.int64) + 1
    tickers = ["%06d" % (5930 + 7 * i) if region == "KR" else "US%04d" % i for i in range(n_tickers)]
    frame = pd.DataFrame({
        "ticker": np.repeat(tickers, n_days),
        "region": region,
        "date": np.tile(days.date, n_tickers),
        "open": open_.ravel().round(decimals),
        "high": high.ravel().round(decimals),
        "low": low.ravel().round(decimals),
        "close": close.ravel().round(decimals),
        "volume": volume.ravel(),
    })
    meta = pd.DataFrame({"ticker": tickers, "region": region, "exchange": exchange,
                         "name": ["%s sample %d" % (region, i) for i in range(n_tickers)],
                         "currency": currency,
                         "sector": [SECTORS[i % len(SECTORS)] for i in range(n_tickers)]})
    return frame, meta


class Injector:
    """Applies each defect to tickers of its own, in the middle of their history, so that
    every defect shows up in exactly one audit check with an exact count."""

    def __init__(self, frame, rng, today):
        self.frame = frame.reset_index(drop=True)
        self.rng = rng
        self.today = today
        self.free = list(self.frame["ticker"].drop_duplicates())
        self.rng.shuffle(self.free)
        self.done = {}

    def _take_ticker(self):
        if not self.free:
            raise SystemExit("sample_data: not enough tickers for the defects asked; use more --tickers")
        return self.free.pop()

    def _rows(self, ticker, n, margin=30):
        idx = self.frame.index[self.frame["ticker"] == ticker].to_numpy()
        inner = idx[margin:-margin]
        return self.rng.choice(inner, size=n, replace=False)

    def apply(self, name, count):
        f = self.frame
        t = self._take_ticker()
        region = f.loc[f["ticker"] == t, "region"].iloc[0]
        rows = self._rows(t, count) if name not in ("unadjusted_split", "stale_ticker") else None
        if name == "duplicates":
            self.frame = pd.concat([f, f.loc[rows]], ignore_index=True)
        elif name == "missing_sessions":
            self.frame = f.drop(index=rows).reset_index(drop=True)
        elif name == "extra_sessions":
            exchange = REGIONS[region][0]
            cal = xcals.get_calendar(exchange, start=f["date"].min(), end=f["date"].max() + timedelta(days=10))
            extra = []
            for r in sorted(rows):
                d = f.at[r, "date"] + timedelta(days=1)
                while cal.is_session(pd.Timestamp(d)):
                    d += timedelta(days=1)
                bar = f.loc[r].copy()
                bar["date"] = d
                extra.append(bar)
            self.frame = pd.concat([f, pd.DataFrame(extra)], ignore_index=True)
        elif name == "null_values":
            f.loc[rows, "close"] = np.nan
        elif name == "ohlc_violations":
            f.loc[rows, "high"] = (f.loc[rows, ["open", "close"]].min(axis=1) + f.loc[rows, ["open", "close"]].max(axis=1)) / 2
            f.loc[rows, "low"] = f.loc[rows, ["open", "close", "high"]].min(axis=1) * 0.99
            self.frame = f
        elif name == "non_positive_prices":
            f.loc[rows, "low"] = 0
        elif name == "negative_volume":
            f.loc[rows, "volume"] = -f.loc[rows, "volume"]
        elif name == "price_spike":
            for col in ("open", "high", "low", "close"):
                f.loc[rows, col] = f.loc[rows, col] * 100
        elif name == "zero_volume_moves":
            f.loc[rows, "volume"] = 0
        elif name == "unadjusted_split":
            # `count` tickers each get one 2-for-1 split whose history was not adjusted:
            # every price from a mid-history date on is half of what it was.
            tickers = [t] + [self._take_ticker() for _ in range(count - 1)]
            for tk in tickers:
                split_row = self._rows(tk, 1)[0]
                after = (f["ticker"] == tk) & (f.index >= split_row)
                for col in ("open", "high", "low", "close"):
                    f.loc[after, col] = (f.loc[after, col] / 2).round(REGIONS[region][2])
                f.loc[after, "volume"] = f.loc[after, "volume"] * 2
        elif name == "stale_ticker":
            tickers = [t] + [self._take_ticker() for _ in range(count - 1)]
            last = f.groupby("ticker")["date"].transform("max")
            rank = f[f["ticker"].isin(tickers)].groupby("ticker")["date"].rank(ascending=False)
            drop = rank.index[rank <= 20]
            self.frame = f.drop(index=drop).reset_index(drop=True)
            del last
        elif name == "future_dates":
            exchange = REGIONS[region][0]
            cal = xcals.get_calendar(exchange, start=self.today - timedelta(days=30), end=self.today + timedelta(days=300))
            future = cal.sessions_in_range(pd.Timestamp(self.today + timedelta(days=1)), pd.Timestamp(self.today + timedelta(days=200)))
            extra = []
            for i in range(count):
                bar = f.loc[f["ticker"] == t].iloc[-1].copy()
                bar["date"] = future[i].date()
                extra.append(bar)
            self.frame = pd.concat([f, pd.DataFrame(extra)], ignore_index=True)
        self.done[name] = {"count": count, "check": DEFECT_CHECK[name], "tickers": [t] if name not in (
            "unadjusted_split", "stale_ticker") else tickers}


def parse_inject(spec):
    if not spec:
        return {}
    if spec == "all":
        return {"duplicates": 3, "missing_sessions": 4, "extra_sessions": 2, "null_values": 2, "ohlc_violations": 3,
                "non_positive_prices": 2, "negative_volume": 2, "price_spike": 1, "unadjusted_split": 1,
                "zero_volume_moves": 2, "stale_ticker": 1, "future_dates": 1}
    out = {}
    for part in spec.split(","):
        name, _, count = part.partition("=")
        if name not in DEFECTS:
            raise SystemExit("sample_data: unknown defect %r; known: %s" % (name, ", ".join(DEFECTS)))
        out[name] = int(count or 1)
    return out


def write_csv(frame, path, columns):
    with open_text(path) as handle:
        frame.to_csv(handle, columns=columns, index=False, float_format="%.10g", na_rep="")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tickers", type=int, default=100, help="tickers per region")
    p.add_argument("--years", type=float, default=3)
    p.add_argument("--regions", default="KR,US")
    p.add_argument("--end", default="2025-10-31", help="last session (fixed, so output is reproducible)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--inject", default="", help="defects: name=count,... or 'all'")
    p.add_argument("--today", help="what 'future' means for future_dates (default: --end; never the clock)")
    p.add_argument("--out", required=True)
    p.add_argument("--manifest")
    args = p.parse_args(argv)

    end = date.fromisoformat(args.end)
    start = end - timedelta(days=int(round(args.years * 365.25)))
    rng = np.random.default_rng(args.seed)
    bars, metas = [], []
    for region in args.regions.split(","):
        if region not in REGIONS:
            raise SystemExit("sample_data: unknown region %r; known: %s" % (region, ", ".join(REGIONS)))
        frame, meta = region_bars(region, args.tickers, start, end, rng)
        bars.append(frame)
        metas.append(meta)
    frame = pd.concat(bars, ignore_index=True)
    injector = Injector(frame, np.random.default_rng(args.seed + 1), date.fromisoformat(args.today or args.end))
    for name, count in parse_inject(args.inject).items():
        injector.apply(name, count)
    frame = injector.frame.sort_values(["region", "ticker", "date"], kind="stable")
    frame["volume"] = frame["volume"].astype("Int64")

    write_csv(frame, args.out, COLUMNS)
    tickers = pd.concat(metas, ignore_index=True)
    write_csv(tickers, args.out + ".tickers", ["ticker", "region", "exchange", "name", "currency", "sector"])
    cal_rows = []
    for region in args.regions.split(","):
        exchange = REGIONS[region][0]
        _, days = sessions(exchange, start, end + timedelta(days=365))
        cal_rows.append(pd.DataFrame({"exchange": exchange, "session": days.date}))
    write_csv(pd.concat(cal_rows), args.out + ".sessions", ["exchange", "session"])

    manifest = {"rows": int(len(frame)), "tickers": int(len(tickers)), "start": start.isoformat(),
                "end": end.isoformat(), "today": args.today or args.end, "seed": args.seed, "defects": injector.done}
    if args.manifest:
        with open(args.manifest, "w") as handle:
            json.dump(manifest, handle, indent=2, default=str)
    print(json.dumps({k: v for k, v in manifest.items() if k != "defects"}), file=sys.stderr)


if __name__ == "__main__":
    main()
