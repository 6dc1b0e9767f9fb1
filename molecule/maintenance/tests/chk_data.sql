-- Test data of test_checks.py and test_emergency.py: region ZC on a made-up exchange XCHK
-- (weekday sessions of 2024), 3 tickers with a bar on every session from 2024-01-01 to
-- 2024-03-29; idempotent (deletes its own rows first), deleted again after the tests.
DELETE FROM ohlcv_data WHERE region = 'ZC';
DELETE FROM tickers WHERE region = 'ZC';
DELETE FROM exchange_sessions WHERE exchange = 'XCHK';
INSERT INTO exchange_sessions (exchange, session)
SELECT 'XCHK', d::date FROM generate_series('2024-01-01'::date, '2024-12-31'::date, '1 day') d WHERE extract(isodow FROM d) < 6;
INSERT INTO tickers (ticker, region, exchange) SELECT 'ZC00' || t, 'ZC', 'XCHK' FROM generate_series(1, 3) t;
INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume)
SELECT 'ZC00' || t, 'ZC', s.session, 100 + t + n * 0.01, 101 + t + n * 0.01, 99 + t + n * 0.01, 100.5 + t + n * 0.01, 1000 * t + n
FROM generate_series(1, 3) t,
     (SELECT session, row_number() OVER (ORDER BY session) AS n FROM exchange_sessions
      WHERE exchange = 'XCHK' AND session <= '2024-03-29') s;
