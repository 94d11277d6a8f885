#!/usr/bin/env python3
"""The ab_testing benchmark harness: pgbench for the hot paths, timed queries for the analysis.

Every case is reported with its baseline measured in the same run, as a ratio: machines
are shared and absolute numbers drift. Run through scripts/bench.sh, which installs the release
build and starts a dedicated cluster.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

import psycopg
from psycopg import sql as pgsql
from psycopg.types.json import Jsonb

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = os.environ.get("PGHOST", "/tmp/ab_bench_pg")
PORT = os.environ.get("PGPORT", "5498")
DB = "ab_bench"
# --citus: the coordinator of scripts/citus-cluster.sh (its postgres database).
CITUS_HOST = os.environ.get("AB_CITUS_DIR", "/tmp/ab_testing_citus")
CITUS_PORT = os.environ.get("AB_CITUS_PORT", "5510")


def conninfo(db=None):
    return f"host={HOST} port={PORT} user=postgres dbname={db or DB}"


def psql_file(path, db=None):
    subprocess.run(["psql", "-X", "-q", "-h", HOST, "-p", PORT, "-U", "postgres", "-d", db or DB, "-f", path],
                   check=True, stdout=subprocess.DEVNULL)


def pgbench(script_text, seconds, clients=2, threads=None, db=None, transactions=None):
    """tps of `script_text` run for `seconds` (or `transactions` per client)."""
    path = f"/tmp/ab_bench_{os.getpid()}.sql"
    with open(path, "w") as f:
        f.write(script_text)
    limit = ["-t", str(transactions)] if transactions else ["-T", str(seconds)]
    out = subprocess.run(
        ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(threads or clients), *limit,
         "-h", HOST, "-p", PORT, "-U", "postgres", "-f", path, db or DB],
        check=True, capture_output=True, text=True).stdout
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if failed and int(failed.group(1)) > 0:
        sys.exit(f"pgbench reported failed transactions:\n{out}")
    return float(m.group(1))


HOT_PATH = [
    # (case, script, baseline name, baseline script)
    ("ab_get_variant, assigned user",
     "\\set u random(1, 100000)\nSELECT ab_get_variant('bench', 'user-' || :u);\n",
     "SELECT 1", "SELECT 1;\n"),
    ("bare primary-key lookup, assigned user",
     "\\set u random(1, 100000)\nSELECT variant_id FROM ab_assignments WHERE experiment_id = 1 AND user_id = 'user-' || :u;\n",
     "SELECT 1", "SELECT 1;\n"),
    ("PL/pgSQL peer, assigned user",
     "\\set u random(1, 100000)\nSELECT plpg_get_variant('bench', 'user-' || :u);\n",
     "SELECT 1", "SELECT 1;\n"),
    ("ab_get_variant, new user",
     "\\set u random(1, 2000000000)\nSELECT ab_get_variant('bench', 'new-' || :client_id || '-' || :u);\n",
     "bare INSERT ON CONFLICT",
     "\\set u random(1, 2000000000)\nINSERT INTO bare_assignments (experiment_id, user_id, variant_id) "
     "VALUES (1, 'new-' || :client_id || '-' || :u, 1) ON CONFLICT DO NOTHING;\n"),
    # The same new-user call for an experiment that owns all of a layer: the layer check costs
    # one more hash.
    ("ab_get_variant, new user, layered",
     "\\set u random(1, 2000000000)\nSELECT ab_get_variant('bench layered', 'new-' || :client_id || '-' || :u);\n",
     "ab_get_variant, new user",
     "\\set u random(1, 2000000000)\nSELECT ab_get_variant('bench', 'new-' || :client_id || '-' || :u);\n"),
    # Rollouts against the fixed experiment: the same lookups, plus the rolled-back check.
    ("ab_get_variant, assigned user, rollout",
     "\\set u random(1, 100000)\nSELECT ab_get_variant('bench rollout', 'user-' || :u);\n",
     "ab_get_variant, assigned user",
     "\\set u random(1, 100000)\nSELECT ab_get_variant('bench', 'user-' || :u);\n"),
    ("ab_get_variant, assigned user, rolled back",
     "\\set u random(1, 100000)\nSELECT ab_get_variant('bench rolled back', 'user-' || :u);\n",
     "ab_get_variant, assigned user",
     "\\set u random(1, 100000)\nSELECT ab_get_variant('bench', 'user-' || :u);\n"),
    ("ab_get_variant, new user, rollout",
     "\\set u random(1, 2000000000)\nSELECT ab_get_variant('bench rollout', 'new-' || :client_id || '-' || :u);\n",
     "ab_get_variant, new user",
     "\\set u random(1, 2000000000)\nSELECT ab_get_variant('bench', 'new-' || :client_id || '-' || :u);\n"),
    ("PL/pgSQL peer, new user",
     "\\set u random(1, 2000000000)\nSELECT plpg_get_variant('bench', 'new-' || :client_id || '-' || :u);\n",
     "bare INSERT ON CONFLICT",
     "\\set u random(1, 2000000000)\nINSERT INTO bare_assignments (experiment_id, user_id, variant_id) "
     "VALUES (1, 'new-' || :client_id || '-' || :u, 1) ON CONFLICT DO NOTHING;\n"),
    ("ab_record_result",
     "\\set u random(1, 100000)\nSELECT ab_record_result('bench', 'resolution_rate', 1, 'user-' || :u);\n",
     "bare INSERT",
     "\\set u random(1, 100000)\nINSERT INTO bare_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
     "VALUES (1, 1, 'user-' || :u, 'resolution_rate', 1);\n"),
    ("PL/pgSQL peer, record result",
     "\\set u random(1, 100000)\nSELECT plpg_record_result('bench', 'resolution_rate', 1, 'user-' || :u);\n",
     "bare INSERT",
     "\\set u random(1, 100000)\nINSERT INTO bare_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
     "VALUES (1, 1, 'user-' || :u, 'resolution_rate', 1);\n"),
]


def hot_path(seconds, rounds, only=None, cases=HOT_PATH):
    rows = []
    for case, script, base_name, base_script in cases:
        if only and not any(case == o[1:] if o.startswith("=") else o in case for o in only.split(";")):
            continue
        case_tps, base_tps = [], []
        for _ in range(rounds):
            base_tps.append(pgbench(base_script, seconds))
            case_tps.append(pgbench(script, seconds))
        c, b = statistics.median(case_tps), statistics.median(base_tps)
        rows.append((case, c, base_name, b, c / b))
        print(f"  {case:40} {c:9.0f} tps   {base_name:30} {b:9.0f} tps   ratio {c / b:5.2f}", flush=True)
    return rows


def two_arms_with_users(c, name, salt, prefix, users):
    """A running two-arm experiment with `users` users (prefix1, prefix2, ...) assigned
    alternately, written directly; returns its id and the two variant ids."""
    exp = c.execute(
        "SELECT ab_create_experiment(jsonb_build_object('name', %s::text, 'experiment_type', 'prompt', "
        "'primary_metric', 'score', 'salt', %s::text, 'variants', jsonb_build_array("
        "jsonb_build_object('name', 'a', 'is_control', true, 'traffic_allocation', 50), "
        "jsonb_build_object('name', 'b', 'traffic_allocation', 50))))", (name, salt)).fetchone()[0]
    c.execute("SELECT ab_start_experiment(%s)", (exp,))
    va, vb = [r[0] for r in c.execute(
        "SELECT id FROM ab_variants WHERE experiment_id = %s ORDER BY position", (exp,)).fetchall()]
    c.execute("INSERT INTO ab_assignments (experiment_id, user_id, variant_id) "
              "SELECT %s, %s || g, CASE WHEN g %% 2 = 0 THEN %s ELSE %s END FROM generate_series(1, %s) g",
              (exp, prefix, va, vb, users))
    return exp, va, vb


def load_analysis_data(users, per_user):
    """An experiment with `users` users and `per_user` results each, written directly."""
    name = f"analysis {users}"
    with psycopg.connect(conninfo(), autocommit=True) as c:
        row = c.execute("SELECT id FROM ab_experiments WHERE name = %s", (name,)).fetchone()
        if row:
            return row[0]
        exp, va, vb = two_arms_with_users(c, name, "analysis", "u", users)
        c.execute("INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                  "SELECT %s, CASE WHEN g %% 2 = 0 THEN %s ELSE %s END, 'u' || g, 'score', "
                  "(g %% 97) / 10.0 + (g %% 2) * 0.05 + k * 0.01 "
                  "FROM generate_series(1, %s) g, generate_series(1, %s) k",
                  (exp, va, vb, users, per_user))
        # Written directly, so the per-user state is computed from them (Citus rebuilds it only
        # for a stopped experiment).
        c.execute("SELECT ab_stop_experiment(%s)", (exp,))
        c.execute("SELECT ab_rebuild_user_metrics(%s)", (exp,))
        c.execute("VACUUM ANALYZE ab_results")
        c.execute("VACUUM ANALYZE ab_user_metrics")
        c.execute("VACUUM ANALYZE ab_assignments")
        return exp


def timed(sql, args, workers, repeat, db=None):
    """Median wall time of a query, and the peak private memory of the backend running it."""
    times, peak = [], 0
    with psycopg.connect(conninfo(db), autocommit=True) as c:
        c.execute(f"SET max_parallel_workers_per_gather = {workers}")
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        stop = threading.Event()

        def sample():
            nonlocal peak
            while not stop.is_set():
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("RssAnon:"):
                                peak = max(peak, int(line.split()[1]))
                except OSError:
                    pass
                time.sleep(0.005)

        t = threading.Thread(target=sample)
        t.start()
        try:
            c.execute(sql, args).fetchall()  # warm the cache
            for _ in range(repeat):
                start = time.perf_counter()
                c.execute(sql, args).fetchall()
                times.append(time.perf_counter() - start)
        finally:
            stop.set()
            t.join()
    return statistics.median(times), peak


BARE = """SELECT variant_id, count(*), avg(v), var_samp(v) FROM (
  SELECT variant_id, user_id, avg(metric_value) AS v FROM ab_results
  WHERE experiment_id = %s AND metric_name = 'score' GROUP BY variant_id, user_id) s
