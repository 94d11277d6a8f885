"""Safe rollouts (allocation mode "rollout"): a rollback is seen by the very next
ab_get_variant of every session; the error paths and their SQLSTATEs; the 0.14.0 library on a
0.13.0 schema; and a simulation through SQL of the guardrail checks (harmful change rolled
back, A/A rarely) with the delay from a rollback's commit to the first control answer under
load."""

import random
import statistics
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import conninfo
from test_operations import drop_db, fresh_db


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


def sqlstate_of(conn, sql, args=()):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql, args)
    return e.value.sqlstate, str(e.value).splitlines()[0]


def rollout(name, salt=None, steps=(5, 25, 50, 100), step_every="1 hour", margin=0.25, alpha=0.05):
    return {"name": name, "experiment_type": "model", "primary_metric": "latency", "salt": salt or name,
            "alpha": alpha,
            "metrics": {"latency": {"direction": "lower", "margin": margin}},
            "allocation": {"mode": "rollout", "steps": list(steps), "step_every": step_every},
            "variants": [{"name": "old", "is_control": True, "traffic_allocation": 50, "config": {"model": "old"}},
                         {"name": "new", "traffic_allocation": 50, "config": {"model": "new"}}]}


def start(conn, body):
    exp = one(conn, "SELECT ab_create_experiment(%s)", Jsonb(body))
    one(conn, "SELECT ab_start_experiment(%s)", exp)
    return exp


def cleanup(conn, name):
    conn.execute("SELECT ab_stop_experiment(%s)", (name,))
    conn.execute("SELECT ab_delete_experiment(%s)", (name,))


def users_of(conn, name, variant, count):
    """`count` users assigned `variant`, enrolling new ones as needed."""
    found, i = [], 0
    while len(found) < count:
        batch = [f"{name}-{j}" for j in range(i, i + 200)]
        i += 200
        rows = conn.execute(
            "SELECT u, ab_get_variant(%s, u) ->> 'variant' FROM unnest(%s::text[]) u", (name, batch)).fetchall()
        found += [u for u, v in rows if v == variant]
    return found[:count]


@pytest.mark.citus
def test_rollback_is_seen_by_the_next_call_of_every_session(dsn, conn):
    name = "next call rollout"
    start(conn, rollout(name, steps=(50, 100)))
    treated = users_of(conn, name, "new", 3)
    sessions = [psycopg.connect(dsn, autocommit=True) for _ in range(3)]
    try:
        # Every session has the definition cached and serves the new config.
        for s in sessions:
            assert [one(s, "SELECT ab_get_variant(%s, %s) ->> 'variant'", name, u) for u in treated] == ["new"] * 3
        # An uncommitted rollback is seen by no one; rolled back (the transaction), nothing changed.
        with psycopg.connect(dsn) as pending:
            pending.execute("SELECT ab_rollback(%s, 'not yet')", (name,))
            assert one(sessions[0], "SELECT ab_get_variant(%s, %s) ->> 'variant'", name, treated[0]) == "new"
            pending.rollback()
        assert one(sessions[1], "SELECT ab_get_variant(%s, %s) ->> 'variant'", name, treated[0]) == "new"
        # Committed: the very next call of each session returns the control's config, to
        # users assigned the new variant too; their assignments are unchanged.
        one(conn, "SELECT ab_rollback(%s, 'latency complaints')", name)
        for s in sessions:
            assert [one(s, "SELECT ab_get_variant(%s, %s)", name, u) for u in treated] == \
                [{"variant": "old", "is_control": True, "config": {"model": "old"}}] * 3
        assert {r[0] for r in conn.execute(
            "SELECT v.name FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id "
            "WHERE a.user_id = ANY(%s)", (treated,))} == {"new"}
        # In an open transaction of another session, the next statement sees it too.
        with psycopg.connect(dsn) as open_tx:
            assert one(open_tx, "SELECT ab_get_variant(%s, %s) ->> 'variant'", name, treated[0]) == "old"
            one(conn, "SELECT ab_resume(%s)", name)
            assert one(open_tx, "SELECT ab_get_variant(%s, %s) ->> 'variant'", name, treated[0]) == "new"
        for s in sessions:
            assert one(s, "SELECT ab_get_variant(%s, %s) ->> 'variant'", name, treated[1]) == "new"
        audit = [r[0] for r in conn.execute(
            "SELECT action FROM ab_audit WHERE experiment_name = %s ORDER BY id", (name,))]
        assert audit == ["created", "started", "rolled_back", "resumed"]
    finally:
        for s in sessions:
            s.close()
        cleanup(conn, name)


