"""The per-user state (ab_user_metrics) that ab_analyze reads: after randomised histories of
new users, results, rolled-back transactions, concurrent writers for the same users and
deleted experiments, it equals what the raw results say, and the analysis from it equals the
analysis from the raw results (to floating-point summation order)."""

import math
import os
import random
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import CITUS
from test_operations import PER_USER_STATE_MISMATCHES, drop_db, fresh_db, one

METRICS = {"conversion_rate": {"type": "binary"}, "latency": {"aggregation": "mean"},
           "tokens": {"aggregation": "sum"}, "messages": {"aggregation": "count"}, "peak": {"aggregation": "max"}}
# Dyadic values: every sum of them is exact, so the two analyses may differ only in how the
# per-variant moments combine (the extreme values are in the hardening regression test).
VALUES = [0.0, 1.0, -1.0, 0.5, 3.25, 1e6, -1e6, 123456.75]


def definition(name, rng):
    arms = rng.choice([2, 3])
    variants = [{"name": f"v{i}", "is_control": i == 0, "traffic_allocation": 100 // arms - 1} for i in range(arms)]
    return {"name": name, "experiment_type": "prompt", "primary_metric": "conversion_rate", "metrics": METRICS,
            "min_sample_size": 5, "salt": name, "variants": variants}


def value_for(metric, rng):
    return float(rng.random() < 0.4) if metric == "conversion_rate" else rng.choice(VALUES + [rng.randrange(-200, 200) / 4])


def close(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    return a == b


def same_analysis(x, y):
    return len(x) == len(y) and all(len(r) == len(s) and all(close(a, b) for a, b in zip(r, s)) for r, s in zip(x, y))


def writer(dsn, seed, names, stop, errors):
    """Random writes for a small pool of users, so that sessions collide on the same rows."""
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as c:
        while not stop.is_set():
            exp, user = rng.choice(names), f"user-{rng.randrange(40)}"
            kind = rng.random()
            try:
                if kind < 0.6:
                    c.execute("SELECT ab_get_variant(%s, %s)", (exp, user))
                    metric = rng.choice(list(METRICS))
                    c.execute("SELECT ab_record_result(%s, %s, %s, %s)", (exp, metric, value_for(metric, rng), user))
                else:
                    # A transaction of several results for several users, committed or rolled back,
                    # sometimes at REPEATABLE READ.
                    with c.transaction() as tx:
                        if kind > 0.9:
                            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        for _ in range(rng.randrange(1, 5)):
                            u = f"user-{rng.randrange(40)}"
                            metric = rng.choice(list(METRICS))
                            c.execute("SELECT ab_get_variant(%s, %s)", (exp, u))
                            c.execute("SELECT ab_record_result(%s, %s, %s, %s)", (exp, metric, value_for(metric, rng), u))
                        if rng.random() < 0.3:
                            raise psycopg.Rollback(tx)
            except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected,
                    psycopg.errors.UndefinedObject) as e:
                # Documented outcomes of concurrency (a REPEATABLE READ transaction recording for a
                # user whose state another transaction changed; retry) and of a deleted experiment.
                errors.append(type(e).__name__)


@pytest.mark.citus
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_state_equals_the_raw_results_after_random_histories(seed):
    db = fresh_db("ab_user_metrics")
    rng = random.Random(seed)
    names = [f"history {seed}-{i}" for i in range(3)]
    with psycopg.connect(db, autocommit=True) as c:
        for name in names:
            one(c, "SELECT ab_create_experiment(%s)", Jsonb(definition(name, rng)))
            one(c, "SELECT ab_start_experiment(%s)", name)
    stop, errors = threading.Event(), []
    threads = [threading.Thread(target=writer, args=(db, seed * 10 + k, names, stop, errors)) for k in range(3)]
    [t.start() for t in threads]
    with psycopg.connect(db, autocommit=True) as c:
        # Experiments deleted and created while the writers run.
        for round_ in range(3):
            threading.Event().wait(0.7)
            victim = names[rng.randrange(len(names))]
            one(c, "SELECT ab_stop_experiment(%s)", victim)
            c.execute("SELECT ab_delete_experiment(%s)", (victim,))
            fresh = f"history {seed}-new-{round_}"
            one(c, "SELECT ab_create_experiment(%s)", Jsonb(definition(fresh, rng)))
            one(c, "SELECT ab_start_experiment(%s)", fresh)
            names[names.index(victim)] = fresh
        # Until every experiment still running has results (a slower cluster may need longer).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            threading.Event().wait(0.7)
            if one(c, "SELECT count(DISTINCT m.experiment_id) FROM ab_user_metrics m JOIN ab_experiments e "
                      "ON e.id = m.experiment_id WHERE e.name = ANY(%s)", list(names)) == len(names):
                break
    stop.set()
    [t.join() for t in threads]

    with psycopg.connect(db, autocommit=True) as c:
        assert one(c, "SELECT count(*) FROM ab_user_metrics") > 50
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
        # Nothing of the deleted experiments is left.
        assert one(c, "SELECT count(*) FROM ab_user_metrics m WHERE NOT EXISTS "
                      "(SELECT 1 FROM ab_experiments e WHERE e.id = m.experiment_id)") == 0
        for name in names:
            from_state = c.execute("SELECT * FROM ab_analyze(%s)", (name,)).fetchall()
            assert from_state and any(r[3] > 0 for r in from_state)
            if not CITUS:
                # The same analysis from the raw results: the library reads ab_results when the
                # schema has no ab_user_metrics (as before ALTER EXTENSION UPDATE).
                with c.transaction(force_rollback=True):
                    c.execute("ALTER TABLE ab_user_metrics RENAME TO ab_user_metrics_hidden")
                    from_raw = c.execute("SELECT * FROM ab_analyze(%s)", (name,)).fetchall()
                assert same_analysis(from_state, from_raw), (from_state, from_raw)
            exp = one(c, "SELECT id FROM ab_experiments WHERE name = %s", name)
            rows = one(c, "SELECT count(*) FROM ab_user_metrics WHERE experiment_id = %s", exp)
            with c.transaction(force_rollback=True):
                one(c, "SELECT ab_stop_experiment(%s)", name)
                assert one(c, "SELECT ab_rebuild_user_metrics(%s)", name) == rows
                assert same_analysis(from_state, c.execute("SELECT * FROM ab_analyze(%s)", (name,)).fetchall())
    drop_db("ab_user_metrics")


def started(c, name):
    exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(definition(name, random.Random(0))))
    one(c, "SELECT ab_start_experiment(%s)", exp)
    for u in ("a", "b"):
        c.execute("SELECT ab_get_variant(%s, %s)", (exp, u))
    return exp


def test_same_user_concurrently_and_crossed_transactions():
    """Two transactions recording the same metric for the same user update one state row: at
    READ COMMITTED the later waits and adds to it; at REPEATABLE READ the later fails with
    40001; transactions recording for two users in opposite orders deadlock (40P01) like any
    crossed updates; the survivors' results count."""
    dsn = fresh_db("ab_user_metrics")
    with psycopg.connect(dsn, autocommit=True) as c:
        exp = started(c, "same user")
    with psycopg.connect(dsn) as s1, psycopg.connect(dsn) as s2:
        # READ COMMITTED: the later waits for the earlier's commit, then adds to it.
        s1.execute("SELECT ab_record_result(%s, 'latency', 10, 'b')", (exp,))
        later = threading.Thread(target=lambda: (s2.execute("SELECT ab_record_result(%s, 'latency', 20, 'b')", (exp,)),
                                                 s2.commit()))
        later.start()
        threading.Event().wait(0.5)
        assert later.is_alive()
        s1.commit()
        later.join(timeout=10)
        assert not later.is_alive()
        assert s1.execute("SELECT n, total FROM ab_user_metrics WHERE experiment_id = %s AND user_id = 'b'",
                          (exp,)).fetchall() == [(2, 30.0)]
        s1.rollback()

        s1.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        s2.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        s2.execute("SELECT 1")  # its snapshot predates s1's commit
        s1.execute("SELECT ab_record_result(%s, 'latency', 2, 'a')", (exp,))
        s1.commit()
        with pytest.raises(psycopg.errors.SerializationFailure, match="could not serialize access due to concurrent update"):
            s2.execute("SELECT ab_record_result(%s, 'latency', 3, 'a')", (exp,))
        s2.rollback()
        s2.execute("SELECT ab_record_result(%s, 'latency', 3, 'a')", (exp,))  # the retry
        s2.commit()

        outcome = []

        def second(conn, user):
            try:
                conn.execute("SELECT ab_record_result(%s, 'latency', 1, %s)", (exp, user))
                conn.commit()
                outcome.append("committed")
            except psycopg.errors.DeadlockDetected:
                conn.rollback()
                outcome.append("deadlock")

        s1.execute("SELECT ab_record_result(%s, 'latency', 1, 'a')", (exp,))
        s2.execute("SELECT ab_record_result(%s, 'latency', 1, 'b')", (exp,))
        t = threading.Thread(target=second, args=(s1, "b"))
        t.start()
        threading.Event().wait(0.3)
        second(s2, "a")
        t.join()
        assert sorted(outcome) == ["committed", "deadlock"]
    with psycopg.connect(dsn, autocommit=True) as c:
        # Whichever transaction survived, it recorded 1 for each of the two users.
        assert c.execute("SELECT user_id, n, total FROM ab_user_metrics WHERE experiment_id = %s ORDER BY 1",
                         (exp,)).fetchall() == [("a", 3, 6.0), ("b", 3, 31.0)]
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []


def test_results_update_the_state_in_place():
    """A user's later results update their state row, HOT (no new index entry), also on a page
    the first results of other users filled: ab_user_metrics keeps room on each page."""
    dsn = fresh_db("ab_user_metrics")
    counts = ("SELECT pg_stat_get_xact_tuples_inserted(o), pg_stat_get_xact_tuples_updated(o), "
              "pg_stat_get_xact_tuples_hot_updated(o) FROM (SELECT 'ab_user_metrics'::regclass AS o) r")
    with psycopg.connect(dsn, autocommit=True) as c:
        assert one(c, "SELECT reloptions FROM pg_class WHERE oid = 'ab_user_metrics'::regclass") == ["fillfactor=90"]
        exp = started(c, "in place")
        c.execute("SELECT count(ab_get_variant(%s, 'u' || g)) FROM generate_series(1, 300) g", (exp,))
        # 300 first results: more rows than a page holds, the first page filled to the fillfactor.
        c.execute("SELECT count(ab_record_result(%s, 'latency', 1, 'u' || g)) FROM generate_series(1, 300) g", (exp,))
        assert one(c, "SELECT count(DISTINCT (ctid::text::point)[0]) FROM ab_user_metrics") > 1
        first_page = one(c, "SELECT user_id FROM ab_user_metrics ORDER BY ctid LIMIT 1")
        with c.transaction():
            before = c.execute(counts).fetchone()
            assert one(c, "SELECT ab_record_result(%s, 'latency', 5, %s)", exp, first_page) is True
            after = c.execute(counts).fetchone()
        # (inserted, updated, HOT-updated): one update, HOT, and no insert attempt.
        assert tuple(a - b for a, b in zip(after, before)) == (0, 1, 1)
        assert c.execute("SELECT n, total, max FROM ab_user_metrics WHERE user_id = %s",
                         (first_page,)).fetchall() == [(2, 6.0, 5.0)]
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
    drop_db("ab_user_metrics")


@pytest.mark.citus
def test_rebuild_errors():
    dsn = fresh_db("ab_user_metrics")
    with psycopg.connect(dsn, autocommit=True) as c:
        exp = started(c, "rebuilt")
        c.execute("SELECT ab_record_result(%s, 'latency', 5, 'a')", (exp,))
        with pytest.raises(psycopg.errors.NullValueNotAllowed, match="experiment must not be NULL"):
            c.execute("SELECT ab_rebuild_user_metrics(NULL::text)")
        with pytest.raises(psycopg.errors.UndefinedObject, match='experiment "rebuild" does not exist'):
            c.execute("SELECT ab_rebuild_user_metrics('rebuild')")
        with c.transaction(force_rollback=True):
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            with pytest.raises(psycopg.errors.ActiveSqlTransaction, match="runs only in a READ COMMITTED transaction"):
                c.execute("SELECT ab_rebuild_user_metrics(%s)", (exp,))
        if CITUS:
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is running"):
                c.execute("SELECT ab_rebuild_user_metrics(%s)", (exp,))
            one(c, "SELECT ab_stop_experiment(%s)", exp)
        # A result written past ab_record_result is counted once rebuilt.
        c.execute("INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                  "SELECT experiment_id, variant_id, user_id, 'latency', 7 FROM ab_assignments "
                  "WHERE experiment_id = %s AND user_id = 'a'", (exp,))
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() != []
        latency = "SELECT sum(mean) FROM ab_analyze(%s) WHERE metric_name = 'latency'"
        assert one(c, latency, exp) == 5.0
        assert one(c, "SELECT ab_rebuild_user_metrics(%s)", exp) == 1
        assert one(c, latency, exp) == 6.0
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
        assert c.execute("SELECT n, total, max FROM ab_user_metrics WHERE experiment_id = %s", (exp,)).fetchall() == \
            [(2, 12.0, 7.0)]
    drop_db("ab_user_metrics")


def test_rebuild_waits_for_writers_and_holds_new_ones():
    """ab_rebuild_user_metrics waits for a transaction still recording for the experiment, then
    counts its result; a writer that comes during the rebuild waits for it."""
    dsn = fresh_db("ab_user_metrics")
    with psycopg.connect(dsn, autocommit=True) as c:
        exp = started(c, "rebuild waits")
    with psycopg.connect(dsn) as writer, psycopg.connect(dsn) as rebuilder, psycopg.connect(dsn) as late:
        writer.execute("SELECT ab_record_result(%s, 'latency', 4, 'a')", (exp,))
        done = []
        t = threading.Thread(target=lambda: done.append(
            one(rebuilder, "SELECT ab_rebuild_user_metrics(%s)", exp)))
        t.start()
        threading.Event().wait(0.5)
        assert not done  # waiting for the writer
        writer.commit()
        t.join(timeout=10)
        assert done == [1]
        # The rebuild has not committed: a new writer waits for it.
        w = threading.Thread(target=lambda: (late.execute("SELECT ab_record_result(%s, 'latency', 6, 'a')", (exp,)),
                                             late.commit()))
        w.start()
        threading.Event().wait(0.5)
        assert w.is_alive()
        rebuilder.commit()
        w.join(timeout=10)
        assert not w.is_alive()
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT n, total FROM ab_user_metrics WHERE experiment_id = %s", (exp,)).fetchall() == [(2, 10.0)]
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
    drop_db("ab_user_metrics")


def bulk_writer(dsn, seed, exp, users, stop, errors, recorded):
    """Batches of random rows (assigned and unassigned users, in random order), committed,
    rolled back, or failing on a bad row; counts what the committed ones recorded."""
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as c:
        while not stop.is_set():
            rows = [(rng.choice(list(METRICS)), rng.choice(users)) for _ in range(rng.randrange(1, 300))]
            names = [m for m, _ in rows]
            values = [value_for(m, rng) for m, _ in rows]
            who = [u for _, u in rows]
            bad = rng.random() < 0.15
            if bad:
                values[rng.randrange(len(values))] = float("nan")
            try:
                with c.transaction() as tx:
                    n = one(c, "SELECT ab_record_results(%s, %s, %s, %s)", exp, names, values, who)
                    if rng.random() < 0.2:
                        raise psycopg.Rollback(tx)
                    recorded.append(n)
                assert not bad
            except psycopg.errors.InvalidParameterValue as e:
                assert bad and "metric_value is NaN" in str(e), e
            except Exception as e:  # noqa: BLE001 - reported by the test
                errors.append(repr(e))


def private_memory_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024


def test_a_large_batch_hands_its_memory_back():
    """What a batch allocated is freed when it ends; glibc's heap kept it (647 MB in a backend
    after 200k rows of distinct 512-byte ids) until the batch told it to hand it back."""
    db = fresh_db("ab_user_metrics")
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "large batch")
        c.execute("SELECT count(ab_get_variant(%s, rpad('u' || g, 512, 'x'))) FROM generate_series(1, 20000) g", (exp,))
    with psycopg.connect(db, autocommit=True) as c:
        pid = one(c, "SELECT pg_backend_pid()")
        if not os.path.exists(f"/proc/{pid}/status"):
            pytest.skip("the server runs on another machine")
        before = private_memory_mib(pid)
        recorded = one(c, "SELECT ab_record_results(%s, array_fill('conversion_rate'::text, ARRAY[100000]), "
                          "array_agg((g %% 2)::float8), array_agg(rpad('u' || g, 512, 'x'))) "
                          "FROM generate_series(1, 100000) g", exp)
        assert recorded == one(c, "SELECT count(*) FROM ab_assignments WHERE experiment_id = %s AND length(user_id) = 512", exp) > 10000
        kept = private_memory_mib(pid) - before
        assert kept < 64, f"the backend kept {kept:.0f} MiB after the batch"
    drop_db("ab_user_metrics")


