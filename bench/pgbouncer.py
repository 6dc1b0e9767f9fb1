#!/usr/bin/env python3
"""PgBouncer load benchmark (docs/benchmarks.md#pgbouncer-500-clients, docs/pgbouncer.md).

pgbench runs inside the database container (no network noise), over TCP with TLS to
127.0.0.1, as a temporary login role with no connection limit of its own, with the quant
reads of bench/pgbench/ (one ticker's last 250 sessions; one ticker's last year; equal
weights), for the same duration at each step:

  through PgBouncer (:6432, transaction pooling, the pool sized as below): 10, 100, 500 clients
  straight at PostgreSQL (:5432): 5, 10, 50, 90 clients (the peak is the direct figure), then
  500 clients, which must fail with "too many clients" (max_connections 100)

Per step: tps (pgbench's, without the initial connection time), failed transactions, p50/p95
latency from the per-transaction logs (pgbench -l: every transaction), and the server
connections seen during the run. The result goes under the key `pgbouncer_500_clients` of
bench/results.json (the other keys are kept). The box is shared, so the direct peak's client
count and 500 clients through the pool then run again in alternation (--rounds, default 2):
tps, p50 and p95 are the medians of those samples (each sample's p95 from its own log), failed
their sum. Passing: 0 failed at 500 clients through the
pool, and its tps >= 90% of the direct peak.

CPU placement: an application's clients run on machines of their own, so by default pgbench
gets core 0 to itself and PostgreSQL (the postmaster, so every backend it forks) and PgBouncer
share the other cores, in the direct and the pooled steps alike; the pooler's own CPU is thus
taken from the database's, as on a host running both. --shared (BENCH_PGB_SHARED=1) lets
everything share every core (the earlier runs); --load-cpus, --server-cpus and --pooler-cpus
(BENCH_PGB_*_CPUS) set other placements. It is set from the host with taskset on the
container's processes, recorded under `setup.cpus`, and undone at the end.

Pool size: a transaction pool serves most when it holds as many server connections as the
database serves best at once, so by default (--pool-size peak, BENCH_PGB_POOL_SIZE) the pooled
steps run with `default_pool_size` set to the direct peak's client count (pgbouncer.ini edited
in the container and reloaded; the original file put back and reloaded at the end). `keep`
uses the host's configured size, a number sets that size.

    python bench/pgbouncer.py [--host qdb-lab-db1] [--database quant_platform] [--seconds 30]
                              [--shared | --load-cpus 0 --server-cpus 1 [--pooler-cpus 1]]
"""
import argparse
import datetime
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = "/tmp/qdb-pgbouncer-bench"    # inside the container
# A login role of the run's own (a new name each run: PgBouncer keeps idle server connections
# of a role for server_idle_timeout, and a dropped role's sessions keep its old identity).
ROLE = "qdb_bench_pgb_" + secrets.token_hex(4)
SCRIPTS = ("single_ticker_250d.sql", "single_ticker_1y.sql")
POOL_CLIENTS = (10, 100, 500)
DIRECT_CLIENTS = (5, 10, 50, 90)