GROUP BY variant_id"""


def analysis(sizes, repeat):
    rows = []
    for users, per_user in sizes:
        exp = load_analysis_data(users, per_user)
        for workers in (0, 2):
            a, a_mem = timed("SELECT * FROM ab_analyze(%s)", (exp,), workers, repeat)
            b, b_mem = timed(BARE, (exp,), workers, repeat)
            label = f"{users * per_user / 1e6:g}M results, {users / 1e3:g}k users, {workers} workers"
            rows.append((label, a, b, a / b, a_mem, b_mem))
            print(f"  {label:40} ab_analyze {a:7.2f} s   bare GROUP BY {b:7.2f} s   ratio {a / b:5.2f}   "
                  f"peak backend memory {a_mem / 1024:6.1f} MiB (bare {b_mem / 1024:6.1f} MiB)", flush=True)
    return rows


BARE_COVARIATES = """SELECT u.variant_id, count(*), avg(u.v), var_samp(u.v), avg(c.value), covar_samp(u.v, c.value) FROM (
  SELECT variant_id, user_id, avg(metric_value) AS v FROM ab_results
  WHERE experiment_id = %s AND metric_name = 'score' GROUP BY variant_id, user_id) u
LEFT JOIN ab_covariates c ON c.experiment_id = %s AND c.metric_name = 'score' AND c.user_id = u.user_id
GROUP BY u.variant_id"""


def covariates(users, repeat):
    """A fresh experiment (never analysed by ANALYZE, so estimated at a handful of rows) whose
    users each have one result and one covariate: ab_analyze must stay linear."""
    name = f"covariates {users}"
    with psycopg.connect(conninfo(), autocommit=True) as c:
        c.execute("SELECT ab_stop_experiment(id) FROM ab_experiments WHERE name = %s AND status = 'running'", (name,))
        c.execute("SELECT ab_delete_experiment(id) FROM ab_experiments WHERE name = %s", (name,))
        exp, va, vb = two_arms_with_users(c, name, "covariates", "c", users)
        c.execute("INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                  "SELECT %s, CASE WHEN g %% 2 = 0 THEN %s ELSE %s END, 'c' || g, 'score', (g %% 97) / 10.0 "
                  "FROM generate_series(1, %s) g", (exp, va, vb, users))
        c.execute("INSERT INTO ab_covariates (experiment_id, user_id, metric_name, value) "
                  "SELECT %s, 'c' || g, 'score', (g %% 89) / 10.0 FROM generate_series(1, %s) g", (exp, users))
        c.execute("SELECT ab_rebuild_user_metrics(%s)", (exp,))
    fresh, _ = timed("SELECT * FROM ab_analyze(%s)", (exp,), 0, 1)
    with psycopg.connect(conninfo(), autocommit=True) as c:
        c.execute("VACUUM ANALYZE ab_results, ab_user_metrics, ab_covariates, ab_assignments")
    analysed, _ = timed("SELECT * FROM ab_analyze(%s)", (exp,), 0, repeat)
    bare, _ = timed(BARE_COVARIATES, (exp, exp), 0, repeat)
    label = f"{users / 1e3:g}k users with covariates"
    print(f"  {label:40} ab_analyze fresh {fresh:6.2f} s, after ANALYZE {analysed:6.2f} s   "
          f"bare join after ANALYZE {bare:6.2f} s", flush=True)
    return [(label, fresh, analysed, bare)]


BARE_SOURCE = """SELECT variant_id, count(*), avg(v), var_samp(v) FROM (
  SELECT a.variant_id, a.user_id, sum(l.amount)::float8 AS v
  FROM ab_assignments a JOIN bench_loans l ON l.borrower_id = a.user_id
  WHERE a.experiment_id = %s AND l.status = 'funded'
    AND l.applied_at >= a.assigned_at AND l.applied_at < a.assigned_at + interval '14 days'
  GROUP BY a.variant_id, a.user_id) s