@pytest.mark.citus
def test_bulk_batches_keep_the_state_exact():
    """ab_record_results batches running alongside single ab_record_result calls for the same
    users, some rolled back, some failing on a bad row: the per-user state equals the raw
    results, the results are exactly what the committed batches reported, and no two batches
    deadlock (each locks state rows in the order of metric and user)."""
    db = fresh_db("ab_user_metrics")
    users = [f"user-{i}" for i in range(60)]
    with psycopg.connect(db, autocommit=True) as c:
        exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(definition("bulk history", random.Random(7))))
        one(c, "SELECT ab_start_experiment(%s)", exp)
        for u in users[:45]:  # the others are never assigned: their rows are skipped
            c.execute("SELECT ab_get_variant(%s, %s)", (exp, u))
    stop, errors, recorded = threading.Event(), [], []
    singles = []

    def single_writer():
        rng = random.Random(99)
        with psycopg.connect(db, autocommit=True) as c:
            while not stop.is_set():
                metric = rng.choice(list(METRICS))
                if one(c, "SELECT ab_record_result(%s, %s, %s, %s)", exp, metric, value_for(metric, rng),
                       rng.choice(users)):
                    singles.append(1)

    threads = [threading.Thread(target=bulk_writer, args=(db, k, exp, users, stop, errors, recorded)) for k in range(3)]
    threads.append(threading.Thread(target=single_writer))
    [t.start() for t in threads]
    threading.Event().wait(6)
    stop.set()
    [t.join() for t in threads]
    assert errors == []
    assert sum(recorded) > 1000
    with psycopg.connect(db, autocommit=True) as c:
        assert one(c, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == sum(recorded) + len(singles)
        assert one(c, "SELECT count(*) FROM ab_results WHERE experiment_id = %s AND user_id <> ALL(%s)",
                   exp, users[:45]) == 0
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
        rows = one(c, "SELECT count(*) FROM ab_user_metrics WHERE experiment_id = %s", exp)
        with c.transaction(force_rollback=True):
            one(c, "SELECT ab_stop_experiment(%s)", exp)
            assert one(c, "SELECT ab_rebuild_user_metrics(%s)", exp) == rows
            assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
    drop_db("ab_user_metrics")


def test_a_batch_adds_to_the_state_rows_a_writer_inserted_while_it_ran():
    """A batch whose state rows do not exist yet inserts them without the upsert. When a
    writer inserts one of them first (here uncommitted), the batch waits for it, undoes its
    insert when the writer commits, and adds its rows to the writer's."""
    db = fresh_db("ab_user_metrics")
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "racing batch")
        c.execute("SELECT count(ab_get_variant(%s, 'u' || g)) FROM generate_series(1, 50) g", (exp,))
    batch_sql = ("SELECT ab_record_results(%s, array_fill('latency'::text, ARRAY[50]), array_agg(g::float8), "
                 "array_agg('u' || g)) FROM generate_series(1, 50) g")
    with psycopg.connect(db) as writer, psycopg.connect(db, autocommit=True) as batch, \
            psycopg.connect(db, autocommit=True) as watch:
        assert one(writer, "SELECT ab_record_result(%s, 'latency', 5, 'u30')", exp)
        pid = one(batch, "SELECT pg_backend_pid()")
        out, failed = [], []

        def run():
            try:
                out.append(one(batch, batch_sql, exp))
            except Exception as e:  # noqa: BLE001 - reported by the test
                failed.append(repr(e))

        t = threading.Thread(target=run)
        t.start()
        for _ in range(200):
            if one(watch, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", pid) == "Lock":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the batch did not wait for the writer's state row")
        writer.commit()
        t.join(timeout=10)
    assert failed == [] and out == [50]
    with psycopg.connect(db, autocommit=True) as c:
        assert c.execute("SELECT n, total, max FROM ab_user_metrics WHERE experiment_id = %s AND user_id = 'u30'",
                         (exp,)).fetchall() == [(2, 35.0, 30.0)]
        assert one(c, "SELECT count(*) FROM ab_user_metrics WHERE experiment_id = %s", exp) == 50
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
    drop_db("ab_user_metrics")


