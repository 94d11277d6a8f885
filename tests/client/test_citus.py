"""Citus: ab_distribute(), the hot path on the node holding the user, cache invalidation on
every node, and the analysis on the workers. The tests marked citus_only run with AB_CITUS=1
against the coordinator + 2 workers that scripts/citus-cluster.sh starts."""
import os
import random
import re

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import WORKER_PORTS, conninfo, fresh_citus
from test_operations import analysis, counts, fresh_db, drop_db, one, populate, started, two_arms

citus_only = pytest.mark.citus_only


def test_distribute_without_citus_says_what_is_missing():
    dsn = fresh_db("ab_no_citus")
    with psycopg.connect(dsn, autocommit=True) as c:
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="ab_distribute needs Citus") as e:
            c.execute("SELECT ab_distribute()")
        assert "CREATE EXTENSION citus" in e.value.diag.message_hint
        assert one(c, "SELECT count(*) FROM pg_extension WHERE extname = 'citus'") == 0
    drop_db("ab_no_citus")


def assert_same_analysis(before, after):
    """Same statistics (computed_at and the floating-point order of the merge may differ)."""
    assert len(before) == len(after)
    for b, a in zip(before, after):
        for x, y in zip(b, a):
            if isinstance(x, float):
                assert y == pytest.approx(x, rel=1e-9, abs=1e-12)
            elif not hasattr(x, "year"):
                assert x == y


def nodes():
    """A connection string for the coordinator, then each worker."""
    return [conninfo("postgres")] + [conninfo("postgres", port=p) for p in WORKER_PORTS]


@citus_only
def test_layout_and_a_second_call_changes_nothing():
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        again = c.execute("SELECT object, changed FROM ab_distribute()").fetchall()
        assert len(again) == 20 and not any(changed for _, changed in again), again
        kinds = dict(c.execute("SELECT logicalrelid::regclass::text, partmethod::text FROM pg_dist_partition "
                               "WHERE logicalrelid::regclass::text ~ '^ab_'").fetchall())
        assert kinds == {"ab_experiments": "n", "ab_variants": "n", "ab_layers": "n", "ab_layer_experiments": "n",
                         "ab_insights": "n", "ab_audit": "n", "ab_allocations": "n", "ab_metric_sources": "n",
                         "ab_assignments": "h", "ab_results": "h", "ab_user_metrics": "h", "ab_covariates": "h"}
        assert one(c, "SELECT count(DISTINCT colocationid) FROM pg_dist_partition "
                      "WHERE partmethod = 'h' AND logicalrelid::regclass::text ~ '^ab_'") == 1
        delegated = c.execute(
            "SELECT o.objid::regprocedure::text, o.distribution_argument_index, "
            "o.colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'ab_assignments'::regclass) "
            "FROM pg_dist_object o WHERE o.classid = 'pg_proc'::regclass AND o.distribution_argument_index IS NOT NULL "
            "ORDER BY 1").fetchall()
        assert [d[0].split("(")[0] for d in delegated] == ["ab_get_variant"] * 2 + ["ab_record_covariate"] * 2 + \
            ["ab_record_result"] * 2
        assert all(d[2] for d in delegated)
        # Each is delegated by its user_id argument (counted from 0).
        assert {d[0].split("(")[0]: d[1] for d in delegated} == \
            {"ab_get_variant": 1, "ab_record_covariate": 2, "ab_record_result": 3}
    for node in nodes()[1:]:
        with psycopg.connect(node, autocommit=True) as w:
            assert one(w, "SELECT count(*) FROM pg_extension WHERE extname = 'ab_testing'") == 1
            with pytest.raises(psycopg.errors.FeatureNotSupported, match="must run on the Citus coordinator"):
                w.execute("SELECT ab_distribute()")


@citus_only
def test_assigned_users_are_read_from_the_local_shard_with_no_write():
    """On the node holding a user's shard, an assigned user's call scans that shard's primary
    key once and writes nothing; on the other worker the call is routed, with the same answer."""
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        exp = started(c, "probed", salt="probed")
        users = [f"user-{i}" for i in range(40)]
        expected = {u: one(c, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, u) for u in users}
        assert None not in expected.values()
        shard_of = {u: one(c, "SELECT get_shard_id_for_distribution_column('ab_assignments', %s::text)", u) for u in users}
        placement = dict(c.execute(
            "SELECT s.shardid, n.nodeport FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) "
            "JOIN pg_dist_node n ON n.groupid = p.groupid WHERE s.logicalrelid = 'ab_assignments'::regclass").fetchall())
    local_reads = 0
    for port in WORKER_PORTS:
        with psycopg.connect(conninfo("postgres", port=port)) as w:
            for u in users:
                shard = shard_of[u]
                index = f"ab_assignments_pkey_{shard}"
                local = str(placement[shard]) == port
                stats = ("SELECT pg_stat_get_xact_numscans(%s::regclass), "
                         "pg_stat_get_xact_tuples_inserted(%s::regclass)")
                if local:
                    before = w.execute(stats, (index, f"ab_assignments_{shard}")).fetchone()
                # A transaction block: Citus runs the call here instead of delegating it.
                got = one(w, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, u)
                assert got == expected[u]
                if local:
                    after = w.execute(stats, (index, f"ab_assignments_{shard}")).fetchone()
                    assert (after[0] - before[0], after[1] - before[1]) == (1, 0), u
                    local_reads += 1
                w.rollback()
    assert local_reads == len(users)


