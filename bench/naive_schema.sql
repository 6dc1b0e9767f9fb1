-- The naive setup the benchmark compares against: ohlcv_data exactly as the operations guide
-- builds it by hand (numeric prices, no unique key, TimescaleDB's default 7-day chunks, the
-- guide's index), on a cluster with stock Debian settings. Loaded with a plain COPY.
CREATE TABLE IF NOT EXISTS ohlcv_data (
    id         bigserial,
    ticker     varchar(20)   NOT NULL,
    region     varchar(2)    NOT NULL,
    date       date          NOT NULL,
    open       numeric(15,4),
    high       numeric(15,4),
    low        numeric(15,4),
    close      numeric(15,4),
    volume     bigint,
    created_at timestamp DEFAULT now()
);
SELECT create_hypertable('ohlcv_data', 'date', if_not_exists => true);
CREATE INDEX IF NOT EXISTS idx_ohlcv_ticker_date ON ohlcv_data (ticker, region, date DESC);