@pytest.mark.parametrize("sql, args, state, message", [
    ("SELECT ab_create_experiment(%s)", (Jsonb(rollout("bad", steps=(50, 25, 100))),), "22023",
     "steps are [50, 25, 100]: each step must be larger than the one before"),
    ("SELECT ab_create_experiment(%s)", (Jsonb(rollout("bad", steps=(5, 50))),), "22023",
     "steps are [5, 50]: the last step is 100"),
    ("SELECT ab_create_experiment(%s)", (Jsonb({**rollout("bad"), "allocation": {"mode": "rollout", "steps": [5, 100],
                                                                                  "min_share": 5}}),), "22023",
     'metric, update_every, min_share and burn_in_users are for allocation mode "bandit", not "rollout"'),
    ("SELECT ab_rollback('errors rollout', ' ')", (), "22023", "reason must be between 1 and 1000 bytes of text"),
    ("SELECT ab_rollback('errors rollout', NULL)", (), "22004", "reason must not be NULL"),
    ("SELECT ab_rollback('no such', 'x')", (), "42704", 'experiment "no such" does not exist'),
    ("SELECT ab_resume('errors rollout')", (), "55000", 'rollout "errors rollout" is ramping, not rolled back'),
    ("SELECT ab_rollback('errors fixed', 'x')", (), "55000", 'experiment "errors fixed" is not a rollout'),
    ("SELECT * FROM ab_rollout_check('errors draft')", (), "55000",
     'experiment "errors draft" is not running (status draft)'),
    ("SELECT ab_rollout_to('errors rollout', 5)", (), "22023",
     'rollout "errors rollout": share is 5, must be above the current 5 and at most 100, with at most two decimals'),
    ("SELECT ab_rollout_to('errors rollout', 100.5)", (), "22023", 'rollout "errors rollout": share is 100.5'),
    ("SELECT ab_rollout_to('errors rollout', 'NaN')", (), "22023", 'rollout "errors rollout": share is NaN'),
    ("SELECT ab_rollout_to('errors rollout', NULL)", (), "22004", "share must not be NULL"),
    ("SELECT ab_rollout_to('errors fixed', 50)", (), "55000", 'experiment "errors fixed" is not a rollout'),
])
def test_errors(conn, sql, args, state, message):
    start(conn, rollout("errors rollout"))
    body = rollout("errors fixed")
    del body["allocation"]
    start(conn, body)
    one(conn, "SELECT ab_create_experiment(%s)", Jsonb(rollout("errors draft")))
    before = conn.execute("SELECT name, allocation, (SELECT count(*) FROM ab_audit) FROM ab_experiments "
                          "ORDER BY name").fetchall()
    try:
        got_state, got = sqlstate_of(conn, sql, args)
        assert got_state == state and got.startswith(message), got
        # Nothing changed.
        assert conn.execute("SELECT name, allocation, (SELECT count(*) FROM ab_audit) FROM ab_experiments "
                            "ORDER BY name").fetchall() == before
    finally:
        cleanup(conn, "errors rollout")
        cleanup(conn, "errors fixed")
        conn.execute("SELECT ab_delete_experiment('errors draft')")


def test_new_library_on_a_0_13_0_schema_refuses_rollouts_until_the_update():
    """The 0.14.0 library on a database still at 0.13.0: a rollout is refused (55000), every
    other experiment works; after ALTER EXTENSION UPDATE the rollout is created."""
    db = fresh_db("ab_old_rollouts", "0.13.0")
    with psycopg.connect(db, autocommit=True) as c:
        body = rollout("old schema")
        assert sqlstate_of(c, "SELECT ab_create_experiment(%s)", (Jsonb(body),)) == (
            "55000", "rollouts need version 0.14.0 of the ab_testing schema")
        assert one(c, "SELECT count(*) FROM ab_experiments") == 0
        fixed = dict(body, name="fixed on old")
        del fixed["allocation"]
        start(c, fixed)
        assert one(c, "SELECT ab_get_variant('fixed on old', 'u1') ->> 'variant'") in ("old", "new")
        c.execute("ALTER EXTENSION ab_testing UPDATE")
        start(c, body)
        assert one(c, "SELECT ab_rollback('old schema', 'checking the update') ->> 'state'") == "rolled_back"
    drop_db("ab_old_rollouts")


