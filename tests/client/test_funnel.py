"""Funnel and retention metrics through SQL: counts and figures computed by hand on a few
users whose enrollment and result times are set explicitly, the errors of bad definitions and
of results recorded under their names, and A/A calibration (fixed seeds)."""
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import CITUS
from test_operations import drop_db, fresh_db, one

DB = "ab_funnel"
ALPHA = 0.05
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def db():
    drop_db(DB)
    yield fresh_db(DB)
    drop_db(DB)


STEPS = {"started": {"type": "binary"}, "uploaded": {"type": "binary"}, "approved": {"type": "binary"},
         "session": {"aggregation": "count"}}


def experiment(c, name, metrics, primary):
    body = {"name": name, "experiment_type": "workflow", "primary_metric": primary, "salt": name + "-salt",
            "min_sample_size": 10, "metrics": metrics,
            "variants": [{"name": "control", "is_control": True, "traffic_allocation": 50},
                         {"name": "new", "traffic_allocation": 50}]}
    exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(body))
    one(c, "SELECT ab_start_experiment(%s)", exp)
    return exp


def record(c, exp, rows):
    """rows: (metric, value, user, recorded_at). On Citus, which does not run ab_record_results,
    one by one, each tagged by its session and its time then set by that tag (Citus updates a
    distributed table only with immutable expressions of its columns)."""
    if not CITUS:
        one(c, "SELECT ab_record_results(%s, %s, %s, %s, NULL, %s)", exp, [r[0] for r in rows],
            [float(r[1]) for r in rows], [r[2] for r in rows], [r[3] for r in rows])
        return
    for metric, value, user, at in rows:
        assert one(c, "SELECT ab_record_result(%s, %s, %s, %s, %s)", exp, metric, float(value), user,
                   f"at {at.timestamp()!r}")
    c.execute("UPDATE ab_results SET recorded_at = to_timestamp(substr(session_id, 4)::float8) "
              "WHERE experiment_id = %s AND session_id LIKE 'at %%'", (exp,))


