-- One ticker's last 250 sessions (the guide's "single ticker, 250 days" read), rows as an
-- application fetches them. pgbench -D: ntickers (US0000..), start250 (YYYYMMDD).
\set i random(0, :ntickers - 1)
SELECT date, open, high, low, close, volume FROM ohlcv_data WHERE region = 'US' AND ticker = 'US' || lpad(:i::text, 4, '0') AND date >= to_date(:start250::text, 'YYYYMMDD') ORDER BY date DESC;