def simulate(conn, name, harm, rng, checks=20, users_per_check=300, margin=0.25):
    """One rollout through SQL: before each check `users_per_check` new users ask for a
    variant and record a latency (sd 1; the new variant's is `harm` higher); a step becomes due
    every checks/4 checks. Returns the check that rolled back, or None."""
    start(conn, rollout(name, salt=f"sim-{name}", margin=margin))
    per_step = checks // 4
    try:
        for k in range(checks):
            users = [f"{name}-{k}-{i}" for i in range(users_per_check)]
            rows = conn.execute("SELECT u, ab_get_variant(%s, u) ->> 'variant' FROM unnest(%s::text[]) u",
                                (name, users)).fetchall()
            values = [rng.gauss(harm if v == "new" else 0.0, 1.0) for _, v in rows]
            conn.execute("SELECT ab_record_results(%s, %s, %s, %s)",
                         (name, ["latency"] * len(rows), values, [u for u, _ in rows]))
            if (k + 1) % per_step == 0:
                conn.execute("UPDATE ab_allocations SET started_at = started_at - interval '2 hours' "
                             "WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = %s)", (name,))
            with conn.transaction():
                action = one(conn, "SELECT action FROM ab_rollout_check(%s)", name)
                # The check turns nested loops off for its join, and back on: the planner's
                # statistics rarely show a young rollout's rows, and a nested loop is quadratic.
                assert one(conn, "SHOW enable_nestloop") == "on"
            if action == "rolled_back":
                return k + 1
            if action == "completed":
                return None
        return None
    finally:
        cleanup(conn, name)


RUNS = 40


def test_simulation_harmful_rolled_back_harmless_rarely(conn):
    """Through SQL, 20 checks of 300 new users each (steps 5, 25, 50, 100%): a change worse by
    twice its margin (0.5 sd; margin 0.25 sd) is rolled back within 15 checks in at least 95%
    of 40 runs; an A/A change is rolled back in at most 6 of 40 runs (alpha 0.05: 2 expected,
    P(7 or more) < 0.005 under the binomial)."""
    rng = random.Random(29)
    harmful = [simulate(conn, f"harm{i}", 0.5, rng) for i in range(RUNS)]
    caught = sorted(c for c in harmful if c is not None)
    print(f"harmful: rolled back in {len(caught)} of 40 runs, checks {caught}")
    within = sum(1 for c in caught if c <= 15)
    assert within >= 38, harmful
    aa = [simulate(conn, f"aa{i}", 0.0, rng) for i in range(RUNS)]
    false_alarms = sum(1 for c in aa if c is not None)
    print(f"A/A: rolled back in {false_alarms} of 40 runs")
    assert false_alarms <= 6, aa