@citus_only
def test_a_workers_backend_does_not_grow_with_the_calls_it_serves():
    """Citus 13's local execution caches, in a kept plan of an INSERT into a distributed table,
    one more plan of the shard at every execution (46 kB a call): the hot path's writes are
    planned at each call under Citus, and a worker's backend keeps its size over a thousand
    results, covariates and new users on its own shards."""
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        exp = started(c, "sized", salt="sized")
        users = [f"sized-{i}" for i in range(40)]
        for u in users:
            assert one(c, "SELECT ab_get_variant(%s, %s) IS NOT NULL", exp, u)
        node_of = dict(c.execute(
            "SELECT u, n.nodeport::text FROM unnest(%s::text[]) u "
            "JOIN pg_dist_placement p ON p.shardid = get_shard_id_for_distribution_column('ab_assignments', u) "
            "JOIN pg_dist_node n ON n.groupid = p.groupid", (users,)).fetchall())
    size = "SELECT sum(total_bytes) FROM pg_backend_memory_contexts"
    calls = ("SELECT count(ab_record_result(%(e)s, 'conversion_rate', 1, %(u)s)), "
             "count(ab_record_covariate(%(e)s, 'conversion_rate', %(u)s, g)::text), "
             "count(ab_get_variant(%(e)s, %(new)s || g)) FROM generate_series(%(first)s::int, %(last)s::int) g")
    for port in WORKER_PORTS:
        user = next(u for u in users if node_of[u] == port)
        with psycopg.connect(conninfo("postgres", port=port), autocommit=True) as w:
            args = {"e": exp, "u": user, "new": f"new-{port}-"}
            assert w.execute(calls, {**args, "first": 1, "last": 20}).fetchone() == (20, 20, 20)
            before = one(w, size)
            assert w.execute(calls, {**args, "first": 21, "last": 1020}).fetchone() == (1000, 1000, 1000)
            grown = one(w, size) - before
            assert grown < 1 << 20, f"the backend grew by {grown} bytes over 1000 calls of each"
            # Local calls indeed: the results and half the new users are on this worker's shards.
            assert one(w, "SELECT count(*) FROM ab_results WHERE user_id = %s", user) == 1020


@citus_only
def test_every_node_sees_a_change_at_its_next_call():
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as admin:
        exp = one(admin, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("watched")))
        sessions = [psycopg.connect(n, autocommit=True) for n in nodes()]
        try:
            for s in sessions:  # each caches the draft
                assert one(s, "SELECT ab_get_variant('watched', 'u1')") is None
            one(admin, "SELECT ab_start_experiment('watched')")
            for s in sessions:
                assert one(s, "SELECT ab_get_variant('watched', 'u1') IS NOT NULL")
            admin.execute("UPDATE ab_variants SET traffic_allocation = CASE name WHEN 'a' THEN 0 ELSE 100 END "
                          "WHERE experiment_id = %s", (exp,))
            for k, s in enumerate(sessions):
                assert {one(s, "SELECT ab_get_variant('watched', %s) ->> 'variant'", f"n{k}-{i}")
                        for i in range(20)} == {"b"}
            admin.execute("UPDATE ab_variants SET config = '{\"v\": 2}' WHERE experiment_id = %s", (exp,))
            for s in sessions:
                assert one(s, "SELECT ab_get_variant('watched', 'u1') -> 'config' ->> 'v'") == "2"
            one(admin, "SELECT ab_stop_experiment('watched')")
            for k, s in enumerate(sessions):
                assert one(s, "SELECT ab_get_variant('watched', %s)", f"late-{k}") is None
                assert one(s, "SELECT ab_record_result('watched', 'conversion_rate', 1, 'u1')") is False
            one(admin, "SELECT ab_delete_experiment('watched')")
            for s in sessions:
                with pytest.raises(psycopg.errors.UndefinedObject):
                    s.execute("SELECT ab_get_variant('watched', 'u1')")
            one(admin, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("watched")))
            for s in sessions:
                assert one(s, "SELECT ab_get_variant('watched', 'u1')") is None
        finally:
            for s in sessions:
                s.close()
        assert one(admin, "SELECT count(*) FROM ab_assignments WHERE experiment_id = %s", exp) == 0