def crm_by_hand(c):
    """Two funnels (window from enrollment, from the previous step) and a retention metric
    over users enrolled 100 days ago, and one per variant enrolled 10 days ago."""
    exp = experiment(c, "crm_by_hand", {
        **STEPS,
        "funded": {"funnel": {"steps": ["started", "uploaded", "approved"], "window": "30 days"}},
        "funded_prev": {"funnel": {"steps": ["started", "uploaded", "approved"], "window": "30 days", "from": "previous"}},
        "active_d7_30": {"retention": {"metric": "session", "days": [7, 30]}},
    }, "funded")
    for i in range(40):
        one(c, "SELECT ab_get_variant(%s, %s)", exp, f"u{i}")
    t0 = one(c, "SELECT date_trunc('day', now()) - interval '100 days'")
    recent = one(c, "SELECT date_trunc('day', now()) - interval '10 days'")
    c.execute("UPDATE ab_assignments SET assigned_at = %s WHERE experiment_id = %s", (t0, exp))
    arms = dict(c.execute("SELECT v.name, array_agg(a.user_id ORDER BY a.user_id) FROM ab_assignments a "
                          "JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = %s GROUP BY 1", (exp,)).fetchall())
    ctl, new = arms["control"], arms["new"]
    c.execute("UPDATE ab_assignments SET assigned_at = %s WHERE experiment_id = %s AND user_id = ANY(%s)",
              (recent, exp, [ctl[6], new[4]]))
    s, u, a = "started", "uploaded", "approved"
    rows = [
        # complete within 30 days of enrollment
        (s, 1, ctl[0], t0 + HOUR), (u, 1, ctl[0], t0 + DAY), (a, 1, ctl[0], t0 + 2 * DAY),
        # approved before uploading only: not complete
        (s, 1, ctl[1], t0 + HOUR / 4), (a, 1, ctl[1], t0 + HOUR / 2), (u, 1, ctl[1], t0 + DAY),
        # complete on day 25
        (s, 1, ctl[2], t0 + HOUR), (u, 1, ctl[2], t0 + DAY), (a, 1, ctl[2], t0 + 25 * DAY),
        # approved on day 45: not within 30 days of enrollment, but 25 days after uploading
        (s, 1, ctl[3], t0 + DAY), (u, 1, ctl[3], t0 + 20 * DAY), (a, 1, ctl[3], t0 + 45 * DAY),
        # never started: later steps do not count
        (u, 1, ctl[4], t0 + DAY), (a, 1, ctl[4], t0 + 2 * DAY),
        # approved recorded as 0: not approved
        (s, 1, ctl[5], t0 + HOUR), (u, 1, ctl[5], t0 + DAY), (a, 0, ctl[5], t0 + 2 * DAY),
        (s, 1, new[0], t0 + HOUR), (u, 1, new[0], t0 + DAY), (a, 1, new[0], t0 + 2 * DAY),
        (s, 1, new[1], t0 + HOUR), (u, 1, new[1], t0 + DAY), (a, 1, new[1], t0 + 3 * DAY),
        (s, 1, new[2], t0 + HOUR),
        (s, 1, new[3], t0 + HOUR), (u, 1, new[3], t0 + DAY),
        # retention, days [7, 30): day 8 and day 29 count, day 6 and day 30 do not
        ("session", 1, ctl[0], t0 + 8 * DAY), ("session", 1, ctl[1], t0 + 6 * DAY),
        ("session", 1, ctl[2], t0 + 30 * DAY), ("session", 1, ctl[3], t0 + 29 * DAY),
        ("session", 1, new[0], t0 + 7 * DAY),
        # too new to count, however active
        ("session", 1, ctl[6], recent + 8 * DAY), ("session", 1, new[4], recent + 8 * DAY),
    ]
    record(c, exp, rows)
    return exp, len(ctl), len(new)