def test_rollback_delay_under_load(dsn, conn):
    """Four sessions call ab_get_variant in a loop for users assigned the new variant while
    another commits ab_rollback: every call that starts after the commit returned returns the
    control, and the delay to each session's first control answer is about one call."""
    name = "delay rollout"
    start(conn, rollout(name, steps=(50, 100)))
    treated = users_of(conn, name, "new", 20)
    stop = threading.Event()
    logs = [[] for _ in range(4)]

    def worker(log, seed):
        r = random.Random(seed)
        with psycopg.connect(dsn, autocommit=True) as s:
            s.prepare_threshold = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                v = s.execute("SELECT ab_get_variant(%s, %s) ->> 'variant'", (name, r.choice(treated))).fetchone()[0]
                log.append((t0, time.perf_counter(), v))

    threads = [threading.Thread(target=worker, args=(logs[i], i)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        sent = time.perf_counter()
        conn.execute("SELECT ab_rollback(%s, 'delay measurement')", (name,))
        committed = time.perf_counter()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    delays, calls = [], []
    for log in logs:
        assert any(v == "new" for t0, _, v in log if t0 < committed - 0.1)
        after = [(t0, t1, v) for t0, t1, v in log if t0 >= committed]
        assert after and all(v == "old" for _, _, v in after), after[:5]
        first = min(t1 for t0, t1, v in log if v == "old")
        delays.append((first - committed) * 1000)
        calls.append(statistics.median((t1 - t0) * 1000 for t0, t1, _ in log))
    # Negative: a session answered with the control before the committing session had its reply.
    print(f"ab_rollback took {(committed - sent) * 1000:.2f} ms; from its reply to each session's first "
          f"control answer, ms: {[round(d, 2) for d in delays]}; "
          f"median call {statistics.median(calls):.2f} ms; calls {sum(len(l) for l in logs)}")
    # The first control answer comes within a call or two of the commit, not a cache period.
    assert max(delays) < 50, delays
    cleanup(conn, name)


def test_who_may_roll_back_and_read_the_decision(conn):
    """Administrators run the rollout functions with their own rights (ab_audit names them);
    an application role may not (42501) and changes nothing; analysts read the decisions in
    ab_audit and ab_allocations."""
    name = "roles rollout"
    start(conn, rollout(name, steps=(50, 100)))
    for role in ("ro_app", "ro_analyst", "ro_admin"):
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role}")
    conn.execute("SELECT ab_grant_app('ro_app'), ab_grant_analyst('ro_analyst'), ab_grant_admin('ro_admin')")
    try:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE ro_app")
            for sql in ("SELECT ab_rollback(%s, 'app')", "SELECT ab_resume(%s)", "SELECT ab_ship(%s)",
                        "SELECT ab_rollout_to(%s, 75)", "SELECT * FROM ab_rollout_check(%s)"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    with conn.transaction():
                        conn.execute(sql, (name,))
        assert one(conn, "SELECT allocation ->> 'state' FROM ab_experiments WHERE name = %s", name) == "ramping"
        with conn.transaction():
            conn.execute("SET LOCAL ROLE ro_admin")
            assert one(conn, "SELECT ab_rollback(%s, 'by an administrator') ->> 'state'", name) == "rolled_back"
        with conn.transaction():
            conn.execute("SET LOCAL ROLE ro_analyst")
            assert conn.execute(
                "SELECT role_name, detail ->> 'reason' FROM ab_audit WHERE experiment_name = %s "
                "AND action = 'rolled_back'", (name,)).fetchall() == [("ro_admin", "by an administrator")]
            assert one(conn, "SELECT posterior ->> 'reason' FROM ab_allocations WHERE experiment_id = "
                             "(SELECT id FROM ab_experiments WHERE name = %s) ORDER BY period DESC LIMIT 1",
                       name) == "by an administrator"
    finally:
        cleanup(conn, name)
        for role in ("ro_app", "ro_analyst", "ro_admin"):
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_a_flag_is_a_one_step_rollout_with_targeting(dsn, conn):
    """A feature flag: a rollout whose only step is 100 and no guardrail, with targeting as
    any experiment has. ab_rollback turns it off and ab_resume on, for every targeted user,
    from the next call of another session; users outside the targeting get NULL throughout."""
    name = "flag new checkout"
    body = rollout(name, steps=(100,))
    body["metrics"] = {"latency": {"direction": "lower"}}
    body["target_segments"] = {"country": ["US"]}
    start(conn, body)
    with psycopg.connect(dsn, autocommit=True) as app:
        def served(user, country):
            v = one(app, "SELECT ab_get_variant(%s, %s, %s)", name, user, Jsonb({"country": country}))
            return v and v["config"]["model"]
        try:
            assert [served(f"f{i}", "US") for i in range(20)] == ["new"] * 20
            assert served("outside", "FR") is None
            one(conn, "SELECT ab_rollback(%s, 'flag off')", name)
            assert [served(f"f{i}", "US") for i in range(25)] == ["old"] * 25
            assert served("outside", "FR") is None
            one(conn, "SELECT ab_resume(%s)", name)
            # Users first seen while it was off were assigned the control and keep it; the rest are on again.
            assert [served(f"f{i}", "US") for i in range(25)] == ["new"] * 20 + ["old"] * 5
            assert served("later", "US") == "new"
            # A flag has no guardrail (and at 100% the sample ratio carries no information): a
            # check never rolls it back; after step_every it completes, still on.
            assert conn.execute("SELECT action, share FROM ab_rollout_check(%s)", (name,)).fetchone() == ("none", 100.0)
        finally:
            cleanup(conn, name)


def test_a_percentage_flag_moves_up_by_hand_at_the_next_call(dsn, conn):
    """ab_rollout_to: a percentage flag at 10% goes to 50% and then 100% by hand, each seen by
    the next call of another session; users keep their variant (those given the new one
    stay on it), a lower share is refused, and each move is an audit row."""
    name = "flag percentage"
    body = rollout(name, steps=(10, 100), step_every="30 days")
    body["metrics"] = {"latency": {"direction": "lower"}}
    start(conn, body)
    with psycopg.connect(dsn, autocommit=True) as app:
        def shares(prefix, n=400):
            got = [one(app, "SELECT ab_get_variant(%s, %s) ->> 'variant'", name, f"{prefix}{i}") for i in range(n)]
            return got, got.count("new") / n
        try:
            first, share = shares("a")
            assert 0.05 < share < 0.15
            assert one(conn, "SELECT ab_rollout_to(%s, 50) ->> 'share'", name) == "50.0"
            again, _ = shares("a")
            assert again == first  # assigned users keep their variant
            _, share = shares("b")
            assert 0.42 < share < 0.58
            state, message = sqlstate_of(conn, "SELECT ab_rollout_to(%s, 25)", (name,))
            assert (state, message) == ("22023", f'rollout "{name}": share is 25, must be above the current 50 '
                                                 "and at most 100, with at most two decimals")
            assert one(conn, "SELECT ab_rollout_to(%s, 100) ->> 'state'", name) == "completed"
            _, share = shares("c")
            assert share == 1.0
            assert conn.execute("SELECT action, detail ->> 'to_share' FROM ab_audit WHERE experiment_name = %s "
                                "AND action IN ('stepped', 'shipped') ORDER BY id", (name,)).fetchall() == \
                [("stepped", "50.0"), ("shipped", "100.0")]
        finally:
            cleanup(conn, name)


def test_an_operator_on_the_callers_search_path_never_runs(conn):
    """Stepping, rolling back and checking resolve no operator through the caller's
    search_path: one planted in a schema ahead of pg_catalog's looser match is not called."""
    name = "planted operator"
    start(conn, rollout(name, steps=(10, 50, 100)))
    conn.execute("CREATE SCHEMA IF NOT EXISTS planted")
    conn.execute("CREATE TABLE IF NOT EXISTS planted.calls (n int)")
    conn.execute("CREATE OR REPLACE FUNCTION planted.minus(integer, float8) RETURNS float8 LANGUAGE sql "
                 "AS 'INSERT INTO planted.calls VALUES (1) RETURNING 0::float8'")
    conn.execute("DROP OPERATOR IF EXISTS planted.- (integer, float8)")
    conn.execute("CREATE OPERATOR planted.- (LEFTARG = integer, RIGHTARG = float8, FUNCTION = planted.minus)")
    try:
        conn.execute("SET search_path = planted, public")
        one(conn, "SELECT public.ab_rollout_to(%s, 50)", name)
        one(conn, "SELECT public.ab_rollback(%s, 'planted')", name)
        one(conn, "SELECT public.ab_resume(%s)", name)
        conn.execute("SELECT * FROM public.ab_rollout_due()")
        conn.execute("RESET search_path")
        assert one(conn, "SELECT count(*) FROM planted.calls") == 0
        assert one(conn, "SELECT traffic_allocation FROM ab_variants WHERE name = 'old' AND experiment_id = "
                         "(SELECT id FROM ab_experiments WHERE name = %s)", name) == 50
    finally:
        conn.execute("RESET search_path")
        conn.execute("DROP SCHEMA planted CASCADE")
        cleanup(conn, name)


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_rollback_holds_for_a_transaction_whose_snapshot_is_older(dsn, conn, isolation):
    """A transaction whose snapshot predates the rollback still sees the rollout ramping; its
    next ab_get_variant serves the control's config anyway, to an assigned user of the new
    variant and to a new user, who is assigned the control."""
    name = f"kill switch {isolation.lower()}"
    start(conn, rollout(name, steps=(50, 100)))
    user = users_of(conn, name, "new", 1)[0]
    with psycopg.connect(dsn) as app:
        app.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        assert one(app, "SELECT ab_get_variant(%s, %s) -> 'config' ->> 'model'", name, user) == "new"
        one(conn, "SELECT ab_rollback(%s, 'kill')", name)
        try:
            assert one(app, "SELECT ab_get_variant(%s, %s) -> 'config' ->> 'model'", name, user) == "old"
            assert one(app, "SELECT ab_get_variant(%s, 'after the rollback') -> 'config' ->> 'model'", name) == "old"
            app.commit()
            assert one(conn, "SELECT v.name FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id "
                             "WHERE a.user_id = 'after the rollback'") == "old"
        finally:
            cleanup(conn, name)


def test_a_cancel_stops_the_scheduled_check(dsn, conn):
    """statement_timeout (or pg_cancel_backend) stops ab_rollout_due as a whole, as it stops
    any statement, instead of becoming one rollout's failed row."""
    names = [f"cancelled {k}" for k in range(2)]
    for n in names:
        start(conn, rollout(n, steps=(50, 100), step_every="1 second"))
    import time
    time.sleep(1.1)
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT id FROM ab_experiments WHERE name = ANY(%s) FOR UPDATE", (names,))
        try:
            conn.execute("SET statement_timeout = '500ms'")
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT * FROM ab_rollout_due()")
        finally:
            conn.execute("RESET statement_timeout")
            holder.rollback()
    for n in names:
        cleanup(conn, n)