@citus_only
def test_a_targeted_user_keeps_the_variant_without_attributes():
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        exp = started(c, "targeted", target_segments={"loan_type": ["fha"]})
        for i in range(30):
            user = f"t-{i}"
            first = one(c, "SELECT ab_get_variant(%s, %s, %s) ->> 'variant'", exp, user, Jsonb({"loan_type": "fha"}))
            assert first is not None
            assert one(c, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, user) == first
            with c.transaction():  # not delegated: routed from the coordinator
                assert one(c, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, user) == first
            assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, %s)", exp, user) is True
        assert one(c, "SELECT ab_get_variant(%s, 'outsider', %s)", exp, Jsonb({"loan_type": "va"})) is None
        assert one(c, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == 30


@citus_only
def test_an_installation_with_data_distributes_and_keeps_it():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute("SELECT ab_drop_shards()")
        c.execute("DROP EXTENSION IF EXISTS ab_testing CASCADE")
        c.execute("CREATE EXTENSION ab_testing")
        exp = populate(c)
        before_counts, before = counts(c), analysis(c, exp)
        variants = dict(c.execute("SELECT a.user_id, v.name FROM ab_assignments a JOIN ab_variants v "
                                  "ON v.id = a.variant_id").fetchall())
        assert all(changed for _, changed in c.execute("SELECT object, changed FROM ab_distribute()").fetchall()[:-1])
        after_counts = counts(c)
        before_counts["ab_insights"] += len(before)  # the analysis run just above
        assert after_counts == before_counts
        after = analysis(c, exp)
        assert_same_analysis(before, after)
        for user in random.Random(1).sample(sorted(variants), 50):
            assert one(c, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, user) == variants[user]
        # The coordinator's shells keep no copy of the rows.
        assert one(c, "SELECT sum(pg_relation_size(t)) FROM unnest(%s::regclass[]) t",
                   ["ab_experiments", "ab_assignments", "ab_results", "ab_covariates"]) == 0
    fresh_citus()


@citus_only
def test_the_per_user_step_runs_on_the_workers():
    """Only per-variant moments come back to the coordinator: the per-user aggregation and a
    partial ab_moments run on each shard."""
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        plan = "\n".join(r[0] for r in c.execute(
            "EXPLAIN (VERBOSE) SELECT u.variant_id, ab_moments(u.v) FROM (SELECT r.variant_id, r.user_id, "
            "avg(r.metric_value) AS v FROM ab_results r WHERE r.experiment_id = 1 AND r.metric_name = 'm' "
            "GROUP BY r.variant_id, r.user_id) u GROUP BY u.variant_id").fetchall())
        assert "coord_combine_agg" in plan and "worker_partial_agg" in plan, plan


@citus_only
def test_an_application_role_works_through_the_coordinator():
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        if one(c, "SELECT count(*) FROM pg_roles WHERE rolname = 'ab_citus_app'"):
            c.execute("DROP OWNED BY ab_citus_app")
            c.execute("DROP ROLE ab_citus_app")
        c.execute("CREATE ROLE ab_citus_app LOGIN")
        one(c, "SELECT ab_grant_app('ab_citus_app')")
        exp = started(c, "granted")
        app_dsn = psycopg.conninfo.make_conninfo(dsn, user="ab_citus_app")
        with psycopg.connect(app_dsn, autocommit=True) as app:
            for i in range(20):
                assert one(app, "SELECT ab_get_variant(%s, %s) IS NOT NULL", exp, f"g-{i}")
                assert one(app, "SELECT ab_record_result(%s, 'conversion_rate', 1, %s)", exp, f"g-{i}") is True
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("SELECT count(*) FROM ab_results")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("SELECT ab_stop_experiment(%s)", (exp,))
        assert one(c, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == 20
        one(c, "SELECT ab_revoke_app('ab_citus_app')")
        c.execute("SELECT ab_drop_shards()")
        c.execute("DROP EXTENSION ab_testing CASCADE")
        c.execute("DROP OWNED BY ab_citus_app")
        c.execute("DROP ROLE ab_citus_app")
    fresh_citus()


@citus_only
def test_results_recorded_on_the_coordinator_and_on_workers_never_collide():
    """Delegated calls draw result ids on the worker, calls in a transaction block on the
    coordinator: each node has its own range of ids, so one user's results never collide."""
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        exp = started(c, "ids")
        users = [f"id-{i}" for i in range(30)]
        for u in users:
            assert one(c, "SELECT ab_get_variant(%s, %s) IS NOT NULL", exp, u)
        for _ in range(3):
            for u in users:
                assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, %s)", exp, u) is True
                with c.transaction():
                    assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 0, %s)", exp, u) is True
        assert one(c, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == 180
        groups = {r[0] for r in c.execute("SELECT DISTINCT id >> 48 FROM ab_results").fetchall()}
        assert 0 in groups and len(groups) == 3, groups  # the coordinator's range and each worker's


@citus_only
def test_a_dump_of_the_coordinator_restores_and_distributes_again():
    """pg_dump through the coordinator reads every row from the shards (Citus serves COPY TO
    of a distributed table); restored into a fresh installation and distributed again, the
    data, the analysis and the users' variants are the same, and new results do not collide
    with restored ones."""
    import subprocess
    from test_operations import HOST, PORT
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        exp = populate(c)
        before = analysis(c, exp)
        before_counts = counts(c)
        variants = dict(c.execute("SELECT a.user_id, v.name FROM ab_assignments a JOIN ab_variants v "
                                  "ON v.id = a.variant_id").fetchall())
    dump = "/tmp/ab_testing_citus_dump.custom"
    subprocess.run(["pg_dump", "-Fc", "-h", HOST, "-p", PORT, "-U", "postgres", "-d", "postgres", "-f", dump],
                   check=True)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT ab_drop_shards()")
        c.execute("DROP EXTENSION ab_testing CASCADE")
    subprocess.run(["pg_restore", "-h", HOST, "-p", PORT, "-U", "postgres", "-d", "postgres", "--exit-on-error", dump],
                   check=True)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT ab_distribute()")
        assert counts(c) == before_counts
        after = analysis(c, exp)
        assert_same_analysis(before, after)
        for user in sorted(variants)[:50]:
            assert one(c, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, user) == variants[user]
            assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, %s)", exp, user) is True
    fresh_citus()


