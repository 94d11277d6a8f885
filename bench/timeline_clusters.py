#!/usr/bin/env python3
"""ab_timeline of a cluster-randomized experiment (100k users in 1,000 branches, two metrics, ten
days) against the same data randomized per user, same run, medians of 3 calls per round.

    python bench/timeline_clusters.py "host=/tmp/ab_testing_pg16 port=5516 user=postgres"

Creates (and drops first) the database tl_bench.
"""
import statistics
import sys
import time

import psycopg
from psycopg.types.json import Jsonb

dsn = sys.argv[1]
with psycopg.connect(dsn + " dbname=postgres", autocommit=True) as c:
    c.execute("DROP DATABASE IF EXISTS tl_bench"); c.execute("CREATE DATABASE tl_bench")
with psycopg.connect(dsn + " dbname=tl_bench", autocommit=True) as c:
    c.execute("CREATE EXTENSION ab_testing")
    ids = {}
    for name, unit in (("per_user", None), ("clustered", "branch")):
        body = {"name": name, "experiment_type": "feature", "primary_metric": "m", "metrics": {"m": {}, "s": {"aggregation": "sum"}},
                "breakdowns": ["branch"], "variants": [{"name": "control", "is_control": True, "traffic_allocation": 50},
                                                      {"name": "t", "traffic_allocation": 50}]}
        if unit: body["randomization_unit"] = unit
        e = c.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),)).fetchone()[0]
        c.execute("SELECT ab_start_experiment(%s)", (e,))
        vs = [r[0] for r in c.execute("SELECT id FROM ab_variants WHERE experiment_id=%s ORDER BY position", (e,))]
        c.execute("""INSERT INTO ab_assignments (experiment_id, user_id, variant_id, attributes, assigned_at)
                     SELECT %s, 'u' || g, CASE WHEN (g %% 1000) %% 2 = 0 THEN %s ELSE %s END,
                            jsonb_build_object('branch', 'b' || g %% 1000), now() - (g %% 10) * interval '1 day'
                     FROM generate_series(1, 100000) g""", (e, vs[0], vs[1]))
        c.execute("""INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, recorded_at)
                     SELECT a.experiment_id, a.variant_id, a.user_id, m, (hashtext(a.user_id || k) %% 100)::float8 / 10,
                            a.assigned_at + (k %% 3) * interval '1 day'
                     FROM ab_assignments a, generate_series(1, 3) k, unnest(array['m','s']) m
                     WHERE a.experiment_id = %s AND a.assigned_at + (k %% 3) * interval '1 day' < now()""", (e,))
        c.execute("SELECT ab_rebuild_user_metrics(%s)", (e,))
        ids[name] = e
    c.execute("VACUUM ANALYZE")
    for rnd in range(3):
        out = []
        for name in ("per_user", "clustered"):
            ts = []
            for _ in range(3):
                t = time.perf_counter(); c.execute("SELECT count(*) FROM ab_timeline(%s::bigint)", (ids[name],)).fetchone(); ts.append(time.perf_counter() - t)
            out.append(statistics.median(ts))
        print(f"round {rnd+1}: per user {out[0]*1000:.0f} ms, clustered {out[1]*1000:.0f} ms, ratio {out[1]/out[0]:.2f}")