@pytest.mark.citus
def test_funnel_and_retention_by_hand(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp, nc, nt = crm_by_hand(c)
        rows = c.execute("SELECT metric_name, step, step_metric, variant, users, share, conversion, conversion_diff, "
                         "ci_lower, ci_upper, p_value FROM ab_funnel(%s) ORDER BY 1, 2, 4", (exp,)).fetchall()
        got = {(r[0], r[1], r[3]): r for r in rows}
        assert len(rows) == 12
        expected = {"funded": {"control": [5, 5, 2], "new": [4, 3, 2]},
                    "funded_prev": {"control": [5, 5, 3], "new": [4, 3, 2]}}
        for metric, arms in expected.items():
            for variant, reached in arms.items():
                n = nc if variant == "control" else nt
                for k, users in enumerate(reached, 1):
                    r = got[(metric, k, variant)]
                    assert r[2] == ["started", "uploaded", "approved"][k - 1]
                    assert r[4] == users, (metric, k, variant)
                    assert r[5] == pytest.approx(users / n)
                    previous = n if k == 1 else reached[k - 2]
                    assert r[6] == pytest.approx(users / previous)
        # Each treatment's conversion minus the control's, with a CI around it.
        for metric in expected:
            for k in (1, 2, 3):
                c_row, t_row = got[(metric, k, "control")], got[(metric, k, "new")]
                assert c_row[7] is None and c_row[10] is None
                assert t_row[7] == pytest.approx(t_row[6] - c_row[6])
                assert t_row[8] < t_row[7] < t_row[9] and 0 <= t_row[10] <= 1
        # Retention: eligible users are those enrolled 30 days ago or more.
        ret = {r[0]: r for r in c.execute(
            "SELECT variant, enrolled, too_new, eligible, active, rate, diff FROM ab_retention(%s)", (exp,)).fetchall()}
        assert ret["control"][:5] == ("control", nc, 1, nc - 1, 2)
        assert ret["new"][:5] == ("new", nt, 1, nt - 1, 1)
        assert ret["control"][5] == pytest.approx(2 / (nc - 1))
        assert ret["new"][6] == pytest.approx(1 / (nt - 1) - 2 / (nc - 1))
        # ab_analyze: binary metrics, the funnel over every enrolled user, retention over the eligible.
        analyzed = {(r[0], r[1]): r[2:] for r in c.execute(
            "SELECT metric_name, variant, users, mean FROM ab_analyze(%s) "
            "WHERE metric_name IN ('funded', 'funded_prev', 'active_d7_30')", (exp,)).fetchall()}
        assert analyzed[("funded", "control")] == (nc, pytest.approx(2 / nc))
        assert analyzed[("funded", "new")] == (nt, pytest.approx(2 / nt))
        assert analyzed[("funded_prev", "control")] == (nc, pytest.approx(3 / nc))
        assert analyzed[("active_d7_30", "control")] == (nc - 1, pytest.approx(2 / (nc - 1)))
        assert analyzed[("active_d7_30", "new")] == (nt - 1, pytest.approx(1 / (nt - 1)))
        bayes = {(r[0], r[1]) for r in c.execute("SELECT metric_name, variant FROM ab_bayes(%s)", (exp,)).fetchall()}
        assert {("funded", "new"), ("active_d7_30", "new")} <= bayes
        summary = one(c, "SELECT ab_summary(%s)", exp)
        assert "funded (primary, funnel: share of users who reached started -> uploaded -> approved in order " \
               "within 30 days of enrollment, higher is better)" in summary
        assert "funded_prev (funnel: share of users who reached started -> uploaded -> approved in order, " \
               "each within 30 days of the previous, higher is better)" in summary
        assert "active_d7_30 (retention: share of users with session on or after day 7 and before day 30 after " \
               "enrollment; 2 users enrolled less than 30 days ago are not counted yet, higher is better)" in summary
        # Timelines and breakdowns leave them out; a timeline of one is refused.
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            c.execute("SELECT * FROM ab_timeline(%s::bigint, 'funded')", (exp,))
        assert e.value.diag.message_primary == \
            "metric \"funded\" is a funnel: the timeline has no funnel or retention metrics yet"
        assert not c.execute("SELECT 1 FROM ab_timeline(%s::bigint, NULL) "
                             "WHERE metric_name IN ('funded', 'funded_prev', 'active_d7_30')", (exp,)).fetchall()
        # With covariates recorded (CUPED for the metrics that have them), funnels and retention
        # keep their plain comparison.
        before = c.execute("SELECT variant, users, mean, p_value FROM ab_analyze(%s) "
                           "WHERE metric_name IN ('funded', 'active_d7_30') ORDER BY metric_name, variant", (exp,)).fetchall()
        one(c, "SELECT ab_record_covariate(%s, 'session', %s, 3)", exp, f"u{0}")
        after = c.execute("SELECT variant, users, mean, p_value, cuped_variance_reduction FROM ab_analyze(%s) "
                          "WHERE metric_name IN ('funded', 'active_d7_30') ORDER BY metric_name, variant", (exp,)).fetchall()
        assert [r[:4] for r in after] == before and all(r[4] is None for r in after)
        # The same by experiment id and name.
        assert c.execute("SELECT count(*) FROM ab_funnel(%s::bigint)", (exp,)).fetchone()[0] == 12
        name = one(c, "SELECT name FROM ab_experiments WHERE id = %s", exp)
        assert c.execute("SELECT count(*) FROM ab_retention(%s::text)", (name,)).fetchone()[0] == 2


def test_nothing_is_recorded_under_a_funnel_or_retention_metric(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = experiment(c, "crm_no_record", {
            **STEPS, "funded": {"funnel": {"steps": ["started", "approved"]}},
            "active": {"retention": {"metric": "session", "days": [0, 7]}}}, "funded")
        one(c, "SELECT ab_get_variant(%s, 'u1')", exp)
        for sql, args in [("SELECT ab_record_result(%s, 'funded', 1, 'u1')", (exp,)),
                          ("SELECT ab_record_results(%s, ARRAY['funded'], ARRAY[1.0], ARRAY['u1'])", (exp,)),
                          ("SELECT ab_record_covariate(%s, 'funded', 'u1', 1)", (exp,))]:
            with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
                c.execute(sql, args)
            assert "metric \"funded\" of experiment \"crm_no_record\" is a funnel: it is computed from the times " \
                   "of the results of \"started\", \"approved\", not recorded" in e.value.diag.message_primary
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            c.execute("SELECT ab_record_result(%s, 'active', 1, 'u1')", (exp,))
        assert e.value.diag.message_primary.startswith("metric \"active\" of experiment \"crm_no_record\" is a retention metric")
        assert e.value.diag.message_hint == "record \"session\" for the user instead"
        assert one(c, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == 0


@pytest.mark.parametrize("metric,message", [
    ({"funnel": {"steps": ["started"]}}, "funnel metric \"f\" has 1 step(s), must have 2 to 20"),
    ({"funnel": {"steps": ["started", "upload"]}},
     "step \"upload\" of metric \"f\" is not declared (did you mean \"uploaded\"?)"),
    ({"funnel": {"steps": ["started", "uploaded"], "window": "a month"}}, "window of funnel metric \"f\" is \"a month\""),
    ({"funnel": {"steps": ["started", "uploaded"], "from": "start"}}, "unknown value `start`, expected `enrollment` or `previous`"),
    ({"funnel": {"steps": ["started", "uploaded"]}, "source": "x"}, "metric \"f\" is a funnel: each user counts 1 or 0, so it takes no \"source\""),
    ({"retention": {"metric": "session", "days": [30, 7]}}, "days of retention metric \"f\" is [30, 7], must be [N, M]"),
    ({"retention": {"metric": "session", "days": [7, 30], "every": 1}}, "unknown field `every`"),
])
def test_bad_definitions_are_refused(db, metric, message):
    with psycopg.connect(db, autocommit=True) as c:
        body = {"name": "bad_funnel", "experiment_type": "workflow", "primary_metric": "f",
                "metrics": {**STEPS, "f": metric},
                "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            c.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),))
        assert e.value.sqlstate == "22023"
        assert message in e.value.diag.message_primary
        assert one(c, "SELECT count(*) FROM ab_experiments WHERE name = 'bad_funnel'") == 0


def test_a_a_false_positive_rates(db):
    """Both arms the same process; each replicate its own experiment with users and results
    written directly (fixed seed): the share of replicates with p < alpha, per figure, stays
    near alpha."""
    replicates, users = 400, 600
    with psycopg.connect(db, autocommit=True) as c:
        metrics = {**STEPS, "funded": {"funnel": {"steps": ["started", "uploaded", "approved"], "window": "30 days"}},
                   "funded_prev": {"funnel": {"steps": ["started", "uploaded", "approved"], "window": "10 days",
                                              "from": "previous"}},
                   "active": {"retention": {"metric": "session", "days": [7, 30]}}}
        ids = [experiment(c, f"crm_aa_{i}", metrics, "funded") for i in range(replicates)]
        c.execute("SELECT setseed(0.31)")
        c.execute("""
            INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at)
            SELECT e, 'u' || i, (SELECT v.id FROM ab_variants v WHERE v.experiment_id = e ORDER BY v.is_control DESC, v.id
                                 OFFSET (random() < 0.5)::int LIMIT 1),
                   now() - interval '60 days' + random() * interval '55 days'
            FROM unnest(%s::bigint[]) e, generate_series(1, %s) i""", (ids, users))
        # Each step with probability 0.6 of the previous one's users, a few hours to 20 days
        # later; sessions on random days 0-40 after enrollment, none in the future.
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
        hits = {"funded": 0, "funded_prev": 0, "active": 0, **{(m, k): 0 for m in ("funded", "funded_prev") for k in (1, 2, 3)}}
        for e in ids:
            for m, p in c.execute("SELECT metric_name, p_value FROM ab_analyze(%s) WHERE NOT is_control "
                                  "AND metric_name IN ('funded', 'funded_prev', 'active')", (e,)).fetchall():
                hits[m] += p < ALPHA
            for m, step, p in c.execute("SELECT metric_name, step, p_value FROM ab_funnel(%s) WHERE p_value IS NOT NULL",
                                        (e,)).fetchall():
                hits[(m, step)] += p < ALPHA
        rates = {k: v / replicates for k, v in hits.items()}
        print("A/A false-positive rates:", rates)
        # Measured: funded 0.045, funded_prev 0.055, active 0.0475; steps of funded 0.0575, 0.05,
        # 0.04, of funded_prev 0.0575, 0.0425, 0.055. With 400 replicates a rate of 0.05 lands in
        # [0.025, 0.08] with probability about 0.99.
        for k, rate in rates.items():
            assert 0.025 <= rate <= 0.08, (k, rate)
        c.execute("DELETE FROM ab_results WHERE experiment_id = ANY(%s)", (ids,))
        c.execute("DELETE FROM ab_assignments WHERE experiment_id = ANY(%s)", (ids,))


@pytest.mark.citus
def test_steps_and_activity_read_from_sources(db):
    """A funnel whose last step is a row of the application's loans table (with the source's
    filter) and a retention metric over a logins table whose times have no time zone (UTC)."""
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS public.fx_loans, public.fx_logins")
        c.execute("CREATE TABLE public.fx_loans (borrower text, funded_at timestamptz, status text)")
        c.execute("CREATE TABLE public.fx_logins (borrower text, at timestamp)")
        loans = {"relation": "public.fx_loans", "user_column": "borrower", "time_column": "funded_at",
                 "filter": {"status": "funded"}}
        logins = {"relation": "public.fx_logins", "user_column": "borrower", "time_column": "at"}
        exp = experiment(c, "crm_sources", {
            "started": {"type": "binary"}, "approved": {"type": "binary"},
            "loan": {"type": "binary", "source": loans}, "visits": {"aggregation": "count", "source": logins},
            "funded": {"funnel": {"steps": ["started", "approved", "loan"], "window": "30 days"}},
            "back": {"retention": {"metric": "visits", "days": [7, 30]}},
        }, "funded")
        for i in range(40):
            one(c, "SELECT ab_get_variant(%s, %s)", exp, f"s{i}")
        t0 = one(c, "SELECT date_trunc('day', now()) - interval '100 days'")
        c.execute("UPDATE ab_assignments SET assigned_at = %s WHERE experiment_id = %s", (t0, exp))
        arms = dict(c.execute("SELECT v.name, array_agg(a.user_id ORDER BY a.user_id) FROM ab_assignments a "
                              "JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = %s GROUP BY 1",
                              (exp,)).fetchall())
        ctl, new = arms["control"], arms["new"]
        recent = one(c, "SELECT date_trunc('day', now()) - interval '10 days'")
        c.execute("UPDATE ab_assignments SET assigned_at = %s WHERE experiment_id = %s AND user_id = %s",
                  (recent, exp, ctl[5]))
        rows = []
        for u in [ctl[0], ctl[1], ctl[2], ctl[4], new[0], new[1], new[2]]:
            rows.append(("started", 1, u, t0 + HOUR))
        for u in [ctl[0], ctl[1], ctl[4], new[0], new[1]]:
            rows.append(("approved", 1, u, t0 + 2 * DAY))
        rows.append(("approved", 1, ctl[2], t0 + 5 * DAY))
        record(c, exp, rows)
        c.cursor().executemany("INSERT INTO public.fx_loans VALUES (%s, %s, %s)", [
            (ctl[0], t0 + 3 * DAY, "funded"),
            (ctl[1], t0 + 3 * DAY, "cancelled"),  # the source's filter leaves it out
            (ctl[2], t0 + 4 * DAY, "funded"),  # before the approval
            (ctl[3], t0 + 3 * DAY, "funded"),  # never started
            (ctl[4], t0 + 40 * DAY, "funded"),  # after 30 days
            (new[0], t0 + 3 * DAY, "funded"), (new[1], t0 + 9 * DAY, "funded")])
        # Logins as UTC wall-clock times: days 8 and 10 count, day 6 does not; ctl[5] is too new.
        c.cursor().executemany("INSERT INTO public.fx_logins VALUES (%s, (%s::timestamptz AT TIME ZONE 'UTC'))", [
            (ctl[0], t0 + 8 * DAY), (ctl[1], t0 + 6 * DAY), (new[0], t0 + 10 * DAY), (ctl[5], recent + 8 * DAY)])
        got = {(r[0], r[1]): r[2] for r in c.execute("SELECT step, variant, users FROM ab_funnel(%s)", (exp,)).fetchall()}
        assert [got[(k, "control")] for k in (1, 2, 3)] == [4, 4, 1]
        assert [got[(k, "new")] for k in (1, 2, 3)] == [3, 2, 2]
        ret = {r[0]: r[1:] for r in c.execute("SELECT variant, too_new, eligible, active FROM ab_retention(%s)",
                                              (exp,)).fetchall()}
        assert ret["control"] == (1, len(ctl) - 1, 1) and ret["new"] == (0, len(new), 1)
        analyzed = {(r[0], r[1]): (r[2], r[3]) for r in c.execute(
            "SELECT metric_name, variant, users, mean FROM ab_analyze(%s) WHERE metric_name IN ('funded', 'back')",
            (exp,)).fetchall()}
        assert analyzed[("funded", "control")] == (len(ctl), pytest.approx(1 / len(ctl)))
        assert analyzed[("back", "new")] == (len(new), pytest.approx(1 / len(new)))
        # Tables of another role, which an analyst may read: read as their owner, with the users
        # passed in, and the same figures.
        before = (c.execute("SELECT * FROM ab_funnel(%s) ORDER BY 1, 2, 4", (exp,)).fetchall(),
                  c.execute("SELECT * FROM ab_retention(%s) ORDER BY 1, 2", (exp,)).fetchall())
        for role in ("ab_funnel_owner", "ab_funnel_analyst"):
            c.execute(f"DO $$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN END $$")
            c.execute(f"ALTER ROLE {role} LOGIN")  # Citus connects to the workers as the role
        c.execute("ALTER TABLE public.fx_loans OWNER TO ab_funnel_owner")
        c.execute("ALTER TABLE public.fx_logins OWNER TO ab_funnel_owner")
        c.execute("GRANT SELECT ON public.fx_loans, public.fx_logins TO ab_funnel_analyst")
        c.execute("SELECT ab_grant_analyst('ab_funnel_analyst')")
        c.execute("SET ROLE ab_funnel_analyst")
        try:
            after = (c.execute("SELECT * FROM ab_funnel(%s) ORDER BY 1, 2, 4", (exp,)).fetchall(),
                     c.execute("SELECT * FROM ab_retention(%s) ORDER BY 1, 2", (exp,)).fetchall())
            users = c.execute("SELECT users FROM ab_analyze(%s) WHERE metric_name = 'funded' ORDER BY variant",
                              (exp,)).fetchall()
        finally:
            c.execute("RESET ROLE")
        assert after == before
        assert users == [(len(ctl),), (len(new),)]
        c.execute("DROP TABLE public.fx_loans, public.fx_logins")
        for role in ("ab_funnel_owner", "ab_funnel_analyst"):
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")