SHARD_TABLES = ("SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relname ~ "
                "'^ab_(experiments|variants|layers|layer_experiments|insights|audit|assignments|results|covariates)_[0-9]+$'")


@citus_only
def test_drop_shards_then_drop_extension_leaves_no_table_on_any_node():
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        populate(c)
        shards = one(c, "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid::regclass::text ~ '^ab_'")
        assert one(c, "SELECT ab_drop_shards()") == shards
        c.execute("DROP EXTENSION ab_testing CASCADE")
    for node in nodes():
        with psycopg.connect(node, autocommit=True) as n:
            n.execute("SET citus.show_shards_for_app_name_prefixes = '*'")
            assert one(n, SHARD_TABLES) == 0
            assert one(n, "SELECT count(*) FROM pg_extension WHERE extname = 'ab_testing'") == 0
    fresh_citus()


SINGLE_NODE = os.environ.get("AB_SINGLE_NODE_DSN")
TIMESTAMP = r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?( ?UTC|[+-]\d\d(:\d\d)?)?"


def scenario(c):
    """One lifecycle of everything, with fixed salts; returns what every function and view
    answered, without ids and times."""
    out = {}
    c.execute("SELECT ab_create_layer('same', 10, salt => 'same-layer')")
    plain = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(
        "same plain", salt="same-1",
        # 0.9.0's metrics too: a ratio (a FULL JOIN of two metrics' per-user rows), a percentile
        # cap (percentile_cont over the per-user rows), a guardrail's margin.
        metrics={"conversion_rate": {"type": "binary"}, "spend": {"aggregation": "sum", "margin": 5},
                 "conversations": {"aggregation": "count"}, "tokens": {"aggregation": "sum", "cap": {"percentile": 0.9}},
                 "tokens_per_conversation": {"type": "ratio", "numerator": "tokens", "denominator": "conversations"},
                 # 0.10.0's quantiles: percentile_cont per variant, per-user counts for the clustering.
                 "tokens_p90": {"type": "quantile", "of": "tokens", "quantile": 0.9, "level": "event"},
                 "spend_median": {"type": "quantile", "of": "spend", "quantile": 0.5}},
        min_sample_size=20, breakdowns=["loan_type"])))
    targeted = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(
        "same targeted", salt="same-2", target_segments={"loan_type": ["fha"]})))
    layered = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(
        "same layered", salt="same-3", layer={"name": "same", "percentage": 40})))
    body = two_arms("same holdout", layer={"name": "same", "holdout": True})
    body["variants"][0]["traffic_allocation"], body["variants"][1]["traffic_allocation"] = 10, 90
    holdout = one(c, "SELECT ab_create_experiment(%s)", Jsonb(body))
    for e in (plain, targeted, layered, holdout):
        one(c, "SELECT ab_start_experiment(%s)", e)
    rng = random.Random(5)
    answers = []
    for i in range(300):
        user = f"same-{i}"
        attrs = {"loan_type": "fha" if i % 3 else "va"}
        for e in (plain, targeted, layered, holdout):
            v = one(c, "SELECT ab_get_variant(%s, %s, %s) ->> 'variant'", e, user, Jsonb(attrs))
            answers.append(v)
            if v is not None:
                one(c, "SELECT ab_record_result(%s, 'conversion_rate', %s, %s)", e,
                    float(rng.random() < (0.3 if v == "a" else 0.45)), user)
        one(c, "SELECT ab_record_result(%s, 'spend', %s, %s)", plain, round(rng.uniform(0, 50), 2), user)
        for _ in range(i % 4):
            one(c, "SELECT ab_record_result(%s, 'conversations', 1, %s)", plain, user)
            one(c, "SELECT ab_record_result(%s, 'tokens', %s, %s)", plain, rng.randint(100, 900) * (20 if i % 50 == 0 else 1), user)
        c.execute("SELECT ab_record_covariate(%s, 'spend', %s, %s)", (plain, user, round(rng.uniform(0, 40), 2)))
        answers.append(one(c, "SELECT ab_layer_group('same', %s)", user))
    out["answers"] = answers
    volatile = {"computed_at", "id", "experiment_id"}
    for e in (plain, targeted, layered, holdout):
        cur = c.execute("SELECT * FROM ab_analyze(%s)", (e,))
        cols = [d.name for d in cur.description]
        out[f"analyze {e}"] = [{k: (round(v, 9) if isinstance(v, float) else v) for k, v in zip(cols, r)}
                               for r in cur.fetchall()]
        out[f"summary {e}"] = re.sub(TIMESTAMP, "<time>", one(c, "SELECT ab_summary(%s)", e))
        out[f"plot {e}"] = re.sub(TIMESTAMP, "<time>", one(c, "SELECT ab_plot(%s)", e))
        info = one(c, "SELECT ab_get_experiment(%s)", e)
        out[f"experiment {e}"] = {k: v for k, v in info.items() if k not in ("id", "created_at", "started_at")}
    # 0.10.0's results over time (window functions over each user's days, partitioned by the
    # distribution column, then running sums per variant): enrollments and results spread
    # over days by a hash of the user.
    c.execute("SET TimeZone = 'UTC'")
    # (Citus runs only immutable expressions of columns in an UPDATE: epoch seconds, 2026-03-02 08:00 UTC.)
    c.execute("UPDATE ab_assignments SET assigned_at = to_timestamp(1772438400 + (hashtext(user_id) & 3) * 86400) "
              "WHERE experiment_id = %s", (plain,))
    c.execute("UPDATE ab_results SET recorded_at = to_timestamp(1772445600 "
              "+ ((hashtext(user_id) & 3) + (hashtext(metric_name || metric_value::text) & 1)) * 86400) "
              "WHERE experiment_id = %s", (plain,))
    cur = c.execute("SELECT day::text, metric_name, variant, users, mean, diff, ci_lower, ci_upper, p_value, test "
                    "FROM ab_timeline(%s) ORDER BY 1, 2, 3", (plain,))
    out["timeline"] = [tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in cur.fetchall()]
    assert len({r[0] for r in out["timeline"]}) == 5
    out["timeline plot"] = one(c, "SELECT ab_plot_timeline(%s, 'spend')", plain)
    # And its breakdown by the loan type each user had at enrollment (stored with the assignment).
    cur = c.execute("SELECT value, metric_name, variant, users, mean, diff, ci_lower, ci_upper, p_value, p_value_adjusted, "
                    "comparisons FROM ab_breakdown(%s, 'loan_type')", (plain,))
    out["breakdown"] = [tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in cur.fetchall()]
    assert {r[0] for r in out["breakdown"]} == {"fha", "va"}
    out["stop"] = one(c, "SELECT ab_stop_experiment(%s, true)", plain)
    for view, order in [("ab_experiment_overview", "name"), ("ab_experiment_health", "name"),
                        ("ab_latest_insights", "experiment, metric_name, variant"), ("ab_layer_overview", "name")]:
        cur = c.execute(f"SELECT * FROM {view} ORDER BY {order}")
        cols = [d.name for d in cur.description]
        out[view] = [{k: (round(v, 9) if isinstance(v, float) else v) for k, v in zip(cols, r)
                      if k not in volatile and not k.endswith("_at") and k != "days_running"}
                     for r in cur.fetchall()]
    out["audit"] = c.execute("SELECT experiment_name, action FROM ab_audit ORDER BY id").fetchall()
    return out


