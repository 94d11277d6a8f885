#!/usr/bin/env python3
"""ab_summary in a database of many running experiments over the same users: the interaction
section under ab_testing.summary_interactions_limit (10) against no limit (1000) and against
the section off, same run, medians of 7 calls per round.

    python bench/summary_limit.py "host=/tmp/ab_testing_pg16 port=5516 user=postgres" [experiments] [users]

Creates (and drops first) the database many_summary.
"""
import statistics
import sys
import time

import psycopg
from psycopg.types.json import Jsonb

dsn = sys.argv[1]
experiments = int(sys.argv[2]) if len(sys.argv) > 2 else 300
users = int(sys.argv[3]) if len(sys.argv) > 3 else 20
with psycopg.connect(dsn + " dbname=postgres", autocommit=True) as c:
    c.execute("DROP DATABASE IF EXISTS many_summary")
    c.execute("CREATE DATABASE many_summary")
with psycopg.connect(dsn + " dbname=many_summary", autocommit=True) as c:
    c.execute("CREATE EXTENSION ab_testing")
    for i in range(experiments):
        e = c.execute("SELECT ab_create_experiment(%s)", (Jsonb({
            "name": f"e{i}", "experiment_type": "feature", "primary_metric": "m", "metrics": {"m": {}},
            "variants": [{"name": "control", "is_control": True, "traffic_allocation": 50},
                         {"name": "t", "traffic_allocation": 50}]}),)).fetchone()[0]
        c.execute("SELECT ab_start_experiment(%s)", (e,))
        c.execute("SELECT count(ab_get_variant(%s, 'u' || g)) FROM generate_series(1, %s) g", (e, users))
        c.execute("SELECT count(ab_record_result(%s, 'm', g, 'u' || g)) FROM generate_series(1, %s) g", (e, users))

    def median_ms(setting):
        c.execute(setting)
        times = []
        for _ in range(7):
            t = time.perf_counter()
            c.execute("SELECT ab_summary('e0')").fetchone()
            times.append(time.perf_counter() - t)
        c.execute("RESET ALL")
        return statistics.median(times) * 1000

    for rnd in range(2):
        limit = median_ms("SET ab_testing.summary_interactions_limit = 10")
        unlimited = median_ms("SET ab_testing.summary_interactions_limit = 1000")
        off = median_ms("SET ab_testing.summary_interactions = off")
        print(f"round {rnd + 1}: limit 10 {limit:.1f} ms, limit 1000 {unlimited:.1f} ms, off {off:.1f} ms, "
              f"ratios to off {limit / off:.2f} / {unlimited / off:.1f}")
