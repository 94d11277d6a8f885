"""Per-call times of ab_analyze, ab_funnel and ab_retention on the data of
tests/client/test_funnel.py's A/A test (N experiments of 600 users, default 400; the first 20
timed). Creates (and drops first) the database prof.

    DSN="host=/tmp/ab_testing_pg port=5499 user=postgres" python bench/funnel_analysis.py
"""
import os
import time

import psycopg
from psycopg.types.json import Jsonb
dsn = os.environ["DSN"]
with psycopg.connect(dsn + " dbname=postgres", autocommit=True) as c:
    c.execute("DROP DATABASE IF EXISTS prof"); c.execute("CREATE DATABASE prof")
STEPS = {"started": {"type": "binary"}, "uploaded": {"type": "binary"}, "approved": {"type": "binary"}, "session": {"aggregation": "count"}}
with psycopg.connect(dsn + " dbname=prof", autocommit=True) as c:
    c.execute("CREATE EXTENSION ab_testing")
    metrics = {**STEPS, "funded": {"funnel": {"steps": ["started", "uploaded", "approved"], "window": "30 days"}},
               "funded_prev": {"funnel": {"steps": ["started", "uploaded", "approved"], "window": "10 days", "from": "previous"}},
               "active": {"retention": {"metric": "session", "days": [7, 30]}}}
    ids = []
    t0 = time.perf_counter()
    for i in range(int(os.environ.get('N', '400'))):
        body = {"name": f"aa{i}", "experiment_type": "workflow", "primary_metric": "funded", "salt": f"s{i}", "min_sample_size": 10, "metrics": metrics,
                "variants": [{"name": "control", "is_control": True, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}
        e = c.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),)).fetchone()[0]; c.execute("SELECT ab_start_experiment(%s)", (e,)); ids.append(e)
    print(f"create {time.perf_counter()-t0:.1f}s"); t0 = time.perf_counter()
    c.execute("""INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at)
            SELECT e, 'u' || i, (SELECT v.id FROM ab_variants v WHERE v.experiment_id = e ORDER BY v.is_control DESC, v.id OFFSET (random() < 0.5)::int LIMIT 1),
                   now() - interval '60 days' + random() * interval '55 days' FROM unnest(%s::bigint[]) e, generate_series(1, 600) i""", (ids,))
    c.execute("""
            WITH a AS (SELECT experiment_id, user_id, variant_id, assigned_at FROM ab_assignments WHERE experiment_id = ANY(%s)),
            s1 AS (SELECT a.*, a.assigned_at + random() * interval '5 days' AS t FROM a WHERE random() < 0.6),
            s2 AS (SELECT s1.experiment_id, s1.user_id, s1.variant_id, s1.assigned_at, s1.t + random() * interval '20 days' AS t FROM s1 WHERE random() < 0.6),
            s3 AS (SELECT s2.experiment_id, s2.user_id, s2.variant_id, s2.assigned_at, s2.t + random() * interval '20 days' AS t FROM s2 WHERE random() < 0.6),
            ss AS (SELECT a.experiment_id, a.user_id, a.variant_id, a.assigned_at + random() * interval '40 days' AS t
                   FROM a, generate_series(1, 2) WHERE random() < 0.3)
            INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, recorded_at)
            SELECT experiment_id, variant_id, user_id, 'started', 1, t FROM s1
            UNION ALL SELECT experiment_id, variant_id, user_id, 'uploaded', 1, t FROM s2
            UNION ALL SELECT experiment_id, variant_id, user_id, 'approved', 1, t FROM s3
            UNION ALL SELECT experiment_id, variant_id, user_id, 'session', 1, least(t, now()) FROM ss""", (ids,))
    print(f"load {time.perf_counter()-t0:.1f}s")
    for q in ("SELECT * FROM ab_analyze(%s)", "SELECT * FROM ab_funnel(%s)", "SELECT * FROM ab_retention(%s)"):
        s = time.perf_counter()
        for e in ids[:20]: c.execute(q, (e,)).fetchall()
        print(q, f"{(time.perf_counter()-s)/20*1000:.0f} ms")
