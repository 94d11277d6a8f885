"""Bandit experiments through SQL: Thompson weights per period, users that never move, the
period-stratified analysis and the per-period sample ratio check, each checked against an
independent computation with scipy from the raw tables."""

import hashlib
import math

import psycopg
import pytest
from psycopg.types.json import Jsonb
from scipy import integrate, stats

RATES = {"A": 0.10, "B": 0.10, "C": 0.30}


def outcome(user, period):
    """A deterministic draw per user: C converts most, and everyone converts more later."""
    h = int(hashlib.sha256(user.encode()).hexdigest()[:8], 16) / 2**32
    variant_rate = RATES
    return lambda v: float(h < variant_rate[v] + 0.1 * period)


def create(conn, name, **allocation):
    conn.execute("SELECT ab_delete_experiment(%s) FROM ab_experiments WHERE name = %s AND status <> 'running'", (name, name))
    conn.execute(
        "SELECT ab_create_experiment(%s)",
        (Jsonb({"name": name, "experiment_type": "prompt", "primary_metric": "resolved", "min_sample_size": 20,
                "metrics": {"resolved": {"type": "binary"}}, "salt": name,
                "variants": [{"name": "A", "is_control": True, "traffic_allocation": 34},
                             {"name": "B", "traffic_allocation": 33}, {"name": "C", "traffic_allocation": 33}],
                "allocation": {"mode": "bandit", "update_every": "1 hour", "min_share": 5, **allocation}}),),
    )
    conn.execute("SELECT ab_start_experiment(%s)", (name,))


def enroll(conn, name, users, period):
    got = {}
    for u in users:
        v = conn.execute("SELECT ab_get_variant(%s, %s) ->> 'variant'", (name, u)).fetchone()[0]
        got[u] = v
        if v is not None:
            conn.execute("SELECT ab_record_result(%s, 'resolved', %s, %s)", (name, outcome(u, period)(v), u))
    return got


def sqlstate_of(conn, sql, args=()):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql, args)
    return e.value.sqlstate, str(e.value).splitlines()[0]


