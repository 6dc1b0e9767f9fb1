-- A database as the operations guide builds it by hand: ohlcv_data without a unique key,
-- a plain index named like ours, numeric prices, 7-day chunks, and 3 duplicate bars whose
-- later copies (close 999) must go when the schema role adopts it.
DROP DATABASE IF EXISTS qa_seed;
CREATE DATABASE qa_seed;
\c qa_seed
CREATE EXTENSION timescaledb;
CREATE TABLE tickers (ticker varchar(20), region varchar(2), name varchar(200), PRIMARY KEY (ticker, region));
CREATE TABLE ohlcv_data (id bigserial, ticker varchar(20) NOT NULL, region varchar(2) NOT NULL, date date NOT NULL,
  open numeric(15,4), high numeric(15,4), low numeric(15,4), close numeric(15,4), volume bigint, created_at timestamp DEFAULT now());
SELECT create_hypertable('ohlcv_data', 'date');
CREATE INDEX idx_ohlcv_ticker_region_date ON ohlcv_data (ticker, region, date DESC);
INSERT INTO tickers VALUES ('005930', 'KR', 'Samsung'), ('AAPL', 'US', 'Apple');
INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume, created_at)
SELECT t, r, d::date, 100, 110, 90, 105, 1000, '2025-01-01'::timestamp + (d::date - '2024-01-01'::date) * interval '1 minute'
FROM (VALUES ('005930','KR'),('AAPL','US')) v(t,r), generate_series('2024-01-01'::date, '2024-12-31', '1 day') d;
-- duplicates: 3 later copies with a different close (must go), keep the earliest
INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume, created_at)
SELECT ticker, region, date, open, high, low, 999, volume, created_at + interval '1 day' FROM ohlcv_data WHERE ticker = 'AAPL' AND date IN ('2024-03-01','2024-03-02','2024-06-03');