def test_many_batches_in_one_transaction_take_a_bounded_number_of_subtransactions():
    """Each batch of new users inserts its state rows in a subtransaction. Past 64 in one
    transaction every snapshot in the cluster looks them up in pg_subtrans: from the 32nd on,
    batches in the same transaction upsert instead. The state stays exact."""
    db = fresh_db("ab_user_metrics")
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "many batches")
        c.execute("SELECT count(ab_get_variant(%s, 'm' || g)) FROM generate_series(1, 500) g", (exp,))
        assigned = [u for (u,) in c.execute("SELECT user_id FROM ab_assignments WHERE experiment_id = %s "
                                            "AND user_id LIKE 'm%%' ORDER BY user_id", (exp,)).fetchall()][:400]
    with psycopg.connect(db) as c:
        for b in range(40):
            users = assigned[b * 10:b * 10 + 10]
            assert one(c, "SELECT ab_record_results(%s, %s, %s, %s)", exp, ["latency"] * 10, [1.0] * 10, users) == 10
        subtransactions = one(c, "SELECT count(DISTINCT xmin::text) FROM ab_user_metrics WHERE experiment_id = %s "
                                 "AND xmin::text::bigint <> pg_current_xact_id()::text::bigint %% 4294967296", exp)
        c.commit()
    assert subtransactions == 32
    with psycopg.connect(db, autocommit=True) as c:
        assert one(c, "SELECT count(*) FROM ab_user_metrics WHERE experiment_id = %s AND metric_name = 'latency'",
                   exp) == 400
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
    drop_db("ab_user_metrics")


