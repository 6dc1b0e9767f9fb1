-- One ticker's last year (the guide's "single ticker, 1 year" read). pgbench -D: ntickers,
-- start1y (YYYYMMDD).
\set i random(0, :ntickers - 1)
SELECT date, open, high, low, close, volume FROM ohlcv_data WHERE region = 'US' AND ticker = 'US' || lpad(:i::text, 4, '0') AND date >= to_date(:start1y::text, 'YYYYMMDD') ORDER BY date DESC;