GROUP BY variant_id"""


def sources(users, per_user, repeat):
    """A metric read from an application table of users * per_user rows (bench_loans: no
    index but its primary key) against the bare join an analyst would write by hand; the
    plan of the extension's read, printed by auto_explain, shows one scan of the table."""
    name = f"source {users}"
    with psycopg.connect(conninfo(), autocommit=True) as c:
        if not c.execute("SELECT 1 FROM ab_experiments WHERE name = %s", (name,)).fetchone():
            c.execute("DROP TABLE IF EXISTS bench_loans")
            c.execute("CREATE TABLE bench_loans (id bigserial PRIMARY KEY, borrower_id text NOT NULL, "
                      "applied_at timestamptz NOT NULL, status text NOT NULL, amount numeric(12, 2) NOT NULL)")
            exp, _, _ = two_arms_with_users(c, name, "source", "s", 1)
            c.execute("DELETE FROM ab_assignments WHERE experiment_id = %s", (exp,))
            c.execute("SELECT ab_stop_experiment(%s)", (exp,))
            c.execute("SELECT ab_delete_experiment(%s)", (exp,))
            exp = c.execute(
                "SELECT ab_create_experiment(jsonb_build_object('name', %s::text, 'experiment_type', 'workflow', "
                "'primary_metric', 'funded_amount', 'salt', 'source', 'metrics', jsonb_build_object('funded_amount', "
                "jsonb_build_object('aggregation', 'sum', 'window', '14 days', 'source', jsonb_build_object("
                "'relation', 'public.bench_loans', 'user_column', 'borrower_id', 'time_column', 'applied_at', "
                "'value_column', 'amount', 'filter', jsonb_build_object('status', 'funded')))), "
                "'variants', jsonb_build_array(jsonb_build_object('name', 'a', 'is_control', true, 'traffic_allocation', 50), "
                "jsonb_build_object('name', 'b', 'traffic_allocation', 50))))", (name,)).fetchone()[0]
            c.execute("SELECT ab_start_experiment(%s)", (exp,))
            va, vb = [r[0] for r in c.execute(
                "SELECT id FROM ab_variants WHERE experiment_id = %s ORDER BY position", (exp,)).fetchall()]
            c.execute("INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at) "
                      "SELECT %s, 's' || g, CASE WHEN g %% 2 = 0 THEN %s ELSE %s END, "
                      "'2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, %s) g",
                      (exp, va, vb, users))
            # Each user's applications: some before enrollment, some within the 14 days, some after.
            c.execute("INSERT INTO bench_loans (borrower_id, applied_at, status, amount) "
                      "SELECT 's' || g, '2026-01-01'::timestamptz + g * interval '1 second' + (k * 6 - 12) * interval '1 day', "
                      "CASE WHEN (g + k) %% 3 = 0 THEN 'funded' ELSE 'declined' END, 100000 + (g %% 1000) * 100 + k "
                      "FROM generate_series(1, %s) g, generate_series(1, %s) k", (users, per_user))
            c.execute("VACUUM ANALYZE bench_loans")
            c.execute("VACUUM ANALYZE ab_assignments")
        exp = c.execute("SELECT id FROM ab_experiments WHERE name = %s", (name,)).fetchone()[0]
        rows = c.execute("SELECT count(*) FROM bench_loans").fetchone()[0]
        # The extension's own read, as auto_explain sees it.
        plans = []
        c.add_notice_handler(lambda d: plans.append(d.message_primary))
        c.execute("LOAD 'auto_explain'")
        c.execute("SET auto_explain.log_min_duration = 0")
        c.execute("SET auto_explain.log_nested_statements = on")
        c.execute("SET auto_explain.log_level = notice")
        c.execute("SELECT * FROM ab_analyze(%s)", (exp,)).fetchall()
        read = [p for p in plans if '"public"."bench_loans" s' in p and "ab_moments" in p]
        scans = sum(p.count("Seq Scan on bench_loans") + p.count("Index Scan using") for p in read)
        print(f"  the extension's read of bench_loans ({len(read)} statement, {scans} scan of the table; "
              "auto_explain, default parallelism):")
        for p in read:
            print("    " + p.replace("\n", "\n    "))
    a, a_mem = timed("SELECT * FROM ab_analyze(%s)", (exp,), 0, repeat)
    b, b_mem = timed(BARE_SOURCE, (exp,), 0, repeat)
    label = f"{rows / 1e6:g}M source rows, {users / 1e6:g}M users"
    print(f"  {label:40} ab_analyze {a:7.2f} s   bare join {b:7.2f} s   ratio {a / b:5.2f}   "
          f"peak backend memory {a_mem / 1024:6.1f} MiB (bare {b_mem / 1024:6.1f} MiB)", flush=True)
    return [(label, a, b, a / b, a_mem, b_mem)]


CITUS_HOT_PATH = [
    # Through the coordinator; the baselines are the same row read or written by a query
    # Citus routes to the worker holding it.
    ("Citus: ab_get_variant, assigned user",
     "\\set u random(1, 100000)\nSELECT ab_get_variant('bench', 'user-' || :u);\n",
     "bare routed lookup",
     "\\set u random(1, 100000)\nSELECT variant_id FROM ab_assignments WHERE experiment_id = 1 AND user_id = 'user-' || :u;\n"),
    ("Citus: ab_record_result",
     "\\set u random(1, 100000)\nSELECT ab_record_result('bench', 'resolution_rate', 1, 'user-' || :u);\n",
     "bare routed INSERT",
     "\\set u random(1, 100000)\nINSERT INTO bare_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
     "VALUES (1, 1, 'user-' || :u, 'resolution_rate', 1);\n"),
    ("Citus: ab_get_variant, new user",
     "\\set u random(1, 2000000000)\nSELECT ab_get_variant('bench', 'new-' || :client_id || '-' || :u);\n",
     "bare routed INSERT ON CONFLICT",
     "\\set u random(1, 2000000000)\nINSERT INTO bare_assignments (experiment_id, user_id, variant_id) "
     "VALUES (1, 'new-' || :client_id || '-' || :u, 1) ON CONFLICT DO NOTHING;\n"),
]


def citus(seconds, rounds, users, per_user, repeat):
    """The hot path through a Citus coordinator, and ab_analyze of the same data on 2 workers
    and on the single-node benchmark cluster, in the same run."""
    global HOST, PORT, DB
    single = (HOST, PORT, DB)
    HOST, PORT, DB = CITUS_HOST, CITUS_PORT, "postgres"
    with psycopg.connect(conninfo(), autocommit=True) as c:
        if not c.execute("SELECT 1 FROM ab_experiments WHERE name = 'bench'").fetchone():
            psql_file(os.path.join(HERE, "citus_setup.sql"))
    print("Citus hot path, through the coordinator (pgbench -M prepared -c 2 -j 2):")
    hot = hot_path(seconds, rounds, cases=CITUS_HOT_PATH)
    exp_citus = load_analysis_data(users, per_user)
    t_citus, _ = timed("SELECT * FROM ab_analyze(%s)", (exp_citus,), 0, repeat)
    t_bare, _ = timed(BARE, (exp_citus,), 0, repeat)
    HOST, PORT, DB = single
    exp_single = load_analysis_data(users, per_user)
    t_single, _ = timed("SELECT * FROM ab_analyze(%s)", (exp_single,), 0, repeat)
    t_single_par, _ = timed("SELECT * FROM ab_analyze(%s)", (exp_single,), 2, repeat)
    label = f"{users * per_user / 1e6:g}M results, {users / 1e3:g}k users"
    print(f"  ab_analyze {label}: Citus, 2 workers {t_citus:.2f} s (bare distributed GROUP BY {t_bare:.2f} s, "
          f"ratio {t_citus / t_bare:.2f}); one node {t_single:.2f} s (2 parallel workers {t_single_par:.2f} s)", flush=True)
    return hot, [(label, t_citus, t_bare, t_single, t_single_par)]