def on_one_node(db, run):
    """`run` on a fresh database of the single-node cluster with the extension; its answer."""
    with psycopg.connect(SINGLE_NODE, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {db}")
    with psycopg.connect(psycopg.conninfo.make_conninfo(SINGLE_NODE, dbname=db), autocommit=True) as c:
        c.execute("CREATE EXTENSION ab_testing")
        answer = run(c)
    with psycopg.connect(SINGLE_NODE, autocommit=True) as c:
        c.execute(f"DROP DATABASE {db} WITH (FORCE)")
    return answer


@citus_only
@pytest.mark.skipif(not SINGLE_NODE, reason="AB_SINGLE_NODE_DSN names no single-node database to compare with")
def test_every_function_and_view_answers_as_on_one_node():
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        distributed = scenario(c)
    single = on_one_node("ab_same", scenario)
    assert distributed.keys() == single.keys()
    for key in single:
        assert distributed[key] == single[key], key
    fresh_citus()


@citus_only
def test_declared_metrics_and_name_suggestions_on_every_path():
    """0.6.0's strict metric sets and nearest-name suggestions through the coordinator: a
    delegated call (run on the worker holding the user), a call in a transaction block (run on
    the coordinator), and a covariate; a refused name writes nothing anywhere."""
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        exp = started(c, "strict on citus", metrics={"conversion_rate": {}, "token_usage": {}})
        users = [f"user-{i}" for i in range(20)]
        for u in users:
            one(c, "SELECT ab_get_variant('strict on citus', %s)", u)
        for u in users:
            with pytest.raises(psycopg.errors.InvalidParameterValue,
                               match='metric "conversion_rat" is not declared by experiment "strict on citus" '
                                     r'\(did you mean "conversion_rate"\?\)'):
                c.execute("SELECT ab_record_result('strict on citus', 'conversion_rat', 1, %s)", (u,))
        with c.transaction():
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="is not declared"):
                with c.transaction():
                    c.execute("SELECT ab_record_result('strict on citus', 'tokens_usage', 1, 'user-1')")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match='did you mean "token_usage"'):
            c.execute("SELECT ab_record_covariate('strict on citus', 'tokens_usage', 'user-2', 3)")
        assert one(c, "SELECT count(*) FROM ab_results") == 0
        assert one(c, "SELECT count(*) FROM ab_covariates") == 0
        assert all(one(c, "SELECT ab_record_result('strict on citus', 'token_usage', 5, %s)", u) for u in users)
        assert one(c, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == 20
        with pytest.raises(psycopg.errors.UndefinedObject, match=r'\(did you mean "strict on citus"\?\)'):
            c.execute("SELECT ab_get_variant('Strict on citus', 'user-1')")
    fresh_citus()


def source_scenario(c, distributed):
    """An experiment measured on the application's conversations (distributed by the user key
    and co-located with ab_assignments on Citus) and on a table of its own left on the
    coordinator (a bigint user column); rows are placed relative to each user's enrollment, so
    that one node and Citus hold the same data."""
    c.execute("DROP TABLE IF EXISTS public.conversations, public.callbacks")
    c.execute('CREATE TABLE public.conversations (user_id text COLLATE "C", started_at timestamptz, '
              "resolved boolean, tokens integer)")
    c.execute("CREATE TABLE public.callbacks (customer bigint, at timestamptz)")
    if distributed:
        c.execute("SELECT create_distributed_table('public.conversations', 'user_id', colocate_with => 'ab_assignments')")
    conversations = {"relation": "public.conversations", "user_column": "user_id", "time_column": "started_at"}
    one(c, "SELECT ab_create_metric_source('conversations', %s)", Jsonb(conversations))
    exp = started(c, "measured on conversations", primary_metric="resolved", salt="conversations", metrics={
        "resolved": {"type": "binary", "window": "7 days", "source": {**conversations, "filter": {"resolved": True}}},
        "tokens": {"aggregation": "sum", "window": "7 days", "source": {**conversations, "value_column": "tokens"},
                   "covariate": {"lookback": "30 days"}},
        "conversations": {"aggregation": "count", "source": "conversations"},
        "tokens_per_conversation": {"type": "ratio", "numerator": "tokens", "denominator": "conversations"},
        "callbacks": {"aggregation": "count", "source": {"relation": "public.callbacks", "user_column": "customer",
                                                         "time_column": "at"}}})
    for i in range(400):
        one(c, "SELECT ab_get_variant(%s, %s)", exp, str(i))
    c.execute("INSERT INTO public.conversations SELECT a.user_id, a.assigned_at + interval '1 hour' * (g * 40), "
              "abs(hashtext(a.user_id || g)) %% 5 < CASE WHEN v.name = 'b' THEN 3 ELSE 2 END, "
              "100 + abs(hashtext(a.user_id)) %% 50 + CASE WHEN g < 0 THEN 0 ELSE g * 3 END "
              "FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id, generate_series(-4, 6) g "
              "WHERE a.experiment_id = %s AND abs(hashtext(a.user_id || g)) %% 4 > 0", (exp,))
    c.execute("INSERT INTO public.callbacks SELECT a.user_id::bigint, a.assigned_at + interval '1 day' "
              "FROM ab_assignments a WHERE a.experiment_id = %s AND a.user_id::int %% 3 = 0", (exp,))
    return c.execute("SELECT metric_name, variant, users, mean, diff, p_value, cuped_diff, cuped_p_value "
                     "FROM ab_analyze(%s) ORDER BY metric_name, variant", (exp,)).fetchall()


@citus_only
@pytest.mark.skipif(not SINGLE_NODE, reason="AB_SINGLE_NODE_DSN names no single-node database to compare with")
def test_a_source_distributed_by_the_user_key_is_joined_on_each_shard():
    """A source distributed by the same user key as ab_assignments (co-located): each shard
    joins its own assignments and rows and returns partial moments, no row crosses the
    network; a table left on the coordinator is joined too. Same answers as one node."""
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        commands = []
        c.add_notice_handler(lambda d: commands.append(d.message_primary))
        c.execute("SET citus.log_remote_commands = on")
        c.execute("SET client_min_messages = log")
        distributed = source_scenario(c, True)
        c.execute("RESET client_min_messages")
    joined = [q for q in commands if re.search(r"ab_assignments_\d+ a JOIN public\.conversations_\d+ s", q)]
    assert joined and all("worker_partial_agg" in q for q in joined), commands[-5:]
    # Every shard of the co-located pair takes part.
    shards = {re.search(r"ab_assignments_(\d+)", q).group(1) for q in joined}
    with psycopg.connect(dsn, autocommit=True) as c:
        assert len(shards) == one(c, "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'ab_assignments'::regclass")
        c.execute("DROP TABLE public.conversations, public.callbacks")
    single = on_one_node("ab_same_sources", lambda c: source_scenario(c, False))
    assert {r[0] for r in single} == {"resolved", "tokens", "conversations", "tokens_per_conversation", "callbacks"}
    assert any(r[6] is not None for r in single)
    assert_same_analysis(single, distributed)
    fresh_citus()


@citus_only
def test_a_distributed_source_owned_by_another_role_is_refused():
    """A distributed source whose owner does not hold the analysing role's privileges would be
    read as its owner, which is not supported on Citus: creating the experiment is refused
    (42501) and creates nothing."""
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS public.owned_conversations")
        c.execute("DROP ROLE IF EXISTS ab_citus_app")
        c.execute("CREATE ROLE ab_citus_app")
        c.execute('CREATE TABLE public.owned_conversations (user_id text COLLATE "C", at timestamptz)')
        c.execute("SELECT create_distributed_table('public.owned_conversations', 'user_id', "
                  "colocate_with => 'ab_assignments')")
        c.execute("ALTER TABLE public.owned_conversations OWNER TO ab_citus_app")
        source = {"relation": "public.owned_conversations", "user_column": "user_id", "time_column": "at"}
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="distributed by Citus"):
            started(c, "owned by the application", primary_metric="seen",
                    metrics={"seen": {"type": "binary", "source": source}})
        assert one(c, "SELECT count(*) FROM ab_experiments WHERE name = 'owned by the application'") == 0
        c.execute("DROP TABLE public.owned_conversations")
        c.execute("DROP ROLE ab_citus_app")
    fresh_citus()