@pytest.mark.citus
def test_bandit_moves_traffic_keeps_users_and_analyses_by_period(conn):
    name = "bandit prompts"
    create(conn, name, burn_in_users=50)
    first = enroll(conn, name, [f"u{i}" for i in range(600)], 0)

    row = conn.execute("SELECT period, reweighted, detail FROM ab_reweight(%s)", (name,)).fetchone()
    assert row[:2] == (0, False) and row[2].startswith("not due: the weights may change every 1 hour")
    period, changed, weights, detail = conn.execute(
        "SELECT period, reweighted, weights, detail FROM ab_reweight(%s, force => true)", (name,)).fetchone()
    assert (period, changed) == (1, True), detail
    assert weights["C"] > 80 and weights["A"] >= 5 and weights["B"] >= 5
    assert math.isclose(sum(weights.values()), 100)
    # The weights are the chance of being best from the stored posterior (scipy's quadrature),
    # with each variant's 5% floor.
    post = conn.execute("SELECT posterior FROM ab_allocations a JOIN ab_experiments e ON e.id = a.experiment_id "
                        "WHERE e.name = %s AND period = 1", (name,)).fetchone()[0]
    for v in RATES:
        others = [post[o] for o in RATES if o != v]
        p = integrate.quad(lambda x: stats.norm.pdf(x, post[v]["mean"], post[v]["sd"])
                           * math.prod(stats.norm.cdf(x, o["mean"], o["sd"]) for o in others), -1, 2, limit=200)[0]
        assert math.isclose(post[v]["chance_best"], p, rel_tol=1e-6, abs_tol=1e-9), (v, post[v], p)
        assert abs(weights[v] - (5 + 85 * p)) <= 0.01 + 1e-9

    # Nobody moves: every enrolled user keeps their variant; only new users see the new weights.
    again = {u: conn.execute("SELECT ab_get_variant(%s, %s) ->> 'variant'", (name, u)).fetchone()[0] for u in first}
    assert again == first
    second = enroll(conn, name, [f"w{i}" for i in range(1500)], 1)
    rows = conn.execute(
        "SELECT v.name, a.period, count(*) FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id "
        "JOIN ab_experiments e ON e.id = a.experiment_id WHERE e.name = %s GROUP BY 1, 2", (name,)).fetchall()
    cells = {(v, p): n for v, p, n in rows}
    assert sum(n for (v, p), n in cells.items() if p == 0) == sum(1 for x in first.values() if x)
    assert sum(n for (v, p), n in cells.items() if p == 1) == sum(1 for x in second.values() if x)
    assert cells[("C", 1)] > 0.8 * sum(n for (v, p), n in cells.items() if p == 1)

    # Sample ratio: each period against its own weights (scipy), not the pooled counts.
    starting = {"A": 34, "B": 33, "C": 33}
    chi2, df = 0.0, 0
    for p, w in ((0, starting), (1, weights)):
        obs = [cells.get((v, p), 0) for v in RATES]
        exp = [sum(obs) * w[v] / sum(w.values()) for v in RATES]
        chi2 += stats.chisquare(obs, exp).statistic
        df += 2
    srm = stats.chi2.sf(chi2, df)
    health = conn.execute("SELECT srm_p_value FROM ab_experiment_health WHERE name = %s", (name,)).fetchone()[0]
    assert math.isclose(health, srm, rel_tol=1e-9)

    # The analysis: per period means, weighted by the period's share of the users, a t-test with
    # Welch-Satterthwaite degrees of freedom over the cells; against the raw tables.
    raw = conn.execute(
        "SELECT v.name, a.period, m.max FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id "
        "JOIN ab_experiments e ON e.id = a.experiment_id "
        "LEFT JOIN ab_user_metrics m ON m.experiment_id = a.experiment_id AND m.user_id = a.user_id "
        "WHERE e.name = %s", (name,)).fetchall()
    values = {}
    for v, p, x in raw:
        values.setdefault((v, p), []).append(x or 0.0)
    sizes = {p: sum(len(values.get((v, p), [])) for v in RATES) for p in (0, 1)}
    total = sum(sizes.values())
    est = {}
    for v in RATES:
        mean = sum(sizes[p] / total * stats.tmean(values[(v, p)]) for p in (0, 1))
        terms = [(sizes[p] / total) ** 2 * stats.tvar(values[(v, p)]) / len(values[(v, p)]) for p in (0, 1)]
        df_terms = sum(t * t / (len(values[(v, p)]) - 1) for t, p in zip(terms, (0, 1)))
        est[v] = (mean, sum(terms), df_terms)
    result = {r[0]: r for r in conn.execute(
        "SELECT variant, mean, diff, ci_lower, ci_upper, p_value, test, srm_p_value, users FROM ab_analyze(%s)",
        (name,)).fetchall()}
    for v in ("B", "C"):
        diff = est[v][0] - est["A"][0]
        se2 = est[v][1] + est["A"][1]
        dof = se2 * se2 / (est[v][2] + est["A"][2])
        q = stats.t.isf(0.025, dof)
        r = result[v]
        assert r[6] == "stratified"
        assert math.isclose(r[1], est[v][0], rel_tol=1e-9)
        assert math.isclose(r[2], diff, rel_tol=1e-9)
        assert math.isclose(r[3], diff - q * math.sqrt(se2), rel_tol=1e-6)
        assert math.isclose(r[4], diff + q * math.sqrt(se2), rel_tol=1e-6)
        assert math.isclose(r[5], 2 * stats.t.sf(abs(diff) / math.sqrt(se2), dof), rel_tol=1e-6)
        assert math.isclose(r[7], srm, rel_tol=1e-9)
    assert result["C"][5] < 1e-6
    # Results over time: each day stratified by period too, the last day equal to the analysis.
    last = conn.execute("SELECT variant, mean, diff, ci_lower, ci_upper, p_value, test, users FROM ab_timeline(%s) "
                        "WHERE day = (SELECT max(day) FROM ab_timeline(%s))", (name, name)).fetchall()
    assert len(last) == 3
    for v, *rest in last:
        r = result[v]
        assert rest[5] == r[6] and rest[6] == r[8], v
        for got, want in zip(rest[:5], r[1:6]):
            assert (got is None and want is None) or math.isclose(got, want, rel_tol=1e-9), v

    # The history everywhere an analyst looks.
    summary = conn.execute("SELECT ab_summary(%s)", (name,)).fetchone()[0]
    assert "Bandit allocation on resolved: weights may change every 1 hour" in summary
    assert "  period 0 from " in summary and ": A 34%, B 33%, C 33%" in summary
    assert f"C {weights['C']:g}%" in summary
    hist = conn.execute("SELECT period, variant, traffic_allocation, users_assigned FROM ab_allocation_history "
                        "WHERE experiment = %s ORDER BY 1, 2", (name,)).fetchall()
    assert hist == [(p, v, (starting if p == 0 else weights)[v], cells.get((v, p), 0)) for p in (0, 1) for v in RATES]
    info = conn.execute("SELECT ab_get_experiment(%s)", (name,)).fetchone()[0]
    assert info["allocation"]["mode"] == "bandit" and len(info["allocation_history"]) == 2

    # ab_reweight_due: not due again for an hour.
    due = conn.execute("SELECT experiment, period, reweighted FROM ab_reweight_due() WHERE experiment = %s",
                       (name,)).fetchall()
    assert due == [(name, 1, False)]
    conn.execute("SELECT ab_stop_experiment(%s)", (name,))
    conn.execute("SELECT ab_delete_experiment(%s)", (name,))
    assert conn.execute("SELECT count(*) FROM ab_allocations a WHERE NOT EXISTS "
                        "(SELECT 1 FROM ab_experiments e WHERE e.id = a.experiment_id)").fetchone()[0] == 0