def podman(host, *args, user="root", env=None, check=True, input_text=None):
    cmd = ["podman", "exec", "-i", "-u", user]
    for key, value in (env or {}).items():
        cmd += ["-e", "%s=%s" % (key, value)]
    proc = subprocess.run(cmd + [host] + list(args), input=input_text, capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit("bench-pgbouncer: %s failed (%d): %s" % (" ".join(args)[:200], proc.returncode, proc.stderr[-2000:]))
    return proc


def sql(host, database, query):
    return podman(host, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", database, user="postgres",
                  input_text=query).stdout.strip()


def drop_roles(host, database):
    """The benchmark's roles (this run's, and any an interrupted run left), their sessions
    (PgBouncer's idle server connections included) and their grants, gone."""
    sql(host, database, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename LIKE 'qdb\\_bench\\_pgb%'"
                        " OR (backend_type = 'client backend' AND NOT EXISTS (SELECT FROM pg_roles WHERE oid = usesysid))")
    sql(host, database, "DO $$ DECLARE r text; BEGIN FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'qdb\\_bench\\_pgb%'"
                        " LOOP EXECUTE format('REVOKE ALL ON ohlcv_data FROM %I; REVOKE ALL ON SCHEMA public FROM %I;"
                        " REVOKE ALL ON DATABASE %I FROM %I; DROP ROLE %I', r, r, current_database(), r, r);"
                        " END LOOP; END $$")


def parse(out):
    def grab(pattern, cast=float):
        match = re.search(pattern, out)
        return cast(match.group(1)) if match else None
    return {"tps": grab(r"tps = ([0-9.]+) \(without initial connection time\)"),
            "processed": grab(r"number of transactions actually processed: (\d+)", int),
            "failed": grab(r"number of failed transactions: (\d+)", int),
            "connection_ms": grab(r"initial connection time = ([0-9.]+) ms")}


def pin(host, server_cpus, pooler_cpus):
    """Every PostgreSQL process of the container (the postmaster first: backends it forks
    later inherit its mask) on server_cpus, PgBouncer on pooler_cpus; from the host, whose
    root may set any process's affinity. Returns how many processes each got."""
    placed = {"postgres": 0, "pgbouncer": 0}
    top = subprocess.run(["podman", "top", host, "hpid", "comm"], capture_output=True, text=True, check=True)
    for line in top.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 2 or fields[1] not in placed or not fields[0].isdigit():
            continue
        cpus = server_cpus if fields[1] == "postgres" else pooler_cpus
        proc = subprocess.run(["taskset", "-a", "-cp", cpus, fields[0]], capture_output=True, text=True)
        if proc.returncode == 0:
            placed[fields[1]] += 1
        elif "No such process" not in proc.stderr:   # a backend that just ended is fine
            sys.exit("bench-pgbouncer: taskset %s %s failed: %s" % (cpus, fields[0], proc.stderr.strip()))
    if not placed["postgres"] or not placed["pgbouncer"]:
        sys.exit("bench-pgbouncer: found no %s process in %s to place" % (
            "postgres" if not placed["postgres"] else "pgbouncer", host))
    return placed


def set_pool_size(host, size):
    """default_pool_size set to size in pgbouncer.ini (the original kept beside it), or, with
    None, the original put back; PgBouncer reloaded either way (clients stay connected)."""
    ini, saved = "/etc/pgbouncer/pgbouncer.ini", WORK + "/pgbouncer.ini.orig"
    if size is None:
        podman(host, "cp", "-p", saved, ini)
    else:
        podman(host, "cp", "-p", ini, saved)
        podman(host, "sed", "-i", "s/^default_pool_size = .*/default_pool_size = %d/" % size, ini)
    podman(host, "systemctl", "reload", "pgbouncer")
    time.sleep(1)


def percentiles(host, prefix):
    """p50/p95/p99 in ms over every transaction of the per-transaction logs (third field: µs)."""
    code = ("import glob, sys\n"
            "v = sorted(int(l.split()[2]) for f in glob.glob(sys.argv[1] + '.*') for l in open(f) if l.strip())\n"
            "q = lambda p: v[min(len(v) - 1, int(p * len(v)))] / 1000.0 if v else -1\n"
            "print(len(v), q(0.50), q(0.95), q(0.99))\n")
    count, p50, p95, p99 = podman(host, "python3", "-c", code, prefix).stdout.split()
    if int(count) == 0:
        return {"logged": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {"logged": int(count), "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2)}


def server_connections(host, database, stop, peak):
    query = "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s'" % ROLE
    while not stop.is_set():
        proc = podman(host, "psql", "-XAtq", "-d", database, "-c", query, user="postgres", check=False)
        if proc.returncode == 0 and proc.stdout.strip().isdigit():
            peak[0] = max(peak[0], int(proc.stdout.strip()))
        stop.wait(2.0)


def pgbench(host, args, name, port, clients, seconds, password, variables, log=True):
    prefix = "%s/%s" % (WORK, name)
    podman(host, "sh", "-c", "rm -f %s.*" % prefix)
    cmd = (["taskset", "-c", args.load_cpus] if args.load_cpus else []) + [
           "pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", ROLE, "-c", str(clients), "-j", "2",
           "-T", str(seconds), "--failures-detailed"]
    if log:
        cmd += ["-l", "--log-prefix=" + prefix]
    for key, value in variables.items():
        cmd += ["-D", "%s=%s" % (key, value)]
    for script in SCRIPTS:
        cmd += ["-f", "%s/%s" % (WORK, script)]
    cmd.append(args.database)
    stop, peak = threading.Event(), [0]
    watcher = threading.Thread(target=server_connections, args=(host, args.database, stop, peak), daemon=True)
    watcher.start()
    started = time.time()
    proc = podman(host, *cmd, user="postgres", env={"PGPASSWORD": password, "PGSSLMODE": "require"}, check=False)
    stop.set()
    watcher.join()
    result = {"clients": clients, "port": port, "seconds": seconds, "rc": proc.returncode,
              "wall_s": round(time.time() - started, 1), "server_connections_peak": peak[0]}
    result.update(parse(proc.stdout))
    if proc.returncode == 0 and log:
        result.update(percentiles(host, prefix))
    else:
        lines = proc.stderr.splitlines()
        errors = ([line for line in lines if "too many clients" in line or "remaining connection slots" in line]
                  or [line for line in lines if "error" in line.lower() or "FATAL" in line])
        result["error"] = errors[0][:300] if errors else proc.stderr[-300:]
    label = name if name.startswith("warmup") else ("pool" if port == args.pool_port else "direct")
    print("  %-11s %3d clients: rc %d, %s tps, failed %s, p95 %s ms, server connections <= %d%s" % (
        label, clients, proc.returncode, result.get("tps"), result.get("failed"), result.get("p95_ms"), peak[0],
        (", " + result["error"]) if "error" in result else ""), flush=True)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=os.environ.get("BENCH_PGB_HOST", "qdb-lab-db1"), help="the database container")
    p.add_argument("--database", default=os.environ.get("BENCH_PGB_DATABASE", "quant_platform"))
    p.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_PGB_SECONDS", "30")))
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_PGB_ROUNDS", "2")),
                   help="extra alternating runs of the direct peak and of 500 clients through the pool")
    p.add_argument("--pool-port", type=int, default=6432)
    p.add_argument("--server-port", type=int, default=5432)
    p.add_argument("--shared", action="store_true", default=os.environ.get("BENCH_PGB_SHARED") == "1",
                   help="pgbench, PgBouncer and PostgreSQL all on every core")
    p.add_argument("--load-cpus", default=os.environ.get("BENCH_PGB_LOAD_CPUS") or None,
                   help="cores for pgbench, as taskset -c takes them (default: 0)")
    p.add_argument("--server-cpus", default=os.environ.get("BENCH_PGB_SERVER_CPUS") or None,
                   help="cores for PostgreSQL (default: all but 0)")
    p.add_argument("--pooler-cpus", default=os.environ.get("BENCH_PGB_POOLER_CPUS") or None,
                   help="cores for PgBouncer (default: the server's)")
    p.add_argument("--pool-size", default=os.environ.get("BENCH_PGB_POOL_SIZE", "peak"),
                   help="peak (the direct peak's client count), keep (pgbouncer.ini's) or a number")
    p.add_argument("--results", default=os.path.join(HERE, "results.json"))
    p.add_argument("--raw", default=os.path.join(HERE, "..", "reports", "bench-pgbouncer.json"))
    args = p.parse_args()

    host, db = args.host, args.database
    for name in ("load_cpus", "server_cpus", "pooler_cpus"):
        value = getattr(args, name)
        if value is not None and not re.fullmatch(r"[0-9]+([-,][0-9]+)*", value):
            sys.exit("bench-pgbouncer: --%s must be a core list such as 0 or 0-1 or 0,2, not %r" % (name.replace("_", "-"), value))
    cores = os.cpu_count() or 1
    if args.shared or cores < 2:
        args.load_cpus = args.server_cpus = args.pooler_cpus = None
    elif args.load_cpus is None and args.server_cpus is None:
        args.load_cpus, args.server_cpus = "0", ("1" if cores == 2 else "1-%d" % (cores - 1))
    if (args.server_cpus is None) != (args.load_cpus is None):
        sys.exit("bench-pgbouncer: give --load-cpus and --server-cpus together (or neither)")
    args.pooler_cpus = args.pooler_cpus or args.server_cpus
    if args.pool_size not in ("peak", "keep") and not (args.pool_size.isdigit() and int(args.pool_size) > 0):
        sys.exit("bench-pgbouncer: --pool-size must be peak, keep or a positive number, not %r" % args.pool_size)
    if podman(host, "systemctl", "is-active", "pgbouncer", check=False).stdout.strip() != "active":
        sys.exit("bench-pgbouncer: PgBouncer is not running on %s (site.yml with the host in quantdb_pgbouncer)" % host)
    pooled = podman(host, "grep", "-E", "^%s = " % db, "/etc/pgbouncer/pgbouncer.ini", check=False)
    server_host = re.search(r"host=(\S+)", pooled.stdout)
    server_path = ("Unix socket " + server_host.group(1) if server_host and server_host.group(1).startswith("/")
                   else "TCP per server_tls_sslmode")
    if pooled.returncode != 0:
        sys.exit("bench-pgbouncer: %s is not in pgbouncer_databases on %s" % (db, host))
    ini = podman(host, "cat", "/etc/pgbouncer/pgbouncer.ini").stdout
    pool_size = int(re.search(r"^default_pool_size = (\d+)", ini, re.M).group(1))
    reserve = int(re.search(r"^reserve_pool_size = (\d+)", ini, re.M).group(1))
    ntickers = int(sql(host, db, "SELECT count(DISTINCT ticker) FROM ohlcv_data WHERE region = 'US' AND ticker ~ '^US[0-9]{4}$'"))
    if ntickers == 0:
        sys.exit("bench-pgbouncer: no US bars in %s (make demo loads them)" % db)
    start250 = sql(host, db, "SELECT to_char(min(date), 'YYYYMMDD') FROM (SELECT date FROM ohlcv_data"
                             " WHERE region = 'US' AND ticker = 'US0000' ORDER BY date DESC LIMIT 250) s")
    start1y = sql(host, db, "SELECT to_char(max(date) - INTERVAL '1 year', 'YYYYMMDD') FROM ohlcv_data"
                            " WHERE region = 'US' AND ticker = 'US0000'")
    settings = dict(line.split("|") for line in sql(host, db, "SELECT name, setting FROM pg_settings WHERE name IN"
                                                              " ('max_connections', 'shared_buffers', 'ssl')").splitlines())
    bars = int(sql(host, db, "SELECT count(*) FROM ohlcv_data"))
    variables = {"ntickers": ntickers, "start250": start250, "start1y": start1y}

    # A login role of the benchmark's own (SCRAM, no connection limit), dropped at the end.
    password = secrets.token_urlsafe(24)
    drop_roles(host, db)
    podman(host, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db, "-v", "pw=" + password, user="postgres",
           input_text="SET password_encryption = 'scram-sha-256';\n"
                      "CREATE ROLE %s LOGIN PASSWORD :'pw';\n"
                      "GRANT CONNECT ON DATABASE %s TO %s; GRANT USAGE ON SCHEMA public TO %s;\n"
                      "GRANT SELECT ON ohlcv_data TO %s;\n" % (ROLE, db, ROLE, ROLE, ROLE))
    podman(host, "sh", "-c", "mkdir -p %s && chown postgres %s" % (WORK, WORK))
    for script in SCRIPTS:
        subprocess.run(["podman", "cp", os.path.join(HERE, "pgbench", script), "%s:%s/%s" % (host, WORK, script)],
                       check=True)
    load = podman(host, "cat", "/proc/loadavg").stdout.split()[0]
    print("bench-pgbouncer: %s, database %s (%d bars, %d US tickers), %d s per step, max_connections %s,"
          " load average %s" % (host, db, bars, ntickers, args.seconds, settings["max_connections"], load), flush=True)
    cpus = {"load": args.load_cpus or "any", "server": args.server_cpus or "any", "pooler": args.pooler_cpus or "any"}
    configured_pool_size, pool_size_set = pool_size, False
    try:
        if args.server_cpus:
            cpus["processes"] = pin(host, args.server_cpus, args.pooler_cpus)
            print("bench-pgbouncer: pgbench on cores %s, PostgreSQL on %s (%d processes), PgBouncer on %s" % (
                args.load_cpus, args.server_cpus, cpus["processes"]["postgres"], args.pooler_cpus), flush=True)
        pgbench(host, args, "warmup", args.server_port, 10, 5, password, variables, log=False)
        # The top direct step: 90 clients, or what max_connections leaves beside the sessions
        # already there and the reserved slots (a lab with exporters and cron has some).
        free = int(sql(host, db, "SELECT current_setting('max_connections')::int"
                                 " - current_setting('superuser_reserved_connections')::int"
                                 " - current_setting('reserved_connections')::int"
                                 " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"))
        steps = sorted(set(min(n, free - 3) for n in DIRECT_CLIENTS))
        direct = [pgbench(host, args, "direct_%d" % n, args.server_port, n, args.seconds, password, variables)
                  for n in steps]
        best = max(direct, key=lambda r: r["tps"] or 0)["clients"]
        size = {"peak": best, "keep": pool_size}.get(args.pool_size) or int(args.pool_size)
        if size != pool_size:
            set_pool_size(host, size)
            pool_size_set = True
        # The pool starts empty (min_pool_size 0): fill it first, as the direct side was warmed.
        pgbench(host, args, "warmup_pool", args.pool_port, 30, 10, password, variables, log=False)
        pool = [pgbench(host, args, "pool_%d" % n, args.pool_port, n, args.seconds, password, variables)
                for n in POOL_CLIENTS]
        # The box is shared (other containers come and go): the headline pair, the direct peak's
        # client count and 500 through the pool, again in alternation; the medians are reported.
        pairs = []
        for i in range(args.rounds):
            pairs.append((pgbench(host, args, "direct_%d_r%d" % (best, i + 1), args.server_port, best, args.seconds,
                                  password, variables),
                          pgbench(host, args, "pool_500_r%d" % (i + 1), args.pool_port, 500, args.seconds,
                                  password, variables)))
        refused = pgbench(host, args, "direct_500", args.server_port, 500, 5, password, variables, log=False)
    finally:
        if pool_size_set:
            set_pool_size(host, None)
        if args.server_cpus:
            every = "0-%d" % (os.cpu_count() - 1)
            pin(host, every, every)
        drop_roles(host, db)
        podman(host, "rm", "-rf", WORK, check=False)

    peak_runs = [r for r in direct if r["clients"] == best] + [d for d, _ in pairs]
    pool_runs = [pool[-1]] + [p for _, p in pairs]

    def median(runs, key):
        values = sorted(r.get(key) for r in runs if r.get(key) is not None and r["rc"] == 0)   # aborted runs out
        return values[len(values) // 2] if values else None   # the upper median of an even count

    p500 = {"tps": median(pool_runs, "tps"), "p95_ms": median(pool_runs, "p95_ms"), "p50_ms": median(pool_runs, "p50_ms"),
            "failed": sum(r["failed"] or 0 for r in pool_runs) if all(r["failed"] is not None for r in pool_runs) else None,
            "rc": max(r["rc"] for r in pool_runs)}
    peak = {"tps": median(peak_runs, "tps"), "clients": best}
    ratio = round((p500["tps"] or 0) / peak["tps"], 3) if peak["tps"] else None
    # Over max_connections: "sorry, too many clients already", or first, for a role without
    # SUPERUSER, "remaining connection slots are reserved for roles with the SUPERUSER attribute".
    refused_ok = refused["rc"] != 0 and any(m in refused.get("error", "") for m in
                                            ("too many clients", "remaining connection slots are reserved"))
    summary = {
        "tps": p500["tps"], "p95_ms": p500.get("p95_ms"), "p50_ms": p500.get("p50_ms"), "failed": p500["failed"],
        "direct_peak_tps": peak["tps"], "direct_peak_clients": peak["clients"], "ratio_to_direct_peak": ratio,
        "goal": "0 failed, tps >= 90% of the direct peak",
        "met": bool(p500["failed"] == 0 and p500["rc"] == 0 and ratio is not None and ratio >= 0.9 and refused_ok),
        "direct_500_refused": refused_ok, "direct_500_error": refused.get("error"),
        "direct_steps": steps, "free_connection_slots_at_start": free,
        "samples": len(pool_runs), "pool_500_tps_samples": [r["tps"] for r in pool_runs],
        "direct_peak_tps_samples": [r["tps"] for r in peak_runs],
        "pool": {str(r["clients"]): r for r in pool}, "direct": {str(r["clients"]): r for r in direct},
        "rounds": [{"direct": d, "pool_500": p} for d, p in pairs],
        "setup": {"host": host, "database": db, "bars": bars, "us_tickers": ntickers, "seconds": args.seconds,
                  "max_connections": int(settings["max_connections"]), "shared_buffers": settings["shared_buffers"],
                  "pool_mode": "transaction", "default_pool_size": size, "configured_pool_size": configured_pool_size,
                  "pool_size_rule": args.pool_size, "reserve_pool_size": reserve, "tls": "sslmode=require client->pgbouncer"
                  " and client->postgres; pgbouncer->postgres: " + server_path, "pgbench_threads": 2, "cpus": cpus,
                  "scripts": list(SCRIPTS), "start250": start250, "start1y": start1y, "load_average_at_start": float(load)},
        "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    os.makedirs(os.path.dirname(args.raw), exist_ok=True)
    with open(args.raw, "w") as handle:
        json.dump(summary, handle, indent=2)
    results = {}
    if os.path.exists(args.results):
        with open(args.results) as handle:
            results = json.load(handle)
    results["pgbouncer_500_clients"] = summary
    with open(args.results + ".tmp", "w") as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    os.replace(args.results + ".tmp", args.results)
    print("bench-pgbouncer: 500 clients through PgBouncer %.1f tps (%.0f%% of the direct peak %.1f tps at %d clients),"
          " p95 %s ms, failed %s; 500 straight at PostgreSQL: %s" % (
              p500["tps"] or 0, 100 * (ratio or 0), peak["tps"], peak["clients"], p500.get("p95_ms"), p500["failed"],
              ("refused: " + refused.get("error", "").split("FATAL:")[-1].strip()) if refused_ok else "NOT refused as expected"))
    print("bench-pgbouncer: wrote %s (key pgbouncer_500_clients) and %s" % (args.results, args.raw))
    return 0 if summary["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