def test_overlapping_batches_of_new_users_keep_the_state_exact():
    """Batches of users with no state yet, each overlapping the next, run by three sessions at
    the same moments (some rolled back): whichever inserts a shared state row first, the others add to
    it; no batch fails or deadlocks, and the state equals the raw results."""
    db = fresh_db("ab_user_metrics")
    users = [f"n{i}" for i in range(700 * 30 + 300)]
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "overlapping batches")
        c.execute("SELECT count(ab_get_variant(%s, u)) FROM unnest(%s::text[]) u", (exp, users))
    errors, recorded = [], []
    together = threading.Barrier(3)

    def writer(w):
        rng = random.Random(w)
        with psycopg.connect(db, autocommit=True) as c:
            for i in range(w, 30, 3):
                together.wait(timeout=30)
                chunk = users[i * 700:i * 700 + 1000]
                metrics = [rng.choice(["latency", "conversion_rate"]) for _ in chunk]
                values = [value_for(m, rng) for m in metrics]
                try:
                    with c.transaction() as tx:
                        n = one(c, "SELECT ab_record_results(%s, %s, %s, %s)", exp, metrics, values, chunk)
                        if rng.random() < 0.2:
                            raise psycopg.Rollback(tx)
                        recorded.append(n)
                except Exception as e:  # noqa: BLE001 - reported by the test
                    errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    with psycopg.connect(db, autocommit=True) as c:
        assert one(c, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == sum(recorded) > 10000
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
    drop_db("ab_user_metrics")


@pytest.mark.citus
def test_a_bulk_batch_and_a_delete_wait_for_each_other():
    """ab_record_results takes the writers' lock: a delete in progress makes it wait, and once
    the delete commits the batch fails (42704) with nothing recorded; a delete waits for a
    batch in progress and then deletes what it recorded."""
    db = fresh_db("ab_user_metrics")
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "bulk delete")
    with psycopg.connect(db) as deleter, psycopg.connect(db, autocommit=True) as app:
        one(deleter, "SELECT ab_stop_experiment(%s)", exp)
        deleter.execute("SELECT ab_delete_experiment(%s)", (exp,))
        outcome = []

        def batch():
            try:
                outcome.append(one(app, "SELECT ab_record_results(%s, %s, %s, %s)", exp, ["latency"], [1.0], ["a"]))
            except psycopg.Error as e:
                outcome.append((e.sqlstate, str(e).splitlines()[0]))

        t = threading.Thread(target=batch)
        t.start()
        threading.Event().wait(0.5)
        assert t.is_alive()
        deleter.commit()
        t.join(timeout=10)
        assert outcome and outcome[0][0] == "42704", outcome
        assert one(app, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == 0
    # The other way round: a delete waits for a batch in progress, then deletes its results.
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "bulk then delete")
    with psycopg.connect(db) as app, psycopg.connect(db, autocommit=True) as admin:
        assert one(app, "SELECT ab_record_results(%s, %s, %s, %s)", exp, ["latency", "latency"], [1.0, 2.0],
                   ["a", "b"]) == 2
        one(admin, "SELECT ab_stop_experiment(%s)", exp)
        deleted = threading.Thread(target=lambda: admin.execute("SELECT ab_delete_experiment(%s)", (exp,)))
        deleted.start()
        threading.Event().wait(0.5)
        assert deleted.is_alive()
        app.commit()
        deleted.join(timeout=10)
        assert not deleted.is_alive()
        assert one(admin, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == 0
        assert one(admin, "SELECT count(*) FROM ab_user_metrics WHERE experiment_id = %s", exp) == 0
    drop_db("ab_user_metrics")


def test_a_result_without_a_time_is_never_dated_before_its_users_assignment():
    """A batch, and a single call, in a transaction that began before the user was assigned (by
    another session): the row's time is the assignment's, not the transaction's start."""
    db = fresh_db("ab_user_metrics")
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "bulk late user")
    for call in ("SELECT ab_record_results(%s, ARRAY['latency'], ARRAY[1.0]::float8[], ARRAY[%s])",
                 "SELECT ab_record_result(%s, 'latency', 1.0, %s)::int"):
        with psycopg.connect(db) as app, psycopg.connect(db, autocommit=True) as other:
            began = one(app, "SELECT now()")
            threading.Event().wait(0.05)
            user = next(u for u in (f"late-{i}" for i in range(200))
                        if one(other, "SELECT ab_get_variant(%s, %s) IS NOT NULL AND NOT EXISTS "
                                      "(SELECT FROM ab_results WHERE experiment_id = %s AND user_id = %s)", exp, u, exp, u))
            assert one(app, call, exp, user) == 1
            app.commit()
            recorded, assigned = app.execute(
                "SELECT r.recorded_at, a.assigned_at FROM ab_results r JOIN ab_assignments a USING (experiment_id, user_id) "
                "WHERE r.experiment_id = %s AND r.user_id = %s", (exp, user)).fetchone()
        assert began < assigned <= recorded, call