def test_burn_in_and_errors(conn):
    name = "bandit burn-in"
    create(conn, name, burn_in_users=500)
    enroll(conn, name, [f"b{i}" for i in range(60)], 0)
    row = conn.execute("SELECT period, reweighted, detail FROM ab_reweight(%s, true)", (name,)).fetchone()
    assert row[:2] == (0, False)
    assert row[2].startswith('burn-in: variant "A" has ') and "of the 500 users with resolved each variant needs first" in row[2]
    assert conn.execute("SELECT count(*) FROM ab_allocations a JOIN ab_experiments e ON e.id = a.experiment_id "
                        "WHERE e.name = %s", (name,)).fetchone()[0] == 1

    # REPEATABLE READ would read a stale period.
    with psycopg.connect(conn.info.dsn) as c:
        c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert sqlstate_of(c, "SELECT * FROM ab_reweight(%s)", (name,)) == (
            "25001", "ab_reweight runs only in a READ COMMITTED transaction")
    conn.execute("SELECT ab_stop_experiment(%s)", (name,))
    assert sqlstate_of(conn, "SELECT * FROM ab_reweight(%s)", (name,)) == (
        "55000", f'experiment "{name}" is not running (status stopped)')
    conn.execute("SELECT ab_delete_experiment(%s)", (name,))

    fixed = "fixed allocations"
    conn.execute("SELECT ab_delete_experiment(%s) FROM ab_experiments WHERE name = %s", (fixed, fixed))
    conn.execute("SELECT ab_create_experiment(%s)", (Jsonb({
        "name": fixed, "experiment_type": "prompt", "primary_metric": "m",
        "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}),))
    conn.execute("SELECT ab_start_experiment(%s)", (fixed,))
    assert sqlstate_of(conn, "SELECT * FROM ab_reweight(%s)", (fixed,)) == (
        "55000", f'experiment "{fixed}" has fixed traffic allocations')
    assert sqlstate_of(conn, "SELECT * FROM ab_reweight('no such experiment')")[0] == "42704"
    conn.execute("SELECT ab_stop_experiment(%s)", (fixed,))
    conn.execute("SELECT ab_delete_experiment(%s)", (fixed,))


@pytest.mark.parametrize("allocation, message", [
    ({"mode": "greedy"}, 'allocation mode "greedy" is not one of fixed, bandit'),
    ({"mode": "fixed", "min_share": 5}, 'allocation mode "fixed" takes no other settings'),
    ({"mode": "bandit", "metric": "resolvd"}, 'allocation metric "resolvd" is not among the declared metrics (did you mean "resolved"?)'),
    ({"mode": "bandit", "update_every": "hourly"}, 'update_every is "hourly", must be an interval such as "1 hour"'),
    ({"mode": "bandit", "min_share": 40}, "min_share is 40, must be a percentage above 0 and at most 33.33 (100 / 3 variants)"),
    ({"mode": "bandit", "burn_in_users": -1}, "burn_in_users is -1, must be a whole number between 0 and 1000000000"),
    ({"mode": "bandit", "extra": 1}, "unknown field `extra`"),
])
def test_definition_errors(conn, allocation, message):
    body = {"name": "bad bandit", "experiment_type": "prompt", "primary_metric": "resolved",
            "metrics": {"resolved": {"type": "binary"}},
            "variants": [{"name": "A", "is_control": True, "traffic_allocation": 34},
                         {"name": "B", "traffic_allocation": 33}, {"name": "C", "traffic_allocation": 33}],
            "allocation": allocation}
    state, text = sqlstate_of(conn, "SELECT ab_create_experiment(%s)", (Jsonb(body),))
    assert state == "22023" and message in text, text
    assert conn.execute("SELECT count(*) FROM ab_experiments WHERE name = 'bad bandit'").fetchone()[0] == 0


def point(salt, user):
    import xxhash
    return (xxhash.xxh3_64_intdigest(salt.encode() + b"\0" + user.encode()) * 10000) >> 64


@pytest.mark.citus
def test_reweighting_while_users_enroll_records_the_weights_that_assigned_each_user(conn):
    """Every assignment made while the weights change under it names the period whose weights
    chose its variant: the variant is reproduced from the user's hash point and those weights."""
    import random
    import threading
    import time

    name = "bandit race"
    create(conn, name, burn_in_users=0)
    enroll(conn, name, [f"seed{i}" for i in range(60)], 0)
    stop = time.monotonic() + 3
    errors = []

    def enroller(prefix):
        rng = random.Random(prefix)
        try:
            with psycopg.connect(conn.info.dsn, autocommit=True) as c:
                i = 0
                while time.monotonic() < stop:
                    user = f"{prefix}{i}"
                    v = c.execute("SELECT ab_get_variant(%s, %s) ->> 'variant'", (name, user)).fetchone()[0]
                    c.execute("SELECT ab_record_result(%s, 'resolved', %s, %s)", (name, float(rng.random() < 0.3), user))
                    i += 1
        except Exception as ex:  # noqa: BLE001 - reported below
            errors.append(ex)

    def reweighter():
        try:
            with psycopg.connect(conn.info.dsn, autocommit=True) as c:
                while time.monotonic() < stop:
                    c.execute("SELECT * FROM ab_reweight(%s, force => true)", (name,))
                    time.sleep(0.02)
        except Exception as ex:  # noqa: BLE001
            errors.append(ex)

    threads = [threading.Thread(target=enroller, args=(p,)) for p in ("x", "y")] + [threading.Thread(target=reweighter)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []

    periods = dict(conn.execute(
        "SELECT a.period, a.weights FROM ab_allocations a JOIN ab_experiments e ON e.id = a.experiment_id "
        "WHERE e.name = %s", (name,)).fetchall())
    assert len(periods) >= 5, "the weights changed while users enrolled"
    rows = conn.execute(
        "SELECT a.user_id, v.name, a.period FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id "
        "JOIN ab_experiments e ON e.id = a.experiment_id WHERE e.name = %s", (name,)).fetchall()
    assert len({p for _, _, p in rows}) >= 3
    for user, variant, period in rows:
        end, chosen = 0, None
        for v in RATES:
            end += round(periods[period][v] * 100)
            if point(name, user) < end:
                chosen = v
                break
        assert chosen == variant, (user, variant, period, periods[period])
    conn.execute("SELECT ab_stop_experiment(%s)", (name,))
    conn.execute("SELECT ab_delete_experiment(%s)", (name,))


def test_pg_cron_runs_the_readme_schedule(conn):
    """The guide's pg_cron line (docs/guide.md), in a cluster of the same version that preloads pg_cron: within
    a minute and a half the scheduled ab_reweight_due() has changed a due bandit's weights."""
    import os
    import subprocess
    import time

    if not conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_cron'").fetchone()[0]:
        pytest.skip("pg_cron is not installed for this server (scripts/test.sh installs Debian's for 15)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, AB_PGDIR="/tmp/ab_testing_cron", PGPORT="5496")
    cluster = os.path.join(root, "scripts", "cluster.sh")
    subprocess.run([cluster, "destroy"], env=env, check=True)
    subprocess.run([cluster, "start"], env=env, check=True, capture_output=True)
    try:
        with open("/tmp/ab_testing_cron/data/postgresql.conf", "a") as f:
            f.write("shared_preload_libraries = 'pg_cron'\ncron.database_name = 'postgres'\n")
        subprocess.run([cluster, "stop"], env=env, check=True)
        subprocess.run([cluster, "start"], env=env, check=True, capture_output=True)
        dsn = psycopg.conninfo.make_conninfo(host="/tmp/ab_testing_cron", port=5496, user="postgres", dbname="postgres")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION ab_testing")
            c.execute("CREATE EXTENSION pg_cron")
            create(c, "cron bandit", burn_in_users=1, update_every="1 second")
            enroll(c, "cron bandit", [f"c{i}" for i in range(300)], 0)
            # As the guide writes it.
            c.execute("SELECT cron.schedule('ab-reweight', '*/10 * * * *', 'SELECT * FROM ab_reweight_due()')")
            # ... and every minute, so that the test need not wait ten.
            c.execute("SELECT cron.schedule('ab-reweight-test', '* * * * *', 'SELECT * FROM ab_reweight_due()')")
            deadline = time.monotonic() + 90
            periods = 1
            while time.monotonic() < deadline and periods < 2:
                time.sleep(2)
                periods = c.execute("SELECT count(*) FROM ab_allocations").fetchone()[0]
            runs = c.execute("SELECT status, return_message FROM cron.job_run_details").fetchall()
            assert periods == 2, runs
            assert any(s == "succeeded" for s, _ in runs), runs
    finally:
        subprocess.run([cluster, "destroy"], env=env, check=True)