@citus_only
def test_stored_analyses_stay_closed_to_analysts_on_citus():
    """On Citus a view over a reference table is checked against the reading role on the
    shard, where the analysts' column grant on ab_insights does not reach: the views over
    stored analyses refuse them (42501) rather than show rows; a superuser reads them."""
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        drop_role(c, "ab_citus_analyst")
        c.execute("CREATE ROLE ab_citus_analyst LOGIN")
        one(c, "SELECT ab_grant_analyst('ab_citus_analyst')")
        populate(c)
        assert one(c, "SELECT count(*) FROM ab_latest_insights") > 0
        c.execute("SET ROLE ab_citus_analyst")
        for view in ["ab_latest_insights", "ab_insight_history"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(f"SELECT count(*) FROM {view}")
        c.execute("RESET ROLE")
        one(c, "SELECT ab_revoke_analyst('ab_citus_analyst')")
    fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        drop_role(c, "ab_citus_analyst")


def drop_role(c, role):
    if one(c, "SELECT count(*) FROM pg_roles WHERE rolname = %s", role):
        c.execute(f"DROP OWNED BY {role}")
        c.execute(f"DROP ROLE {role}")


@citus_only
def test_bulk_recording_through_the_coordinator():
    """ab_record_results on the coordinator: the rows land on the shards of both workers, the
    rows of unassigned users are skipped, the per-user state equals the raw results and the
    analysis equals one recorded row by row; a bad row fails the whole batch with its position;
    on a worker it is refused (0A000) with nothing recorded."""
    from test_operations import PER_USER_STATE_MISMATCHES
    dsn = fresh_citus()
    rng = random.Random(11)
    with psycopg.connect(dsn, autocommit=True) as c:
        bulk = started(c, "bulk on citus", salt="bulk-on-citus", metrics={"conversion_rate": {"type": "binary"},
                                                                          "spend": {"aggregation": "sum"}})
        single = started(c, "singles on citus", salt="bulk-on-citus", metrics={"conversion_rate": {"type": "binary"},
                                                                               "spend": {"aggregation": "sum"}})
        users = [f"bulk-{i}" for i in range(400)]
        for e in (bulk, single):
            c.execute("SELECT count(ab_get_variant(%s, u)) FROM unnest(%s::text[]) u", (e, users[:350]))
        rows = [(rng.choice(["conversion_rate", "spend"]), rng.choice(users)) for _ in range(3000)]
        values = [float(rng.random() < 0.4) if m == "conversion_rate" else round(rng.uniform(0, 90), 2) for m, _ in rows]
        recorded = one(c, "SELECT ab_record_results(%s, %s, %s, %s)", bulk, [m for m, _ in rows], values,
                       [u for _, u in rows])
        assigned = set(users[:350])
        assert recorded == sum(u in assigned for _, u in rows)
        for (m, u), v in zip(rows, values):
            c.execute("SELECT ab_record_result(%s, %s, %s, %s)", (single, m, v, u))
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
        assert_same_analysis(analysis(c, single), analysis(c, bulk))
        # A bad row: its position, and nothing of the batch recorded.
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="row 3: .*NaN"):
            c.execute("SELECT ab_record_results(%s, %s, %s, %s)",
                      (bulk, ["spend"] * 3, [1.0, 2.0, float("nan")], users[:3]))
        assert one(c, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", bulk) == recorded
    for port in WORKER_PORTS:
        with psycopg.connect(conninfo("postgres", port=port), autocommit=True) as w:
            with pytest.raises(psycopg.errors.FeatureNotSupported, match="ab_record_results runs on the Citus coordinator") as e:
                w.execute("SELECT ab_record_results(%s, %s, %s, %s)", (bulk, ["spend"], [1.0], users[:1]))
            assert "ab_record_result" in e.value.diag.message_hint
    with psycopg.connect(dsn, autocommit=True) as c:
        assert one(c, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", bulk) == recorded
        # Spread over the workers: each holds some of the batch.
        per_node = c.execute("SELECT nodeport, sum(result::int) FROM run_command_on_shards('ab_results', "
                             "$$SELECT count(*) FROM %s WHERE experiment_id = " + str(bulk) + "$$) "
                             "JOIN pg_dist_shard_placement USING (shardid) GROUP BY 1").fetchall()
        assert len(per_node) == 2 and all(n > 0 for _, n in per_node), per_node


# Installations distributed with 0.5.0 to 0.13.0 update by the direct scripts to 0.15.0
# (scripts/direct-updates.py): Citus refuses those releases' own scripts (it forwards their
# changes of distributed tables to the workers as the whole script's text, and refuses the
# unnamed CHECK constraints of 0.7.0->0.8.0 and 0.9.0->0.10.0). Released scripts never change.


@citus_only
def test_updates_of_a_distributed_installation_keep_its_data():
    """Each earlier release created on the coordinator with data in it, then `ALTER EXTENSION
    ab_testing UPDATE` and `ab_distribute()`, as docs/citus.md says: a release from before
    0.5.0 (no ab_distribute yet) distributes after the update; the data, every user's variant
    and the analysis are kept, the per-user state equals the raw results, and recording goes
    on; the same for installations distributed with 0.5.0 or later."""
    from test_operations import PER_USER_STATE_MISMATCHES, release, releases
    for version in releases():
        with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
            if one(c, "SELECT count(*) FROM pg_extension WHERE extname = 'ab_testing'"):
                c.execute("SELECT ab_drop_shards()")
            c.execute("DROP EXTENSION IF EXISTS ab_testing CASCADE")
            c.execute(f"CREATE EXTENSION ab_testing VERSION '{version}'")
            if release(version) >= (0, 5, 0):
                c.execute("SELECT ab_distribute()")
            exp = populate(c)
            before, before_counts = analysis(c, exp), counts(c)
            variants = dict(c.execute("SELECT a.user_id, v.name FROM ab_assignments a JOIN ab_variants v "
                                      "ON v.id = a.variant_id").fetchall())
            c.execute("ALTER EXTENSION ab_testing UPDATE")
            c.execute("SELECT ab_distribute()")
            for port in WORKER_PORTS:
                with psycopg.connect(conninfo("postgres", port=port)) as w:
                    assert one(w, "SELECT extversion FROM pg_extension WHERE extname = 'ab_testing'") \
                        == one(c, "SELECT extversion FROM pg_extension WHERE extname = 'ab_testing'"), version
            after_counts = counts(c)
            assert {t: after_counts[t] for t in before_counts if t != "ab_insights"} == \
                {t: n for t, n in before_counts.items() if t != "ab_insights"}, version
            after = analysis(c, exp)
            assert_same_analysis(before, [row[:len(before[0])] for row in after])
            assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == [], version
            for user in random.Random(1).sample(sorted(variants), 30):
                assert one(c, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, user) == variants[user], version
            assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, 'user-1')", exp) is True
            assert one(c, "SELECT ab_get_variant(%s, 'newcomer') IS NOT NULL", exp)
            assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == [], version
            # The coordinator's shells keep no copy of the rows.
            assert one(c, "SELECT sum(pg_relation_size(t)) FROM unnest(%s::regclass[]) t",
                       ["ab_experiments", "ab_assignments", "ab_results", "ab_user_metrics"]) == 0, version
    fresh_citus()


@citus_only
def test_a_rollback_reaches_every_node_at_its_next_call():
    """A rollout rolled back through the coordinator: the next ab_get_variant of a session on
    the coordinator and on every worker returns the control's config to every user, those
    assigned the new variant included; their assignments stay."""
    dsn = fresh_citus()
    definition = two_arms("ramped", salt="ramped", allocation={"mode": "rollout", "steps": [50, 100],
                                                               "step_every": "1 hour"})
    definition["variants"][0]["config"], definition["variants"][1]["config"] = {"m": "old"}, {"m": "new"}
    with psycopg.connect(dsn, autocommit=True) as admin:
        exp = one(admin, "SELECT ab_create_experiment(%s)", Jsonb(definition))
        one(admin, "SELECT ab_start_experiment(%s)", exp)
        sessions = [psycopg.connect(n, autocommit=True) for n in nodes()]
        try:
            users = [f"r{i}" for i in range(40)]
            before = {u: one(admin, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, u) for u in users}
            assert set(before.values()) == {"a", "b"}
            for s in sessions:  # each caches the ramping rollout
                assert {one(s, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, u) for u in users} == {"a", "b"}
            one(admin, "SELECT ab_rollback(%s, 'guardrail seen on the dashboard')", "ramped")
            for s in sessions:
                assert {one(s, "SELECT ab_get_variant(%s, %s) -> 'config' ->> 'm'", exp, u) for u in users} == {"old"}
        finally:
            for s in sessions:
                s.close()
        stored = dict(admin.execute("SELECT a.user_id, v.name FROM ab_assignments a JOIN ab_variants v "
                                    "ON v.id = a.variant_id WHERE a.experiment_id = %s", (exp,)).fetchall())
        assert {u: stored[u] for u in users} == before
    fresh_citus()