def citus_bulk(rows, rounds):
    """bulk() through the Citus coordinator, against the bare distributed INSERT ... SELECT into
    bare_results (distributed by user, co-located with ab_results); ab_record_result per row on
    a hundredth of the rows, scaled up."""
    global HOST, PORT, DB
    HOST, PORT, DB = CITUS_HOST, CITUS_PORT, "postgres"
    with psycopg.connect(conninfo(), autocommit=True) as c:
        if not c.execute("SELECT 1 FROM ab_experiments WHERE name = 'bench'").fetchone():
            psql_file(os.path.join(HERE, "citus_setup.sql"))
    print(f"bulk recording through the Citus coordinator ({rows} rows, {rounds} rounds):")
    bare, ours, single = bulk(rows, rounds, 100)
    print("\n| round | bare distributed INSERT ... SELECT | ab_record_results | ratio | ab_record_result per row | ratio |"
          "\n| ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, (b, o, s1) in enumerate(zip(bare, ours, single), 1):
        print(f"| {i} | {b:.2f} s | {o:.2f} s | {b / o:.2f} | {s1:.2f} s | {b / s1:.2f} |")


def bulk(rows, rounds, per_row_share=10):
    """Recording `rows` results of 100k assigned users from an application table: in one
    ab_record_results call, and as the bare INSERT ... SELECT of the same rows into a table of
    ab_results' shape (same run, committed; both tables are emptied by DELETE and vacuumed between
    runs, so that their indexes are alike).
    ab_record_result, one call per row, runs on rows / per_row_share of them."""
    with psycopg.connect(conninfo(), autocommit=True) as c:
        if not c.execute("SELECT 1 FROM ab_experiments WHERE name = 'bench bulk'").fetchone():
            c.execute("""SELECT ab_create_experiment('{"name": "bench bulk", "experiment_type": "prompt",
                "primary_metric": "resolution_rate", "salt": "bench bulk", "variants": [
                {"name": "Control", "is_control": true, "traffic_allocation": 50},
                {"name": "Treatment", "traffic_allocation": 50}]}')""")
            c.execute("SELECT ab_start_experiment('bench bulk')")
            if HOST == CITUS_HOST:
                # What ab_get_variant would store, in one distributed INSERT (through the
                # coordinator, one call per user would each be a routed round trip).
                c.execute("INSERT INTO ab_assignments (experiment_id, user_id, variant_id) "
                          "SELECT e.id, 'user-' || g, (SELECT v.id FROM ab_variants v WHERE v.experiment_id = e.id "
                          "ORDER BY v.position LIMIT 1 OFFSET (g % 2)) "
                          "FROM ab_experiments e, generate_series(1, 100000) g WHERE e.name = 'bench bulk'")
            else:
                c.execute("SELECT count(ab_get_variant('bench bulk', 'user-' || g)) FROM generate_series(1, 100000) g")
        exp = c.execute("SELECT id FROM ab_experiments WHERE name = 'bench bulk'").fetchone()[0]
        c.execute("DROP TABLE IF EXISTS bulk_events")
        c.execute("CREATE TABLE bulk_events (user_id text, metric text, value float8)")
        c.execute("INSERT INTO bulk_events SELECT 'user-' || (g %% 100000 + 1), "
                  "CASE WHEN g %% 3 = 0 THEN 'tokens' ELSE 'resolution_rate' END, g %% 2 FROM generate_series(1, %s) g",
                  (rows,))
        c.execute("VACUUM ANALYZE bulk_events")

        def clean():
            c.execute("DELETE FROM bare_results")
            c.execute("DELETE FROM ab_results WHERE experiment_id = %s", (exp,))
            c.execute("DELETE FROM ab_user_metrics WHERE experiment_id = %s", (exp,))
            c.execute("VACUUM ANALYZE ab_results, ab_user_metrics, bare_results")

        def run(sql, args=()):
            c.execute("CHECKPOINT")
            start = time.perf_counter()
            c.execute(sql, args)
            return time.perf_counter() - start

        def bare_run():
            return run("INSERT INTO bare_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                       "SELECT %s, 1, user_id, metric, value FROM bulk_events", (exp,))

        def ours_run():
            t = run("SELECT ab_record_results('bench bulk', array_agg(metric), array_agg(value), array_agg(user_id)) "
                    "FROM bulk_events")
            got = c.execute("SELECT count(*) FROM ab_results WHERE experiment_id = %s", (exp,)).fetchone()[0]
            if got != rows:
                sys.exit(f"ab_record_results recorded {got} rows of {rows}")
            return t

        bare, ours, single = [], [], []
        for r in range(rounds):
            clean()
            # Alternate which goes first, so that neither always pays for the other's WAL.
            if r % 2 == 0:
                bare.append(bare_run())
                ours.append(ours_run())
            else:
                ours.append(ours_run())
                bare.append(bare_run())
            clean()
            if per_row_share:
                single.append(run("SELECT count(*) FILTER (WHERE ab_record_result('bench bulk', metric, value, user_id)) "
                                  "FROM (SELECT * FROM bulk_events LIMIT %s) e", (rows // per_row_share,)) * per_row_share)
            else:
                single.append(float("nan"))
            print(f"  round: bare {bare[-1]:.2f} s, ab_record_results {ours[-1]:.2f} s "
                  f"(ratio {bare[-1] / ours[-1]:.2f}), ab_record_result per row {single[-1]:.2f} s scaled "
                  f"(ratio {bare[-1] / single[-1]:.2f})", flush=True)
        clean()
        c.execute("DROP TABLE bulk_events")
    return bare, ours, single
# Recording at pool scale: ab_record_result against the bare INSERT of the same row and against
# the same insert and per-user state upsert written by hand in one statement, at 16 and 64
# clients, in one database per schema version (the library is the same: "before" is a schema
# still at the older version), rounds alternating; and the WAL each call writes, per component.
POOL_RECORD = "\\set u random(1, {users})\nSELECT ab_record_result('bench', 'resolution_rate', 1, 'user-' || :u);\n"
POOL_BARE = ("\\set u random(1, {users})\nINSERT INTO bare_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
             "VALUES (1, 1, 'user-' || :u, 'resolution_rate', 1);\n")
UPSERT_STATE = ("INSERT INTO bare_user_metrics AS m (experiment_id, metric_name, user_id, variant_id, n, total, max) "
                "SELECT {source} ON CONFLICT (experiment_id, metric_name, user_id, variant_id) DO UPDATE "
                "SET n = m.n + 1, total = m.total + excluded.total, max = greatest(m.max, excluded.max)")
# What an application would write by hand: ab_record_result's own statement, on tables of the
# same shape (the same indexes and storage parameters).
POOL_HAND = ("\\set u random(1, {users})\nWITH r AS (INSERT INTO bare_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
             "SELECT a.experiment_id, a.variant_id, a.user_id, 'resolution_rate', 1 FROM ab_assignments a "
             "WHERE a.experiment_id = 1 AND a.user_id = 'user-' || :u RETURNING variant_id) "
             + UPSERT_STATE.format(source="1, 'resolution_rate', 'user-' || :u, r.variant_id, 1, 1, 1 FROM r") + ";\n")
POOL_STATE = ("\\set u random(1, {users})\n"
              + UPSERT_STATE.format(source="a.experiment_id, 'resolution_rate', a.user_id, a.variant_id, 1, 1, 1 "
                                           "FROM ab_assignments a WHERE a.experiment_id = 1 AND a.user_id = 'user-' || :u")
              + ";\n")


def pool_db(version):
    return "ab_pool_" + version.replace(".", "_")


def prepare_pool(version, users):
    """A database whose schema is at `version`, with one running experiment, `users` assigned
    users each with one result (so that every later result updates the user's state), and the
    bare tables: bare_results and bare_user_metrics (the same indexes and storage parameters
    as ab_results and ab_user_metrics), and one copy of ab_results per index of it (wal_heap
    with none, wal_<index> with that one) to measure each index's WAL."""
    db = pool_db(version)
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
            return db
        c.execute(f"CREATE DATABASE {db}")
    with psycopg.connect(conninfo(db), autocommit=True) as c:
        c.execute(pgsql.SQL("CREATE EXTENSION ab_testing VERSION {}").format(pgsql.Literal(version)))
        c.execute("""SELECT ab_create_experiment('{"name": "bench", "experiment_type": "prompt",
          "primary_metric": "resolution_rate", "salt": "bench", "variants": [
          {"name": "Control", "is_control": true, "traffic_allocation": 50},
          {"name": "Treatment", "traffic_allocation": 50}]}')""")
        c.execute("SELECT ab_start_experiment('bench')")
        c.execute("SELECT count(ab_get_variant('bench', 'user-' || g)) FROM generate_series(1, %s) g", (users,))
        c.execute("SELECT count(ab_record_result('bench', 'resolution_rate', 1, 'user-' || g)) "
                  "FROM generate_series(1, %s) g", (users,))
        options = c.execute("SELECT coalesce(pg_catalog.array_to_string(reloptions, ', '), '') FROM pg_class "
                            "WHERE oid = 'ab_user_metrics'::regclass").fetchone()[0]
        c.execute("CREATE TABLE bare_results (LIKE ab_results INCLUDING ALL)")
        c.execute("CREATE TABLE bare_user_metrics (LIKE ab_user_metrics INCLUDING ALL)"
                  + (f" WITH ({options})" if options else ""))
        c.execute("INSERT INTO bare_results SELECT * FROM ab_results")
        c.execute("INSERT INTO bare_user_metrics SELECT * FROM ab_user_metrics")
        c.execute("CREATE TABLE wal_heap (LIKE ab_results INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        for name, definition in c.execute(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'ab_results'::regclass ORDER BY 1").fetchall():
            c.execute(f"CREATE TABLE wal_{name} (LIKE ab_results INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            c.execute(definition.replace(f"INDEX {name} ON public.ab_results", f"INDEX ON wal_{name}"))
            c.execute(f"INSERT INTO wal_{name} SELECT * FROM ab_results")
        c.execute("INSERT INTO wal_heap SELECT * FROM ab_results")
        c.execute("VACUUM ANALYZE")
    return db


def wal_stats(c):
    return c.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()


def wal_per_call(db, script, calls):
    """WAL per call of `script` (2 clients): (bytes, records) without full-page images
    (full_page_writes off for that run: what every call writes), then (full-page images,
    bytes) with them, in the first `calls` calls after a CHECKPOINT (what the first change of
    each page after a checkpoint adds). The whole cluster's WAL: run nothing else on it."""
    with psycopg.connect(conninfo(db), autocommit=True) as c:
        try:
            c.execute("ALTER SYSTEM SET full_page_writes = off")
            c.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)
            s0 = wal_stats(c)
            pgbench(script, 0, clients=2, db=db, transactions=calls // 2)
            s1 = wal_stats(c)
        finally:
            c.execute("ALTER SYSTEM RESET full_page_writes")
            c.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)
        assert c.execute("SHOW full_page_writes").fetchone()[0] == "on"
        c.execute("CHECKPOINT")
        s2 = wal_stats(c)
        pgbench(script, 0, clients=2, db=db, transactions=calls // 2)
        s3 = wal_stats(c)
    return ((s1[2] - s0[2]) / calls, (s1[0] - s0[0]) / calls, (s3[1] - s2[1]) / calls, (s3[2] - s2[2]) / calls)


def hot_updates(db):
    with psycopg.connect(conninfo(db), autocommit=True) as c:
        return c.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'ab_user_metrics'").fetchone()


def use_library(path):
    """Installs the library file `path` as ab_testing.so (an atomic rename: backends that
    have the old one loaded keep it; every new connection loads this one)."""
    if not path:
        return
    libdir = subprocess.run(["pg_config", "--pkglibdir"], check=True, capture_output=True, text=True).stdout.strip()
    target = os.path.join(libdir, "ab_testing.so")
    shutil.copyfile(path, target + ".bench")
    os.chmod(target + ".bench", 0o755)
    os.replace(target + ".bench", target)


def pool(versions, users, clients, seconds, rounds, calls, libraries):
    """`libraries`: version -> a library file to install before that version's runs (to
    compare two builds), or empty (the installed library for all)."""
    if libraries:
        libdir = subprocess.run(["pg_config", "--pkglibdir"], check=True, capture_output=True, text=True).stdout.strip()
        installed = f"/tmp/ab_bench_installed_{os.getpid()}.so"
        shutil.copyfile(os.path.join(libdir, "ab_testing.so"), installed)
        try:
            return pool_runs(versions, users, clients, seconds, rounds, calls, libraries)
        finally:
            use_library(installed)
            os.unlink(installed)
    return pool_runs(versions, users, clients, seconds, rounds, calls, {})


def pool_runs(versions, users, clients, seconds, rounds, calls, libraries):
    dbs = []
    for v in versions:
        use_library(libraries.get(v))
        dbs.append((v, prepare_pool(v, users)))
    print(f"recording at pool scale: {users} assigned users, each with a result already "
          f"(schemas {', '.join(versions)}, one database each; libraries: "
          f"{', '.join(f'{v}: {p}' for v, p in libraries.items()) or 'the installed one'})", flush=True)
    wal = []
    for version, db in (dbs if calls else []):
        use_library(libraries.get(version))
        with psycopg.connect(conninfo(db), autocommit=True) as c:
            indexes = [r[0] for r in c.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'ab_results'::regclass ORDER BY 1").fetchall()]
            fillfactor = c.execute("SELECT coalesce((SELECT o FROM pg_class, unnest(reloptions) o WHERE oid = "
                                   "'ab_user_metrics'::regclass AND o LIKE 'fillfactor=%'), 'fillfactor=100')").fetchone()[0]
        row = "\\set u random(1, {users})\nINSERT INTO {t} (experiment_id, variant_id, user_id, metric_name, metric_value) VALUES (1, 1, 'user-' || :u, 'resolution_rate', 1);\n"
        cases = [("result row alone (heap, no index)", row.format(t="wal_heap", users="{users}"))]
        cases += [(f"result row + {i} only", row.format(t=f"wal_{i}", users="{users}")) for i in indexes]
        cases += [("bare INSERT (result row + every index of ab_results)", row.format(t="bare_results", users="{users}")),
                  (f"state upsert alone (ab_user_metrics, {fillfactor})", POOL_STATE),
                  ("insert + state upsert, one statement by hand", POOL_HAND),
                  ("ab_record_result", POOL_RECORD)]
        for case, script in cases:
            before = hot_updates(db) if case == "ab_record_result" else None
            b, r, f, fb = wal_per_call(db, script.format(users=users), calls)
            note = ""
            if before:
                after = hot_updates(db)
                upd = after[0] - before[0]
                note = f"   HOT updates of the state {100 * (after[1] - before[1]) / max(upd, 1):.0f}%"
            wal.append((version, case, b, r, f, fb))
            print(f"  {version} {case:58} {b:6.0f} B/call {r:5.2f} records; after a checkpoint "
                  f"{f:5.3f} full-page images, {fb:6.0f} B/call{note}", flush=True)
    print(f"throughput (pgbench -M prepared -j 2, {seconds} s runs, {rounds} rounds, databases alternating):", flush=True)
    runs = {}
    cases = [("bare INSERT", POOL_BARE), ("insert + state upsert by hand", POOL_HAND), ("ab_record_result", POOL_RECORD)]
    for n in clients:
        for k in range(rounds):
            for version, db in (dbs if k % 2 == 0 else dbs[::-1]):
                use_library(libraries.get(version))
                for case, script in cases:
                    tps = pgbench(script.format(users=users), seconds, clients=n, threads=2, db=db)
                    runs.setdefault((n, version, case), []).append(tps)
                rec, bare, hand = (runs[(n, version, c)][-1] for c in ("ab_record_result", "bare INSERT", "insert + state upsert by hand"))
                print(f"  {n:3} clients, round {k + 1}, {version}: ab_record_result {rec:7.0f}  bare INSERT {bare:7.0f}  "
                      f"by hand {hand:7.0f}   ratios {rec / bare:4.2f} / {rec / hand:4.2f}", flush=True)
    print("\n| schema | WAL per call | bytes | records | right after a checkpoint: full-page images | bytes |\n"
          "| --- | --- | ---: | ---: | ---: | ---: |")
    for version, case, b, r, f, fb in wal:
        print(f"| {version} | {case} | {b:.0f} | {r:.2f} | {f:.3f} | {fb:.0f} |")
    print("\n| clients | schema | ab_record_result | bare INSERT | by hand | vs bare (median of rounds; each round) | vs by hand (median; each) |\n"
          "| ---: | --- | ---: | ---: | ---: | --- | --- |")
    for n in clients:
        for version, _ in dbs:
            rec, bare, hand = (runs[(n, version, c)] for c in ("ab_record_result", "bare INSERT", "insert + state upsert by hand"))
            vb = [a / b for a, b in zip(rec, bare)]
            vh = [a / b for a, b in zip(rec, hand)]
            print(f"| {n} | {version} | {statistics.median(rec):.0f} | {statistics.median(bare):.0f} | {statistics.median(hand):.0f} | "
                  f"{statistics.median(vb):.2f} ({', '.join(f'{x:.2f}' for x in vb)}) | "
                  f"{statistics.median(vh):.2f} ({', '.join(f'{x:.2f}' for x in vh)}) |")


def pg_version():
    with psycopg.connect(conninfo()) as c:
        return c.execute("SHOW server_version").fetchone()[0]


BARE_ADJUSTED = """SELECT a.variant_id, count(*), avg(u.total), var_pop(u.total),
       avg(c1.value), avg(c2.value), avg(c3.value), avg(c4.value),
       avg((a.attributes->>'segment' = 'b')::int), avg((a.attributes->>'segment' = 'c')::int),
       covar_pop(u.total, c1.value), covar_pop(u.total, c2.value), covar_pop(u.total, c3.value), covar_pop(u.total, c4.value),
       covar_pop(c1.value, c2.value), covar_pop(c1.value, c3.value), covar_pop(c1.value, c4.value),
       covar_pop(c2.value, c3.value), covar_pop(c2.value, c4.value), covar_pop(c3.value, c4.value),
       var_pop(c1.value), var_pop(c2.value), var_pop(c3.value), var_pop(c4.value)
FROM ab_assignments a
JOIN ab_user_metrics u ON u.experiment_id = a.experiment_id AND u.metric_name = 'score' AND u.user_id = a.user_id
LEFT JOIN ab_covariates c1 ON c1.experiment_id = a.experiment_id AND c1.metric_name = 'score' AND c1.user_id = a.user_id
LEFT JOIN ab_covariates c2 ON c2.experiment_id = a.experiment_id AND c2.metric_name = 'visits' AND c2.user_id = a.user_id
LEFT JOIN ab_covariates c3 ON c3.experiment_id = a.experiment_id AND c3.metric_name = 'calls' AND c3.user_id = a.user_id
LEFT JOIN ab_covariates c4 ON c4.experiment_id = a.experiment_id AND c4.metric_name = 'tenure' AND c4.user_id = a.user_id
WHERE a.experiment_id = %s
GROUP BY a.variant_id"""

BARE_CLUSTERS = """SELECT variant_id, count(*), avg(total), var_samp(total), avg(n), var_samp(n), covar_samp(total, n)
FROM (SELECT a.variant_id, a.attributes->>'branch' AS branch, sum(u.total) AS total, count(*) AS n
      FROM ab_assignments a
      JOIN ab_user_metrics u ON u.experiment_id = a.experiment_id AND u.metric_name = 'score' AND u.user_id = a.user_id
      WHERE a.experiment_id = %s GROUP BY 1, 2) c
GROUP BY variant_id"""


def adjusted(users, clusters, repeat):
    """ab_adjusted on `users` users: five covariates (four recorded pre-period values and a
    three-valued stratum), and a cluster-randomized experiment of `clusters` branches; each
    against the bare aggregate an analyst would write (the first pass's sums; the clusters'
    totals), timed in the same run, without parallel workers."""
    out = []
    with psycopg.connect(conninfo(), autocommit=True) as c:
        # Kept from an earlier run of the same size.
        kept = c.execute("SELECT array_agg(e.id ORDER BY e.name) FROM ab_experiments e WHERE e.name IN "
                         "('adjusted bench', 'clusters bench') AND (SELECT count(*) FROM ab_assignments a "
                         "WHERE a.experiment_id = e.id) = %s", (users,)).fetchone()[0]
    if kept and len(kept) == 2:
        exp, cexp = kept
    else:
        exp, cexp = load_adjusted(users, clusters)
    for label, sql, bare, e in [
        (f"{users / 1e6:g}M users, five covariates", "SELECT * FROM ab_adjusted(%s)", BARE_ADJUSTED, exp),
        (f"{users / 1e6:g}M users in {clusters / 1e3:g}k clusters", "SELECT * FROM ab_adjusted(%s)", BARE_CLUSTERS, cexp),
        (f"{users / 1e6:g}M users in {clusters / 1e3:g}k clusters, ab_analyze", "SELECT * FROM ab_analyze(%s)",
         BARE_CLUSTERS, cexp),
    ]:
        a, a_mem = timed(sql, (e,), 0, repeat)
        b, b_mem = timed(bare, (e,), 0, repeat)
        print(f"  {label:40} {sql.split()[3].split('(')[0]} {a:6.2f} s   bare aggregate {b:6.2f} s   ratio {a / b:5.2f}   "
              f"peak backend memory {a_mem / 1024:6.1f} MiB (bare {b_mem / 1024:6.1f} MiB)", flush=True)
        out.append((label, a, b, a / b, a_mem, b_mem))
    return out


def load_adjusted(users, clusters):
    """The two experiments of `adjusted`, written directly; returns their ids."""
    with psycopg.connect(conninfo(), autocommit=True) as c:
        for name in ("adjusted bench", "clusters bench"):
            c.execute("SELECT ab_stop_experiment(id) FROM ab_experiments WHERE name = %s AND status = 'running'", (name,))
            c.execute("SELECT ab_delete_experiment(id) FROM ab_experiments WHERE name = %s", (name,))
        metrics = {"score": {"aggregation": "sum",
                             "covariates": ["score", "visits", "calls", "tenure", {"attribute": "segment"}]},
                   "visits": {}, "calls": {}, "tenure": {}}
        exp = c.execute("SELECT ab_create_experiment(%s)", (Jsonb({
            "name": "adjusted bench", "experiment_type": "prompt", "primary_metric": "score", "salt": "adjusted",
            "breakdowns": ["segment"], "metrics": metrics,
            "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50},
                         {"name": "b", "traffic_allocation": 50}]}),)).fetchone()[0]
        c.execute("SELECT ab_start_experiment(%s)", (exp,))
        va, vb = [r[0] for r in c.execute(
            "SELECT id FROM ab_variants WHERE experiment_id = %s ORDER BY position", (exp,)).fetchall()]
        c.execute("INSERT INTO ab_assignments (experiment_id, user_id, variant_id, attributes) "
                  "SELECT %s, 'r' || g, CASE WHEN g %% 2 = 0 THEN %s ELSE %s END, "
                  "jsonb_build_object('segment', (ARRAY['a', 'b', 'c'])[1 + g %% 3]) FROM generate_series(1, %s) g",
                  (exp, va, vb, users))
        c.execute("INSERT INTO ab_covariates (experiment_id, user_id, metric_name, value) "
                  "SELECT %s, 'r' || g, m, (g * k %% 101) / 10.0 FROM generate_series(1, %s) g, "
                  "(VALUES ('score', 7), ('visits', 11), ('calls', 13), ('tenure', 17)) v(m, k)", (exp, users))
        c.execute("INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                  "SELECT %s, CASE WHEN g %% 2 = 0 THEN %s ELSE %s END, 'r' || g, 'score', "
                  "(g * 7 %% 101) / 10.0 + (g * 11 %% 101) / 20.0 + g %% 3 + (g * 31 %% 53) / 10.0 "
                  "FROM generate_series(1, %s) g", (exp, va, vb, users))
        c.execute("SELECT ab_stop_experiment(%s)", (exp,))
        c.execute("SELECT ab_rebuild_user_metrics(%s)", (exp,))
        cexp = c.execute("SELECT ab_create_experiment(%s)", (Jsonb({
            "name": "clusters bench", "experiment_type": "agent_config", "primary_metric": "score", "salt": "clusters",
            "breakdowns": ["branch"], "randomization_unit": "branch", "metrics": {"score": {"aggregation": "sum"}},
            "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50},
                         {"name": "b", "traffic_allocation": 50}]}),)).fetchone()[0]
        c.execute("SELECT ab_start_experiment(%s)", (cexp,))
        ca, cb = [r[0] for r in c.execute(
            "SELECT id FROM ab_variants WHERE experiment_id = %s ORDER BY position", (cexp,)).fetchall()]
        # Written directly: the branch decides the variant, as ab_get_variant would.
        c.execute("INSERT INTO ab_assignments (experiment_id, user_id, variant_id, attributes) "
                  "SELECT %s, 'k' || g, CASE WHEN (g %% %s) %% 2 = 0 THEN %s ELSE %s END, "
                  "jsonb_build_object('branch', 'br' || g %% %s) FROM generate_series(1, %s) g",
                  (cexp, clusters, ca, cb, clusters, users))
        c.execute("INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                  "SELECT a.experiment_id, a.variant_id, a.user_id, 'score', (length(a.user_id) * 7 %% 13) / 3.0 "
                  "FROM ab_assignments a WHERE a.experiment_id = %s", (cexp,))
        c.execute("SELECT ab_stop_experiment(%s)", (cexp,))
        c.execute("SELECT ab_rebuild_user_metrics(%s)", (cexp,))
        c.execute("VACUUM ANALYZE ab_results, ab_user_metrics, ab_covariates, ab_assignments")
    return exp, cexp


def load_interactions(db, users, overlapping):
    """Database `db`: "focus", a running experiment of `users` users with two metrics (one
    result each per user, written directly); `overlapping` running experiments of the same
    users and metrics; "bystander", a running experiment of `users` other users. Kept when
    present."""
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
            return
        c.execute(f"CREATE DATABASE {db}")
    with psycopg.connect(conninfo(db), autocommit=True) as c:
        c.execute("CREATE EXTENSION ab_testing")

        def create(name, prefix):
            exp = c.execute("SELECT ab_create_experiment(%s)", (Jsonb({
                "name": name, "experiment_type": "ui", "primary_metric": "score", "salt": name,
                "metrics": {"score": {}, "clicks": {"aggregation": "count"}},
                "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50},
                             {"name": "b", "traffic_allocation": 50}]}),)).fetchone()[0]
            c.execute("SELECT ab_start_experiment(%s)", (exp,))
            va, vb = [r[0] for r in c.execute(
                "SELECT id FROM ab_variants WHERE experiment_id = %s ORDER BY position", (exp,)).fetchall()]
            # Arms from a hash of the user and the experiment, as ab_get_variant would.
            c.execute("INSERT INTO ab_assignments (experiment_id, user_id, variant_id) "
                      "SELECT %s, %s || g, CASE WHEN hashtext(%s || g) %% 2 = 0 THEN %s ELSE %s END "
                      "FROM generate_series(1, %s) g", (exp, prefix, name, va, vb, users))
            return exp

        focus = create("focus", "u")
        for k in range(overlapping):
            create(f"overlapping {k}", "u")
        create("bystander", "x")
        c.execute("INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                  "SELECT a.experiment_id, a.variant_id, a.user_id, m, (hashtext(a.user_id || m) & 1023) / 100.0 "
                  "FROM ab_assignments a, (VALUES ('score'), ('clicks')) v(m) WHERE a.experiment_id = %s", (focus,))
        c.execute("SELECT ab_rebuild_user_metrics(%s)", (focus,))
        c.execute("VACUUM ANALYZE ab_results, ab_user_metrics, ab_assignments")


def interactions(users, rounds, repeat, libraries, gateway):
    """ab_summary of an experiment of `users` users sharing them with 0, 1 and 5 others (a
    fourth case: 0 others and no bystander either), the library without the interaction part
    and with it installed in turn, round after round (the machine is shared: same-run ratios
    of medians); with `gateway` (an ab-gateway binary) the results list page too, which runs
    ab_summary for every running experiment."""
    cases = [("0 overlapping, no other experiment", "ab_bench_ix_alone", 0),
             ("0 overlapping, 1 bystander", "ab_bench_ix0", 0),
             ("1 overlapping, 1 bystander", "ab_bench_ix1", 1),
             ("5 overlapping, 1 bystander", "ab_bench_ix5", 5)]
    for _, db, k in cases:
        load_interactions(db, users, k)
        if db.endswith("alone"):
            with psycopg.connect(conninfo(db), autocommit=True) as c:
                c.execute("SELECT ab_stop_experiment(id), ab_delete_experiment(id) FROM ab_experiments WHERE name = 'bystander'")
    times = {(label, lib, what): [] for label, _, _ in cases for lib in libraries for what in ("summary", "list")}
    token = None
    if gateway:
        token = os.urandom(16).hex()
        tokens = os.path.join("/tmp", f"ab_bench_tokens_{os.getpid()}")
        with open(os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(f"ab_bench_gw_analyst {token}\n")
        # The gateway logs in as a NOINHERIT role and switches to the token's analyst role.
        with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
            for role, opts in (("ab_bench_gw_login", "LOGIN NOINHERIT"), ("ab_bench_gw_analyst", "NOLOGIN")):
                if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    c.execute(f"CREATE ROLE {role} {opts}")
            c.execute("GRANT ab_bench_gw_analyst TO ab_bench_gw_login")
        for _, db, _ in cases:
            with psycopg.connect(conninfo(db), autocommit=True) as c:
                c.execute("SELECT ab_grant_analyst('ab_bench_gw_analyst')")
    for r in range(rounds):
        for lib, path in libraries.items():
            use_library(path)
            for label, db, _ in cases:
                with psycopg.connect(conninfo(db)) as c:
                    exp = c.execute("SELECT id FROM ab_experiments WHERE name = 'focus'").fetchone()[0]
                t, _ = timed("SELECT ab_summary(%s::bigint)", (exp,), 0, repeat, db)
                times[(label, lib, "summary")].append(t)
                if gateway:
                    times[(label, lib, "list")].append(list_page(gateway, db, tokens, token, repeat))
                print(f"  round {r + 1} {lib:8} {label:36} ab_summary {t * 1000:7.1f} ms"
                      + (f"   list page {times[(label, lib, 'list')][-1] * 1000:7.1f} ms" if gateway else ""), flush=True)
    print("\n| case | what | " + " | ".join(libraries) + " | ratio |\n| --- | --- |" + " ---: |" * (len(libraries) + 1))
    for label, _, _ in cases:
        for what in ("summary", "list") if gateway else ("summary",):
            med = [statistics.median(times[(label, lib, what)]) for lib in libraries]
            print(f"| {label} | {what} | " + " | ".join(f"{m * 1000:.1f} ms" for m in med) + f" | {med[-1] / med[0]:.2f} |")


def list_page(binary, db, tokens, token, repeat):
    """Median time of GET / (the results list) through ab-gateway on `db`."""
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "AB_GATEWAY_DATABASE_URL": conninfo(db).replace("user=postgres", "user=ab_bench_gw_login"), "AB_GATEWAY_LISTEN": f"127.0.0.1:{port}",
           "AB_GATEWAY_POOL_SIZE": "1", "AB_GATEWAY_TOKENS_FILE": tokens}
    proc = subprocess.Popen([binary], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        request = urllib.request.Request(base + "/", headers={"Authorization": f"Bearer {token}"})
        urllib.request.urlopen(request, timeout=120).read()  # warm
        out = []
        for _ in range(repeat):
            start = time.perf_counter()
            body = urllib.request.urlopen(request, timeout=120).read()
            out.append(time.perf_counter() - start)
            assert b"focus" in body
        return statistics.median(out)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10, help="pgbench duration per run")
    ap.add_argument("--rounds", type=int, default=1, help="runs per case (median)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per analysis query (median)")
    ap.add_argument("--skip-analysis", action="store_true")
    ap.add_argument("--skip-hot-path", action="store_true")
    ap.add_argument("--only", help="run only the hot-path cases whose name contains this (or one of these, separated by ;); =NAME matches the whole name")
    ap.add_argument("--sizes", default="200000x5,2000000x5", help="users x results per user, comma separated")
    ap.add_argument("--covariate-users", type=int, default=200000,
                    help="users of the fresh experiment with covariates (0 to skip)")
    ap.add_argument("--sources", help="users x rows per user of a metric read from an application table (skipped unless given)")
    ap.add_argument("--bulk", type=int, help="rows of the bulk-recording case (skipped unless given)")
    ap.add_argument("--adjusted", help="users x clusters of the regression-adjustment cases (skipped unless given)")
    ap.add_argument("--bulk-per-row-share", type=int, default=10,
                    help="ab_record_result per row runs on rows / this of them, scaled up (0: skipped)")
    ap.add_argument("--citus", action="store_true",
                    help="benchmark through the Citus coordinator of scripts/citus-cluster.sh instead")
    ap.add_argument("--citus-size", default="2000000x5", help="users x results per user of the --citus analysis")
    ap.add_argument("--pool", action="store_true",
                    help="only recording at pool scale: WAL per call by component, and throughput at --pool-clients")
    ap.add_argument("--pool-versions", help="schema versions compared, comma separated (default: 0.12.0 and the installed default)")
    ap.add_argument("--pool-users", type=int, default=200000)
    ap.add_argument("--pool-clients", default="16,64")
    ap.add_argument("--wal-calls", type=int, default=20000, help="calls per WAL measurement (0: no WAL measurement)")
    ap.add_argument("--pool-libraries", help="VERSION=FILE,...: install that library build before each of that schema's runs "
                    "(to compare two builds; the installed library is put back at the end)")
    ap.add_argument("--interactions", type=int, help="users of the ab_summary interaction cases (only those run)")
    ap.add_argument("--interactions-libraries", default="installed=",
                    help="NAME=FILE,...: the library builds compared, installed in turn each round (the first is the baseline)")
    ap.add_argument("--gateway", help="an ab-gateway binary: time the results list page in the interaction cases too")
    args = ap.parse_args()
    if args.interactions:
        libraries = dict(x.split("=", 1) for x in args.interactions_libraries.split(","))
        interactions(args.interactions, args.rounds, args.repeat, libraries, args.gateway)
        return
    if args.pool:
        versions = args.pool_versions.split(",") if args.pool_versions else None
        if not versions:
            with psycopg.connect(conninfo("postgres")) as c:
                current = c.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'ab_testing'").fetchone()[0]
            versions = ["0.12.0", current]
        libraries = dict(x.split("=", 1) for x in args.pool_libraries.split(",")) if args.pool_libraries else {}
        pool(versions, args.pool_users, [int(x) for x in args.pool_clients.split(",")], args.seconds, args.rounds,
             args.wal_calls, libraries)
        return
    prepare_single_node()
    if args.citus and args.bulk:
        citus_bulk(args.bulk, args.rounds)
        return
    if args.citus:
        users, per_user = (int(x) for x in args.citus_size.split("x"))
        hot, ana = citus(args.seconds, args.rounds, users, per_user, args.repeat)
        print("\n| case | tps | baseline | baseline tps | ratio |\n| --- | ---: | --- | ---: | ---: |")
        for case, c, base, b, r in hot:
            print(f"| {case} | {c:.0f} | {base} | {b:.0f} | {r:.2f} |")
        print("\n| ab_analyze | Citus, 2 workers | bare distributed GROUP BY | ratio | one node | one node, 2 parallel workers |"
              "\n| --- | ---: | ---: | ---: | ---: | ---: |")
        for label, tc, tb, ts, tp in ana:
            print(f"| {label} | {tc:.2f} s | {tb:.2f} s | {tc / tb:.2f} | {ts:.2f} s | {tp:.2f} s |")
        return
    print(f"machine: {os.cpu_count()} cores, {subprocess.run(['uname', '-sr'], capture_output=True, text=True).stdout.strip()}, "
          f"PostgreSQL {pg_version()}")
    hot = [] if args.skip_hot_path else (print("hot path (pgbench -M prepared -c 2 -j 2):"), hot_path(args.seconds, args.rounds, args.only))[1]
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    ana = [] if args.skip_analysis else (print("analysis:"), analysis(sizes, args.repeat))[1]
    cov = [] if args.skip_analysis or not args.covariate_users else covariates(args.covariate_users, args.repeat)
    if args.bulk:
        print(f"bulk recording ({args.bulk} rows, {args.rounds} rounds):")
        bare, ours, single = bulk(args.bulk, args.rounds, args.bulk_per_row_share)
        print("\n| round | bare INSERT ... SELECT | ab_record_results | ratio | ab_record_result per row | ratio |"
              "\n| ---: | ---: | ---: | ---: | ---: | ---: |")
        for i, (b, o, s1) in enumerate(zip(bare, ours, single), 1):
            print(f"| {i} | {b:.2f} s | {o:.2f} s | {b / o:.2f} | {s1:.2f} s | {b / s1:.2f} |")
    adj = []
    if args.adjusted:
        print("regression adjustment:")
        adj = adjusted(*(int(x) for x in args.adjusted.split("x")), args.repeat)
    src = []
    if args.sources:
        print("metric sources:")
        src = sources(*(int(x) for x in args.sources.split("x")), args.repeat)
    report(hot, ana, cov)
    if adj:
        print("\n| case | analysis | bare aggregate | ratio | peak memory (analysis / bare) |\n| --- | ---: | ---: | ---: | ---: |")
        for label, a, b, r, am, bm in adj:
            print(f"| {label} | {a:.2f} s | {b:.2f} s | {r:.2f} | {am / 1024:.1f} / {bm / 1024:.1f} MiB |")
    if src:
        print("\n| metric source | ab_analyze | bare join | ratio | peak memory (ab_analyze / bare) |\n| --- | ---: | ---: | ---: | ---: |")
        for label, a, b, r, am, bm in src:
            print(f"| {label} | {a:.2f} s | {b:.2f} s | {r:.2f} | {am / 1024:.1f} / {bm / 1024:.1f} MiB |")


def prepare_single_node():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone():
            c.execute(f"CREATE DATABASE {DB}")
            psql_file(os.path.join(HERE, "setup.sql"))
    with psycopg.connect(conninfo(), autocommit=True) as c:
        # Databases made by an earlier version: bring the schema up to date, add the layered case.
        c.execute("ALTER EXTENSION ab_testing UPDATE")
        if not c.execute("SELECT 1 FROM ab_experiments WHERE name = 'bench layered'").fetchone():
            psql_file(os.path.join(HERE, "layers.sql"))
        if not c.execute("SELECT 1 FROM ab_experiments WHERE name = 'bench rollout'").fetchone():
            psql_file(os.path.join(HERE, "rollouts.sql"))


def report(hot, ana, cov):
    print("\n| case | tps | baseline | baseline tps | ratio |\n| --- | ---: | --- | ---: | ---: |")
    for case, c, base, b, r in hot:
        print(f"| {case} | {c:.0f} | {base} | {b:.0f} | {r:.2f} |")
    by_case = {case: c for case, c, _, _, _ in hot}
    for ours, peer in [("ab_get_variant, assigned user", "PL/pgSQL peer, assigned user"),
                       ("ab_get_variant, new user", "PL/pgSQL peer, new user"),
                       ("ab_record_result", "PL/pgSQL peer, record result")]:
        if ours in by_case and peer in by_case:
            print(f"| {ours} vs the PL/pgSQL peer | {by_case[ours]:.0f} | {peer} | {by_case[peer]:.0f} | "
                  f"{by_case[ours] / by_case[peer]:.2f} |")
    if ana:
        print("\n| analysis | ab_analyze | bare GROUP BY | ratio | peak memory (ab_analyze / bare) |\n| --- | ---: | ---: | ---: | ---: |")
        for label, a, b, r, am, bm in ana:
            print(f"| {label} | {a:.2f} s | {b:.2f} s | {r:.2f} | {am / 1024:.1f} / {bm / 1024:.1f} MiB |")
    if cov:
        print("\n| covariates | ab_analyze, fresh (no ANALYZE) | ab_analyze after ANALYZE | bare join after ANALYZE |\n"
              "| --- | ---: | ---: | ---: |")
        for label, fresh, analysed, bare in cov:
            print(f"| {label} | {fresh:.2f} s | {analysed:.2f} s | {bare:.2f} s |")


if __name__ == "__main__":
    main()
