"""ab_adjusted: regression adjustment with several covariates (Lin's estimator, HC1), checked
against statsmodels on the per-user data of tests/fixtures/regression.json, calibrated through
SQL (A/A false positives, CI coverage), and its errors."""
import json
import math
import os

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import CITUS

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIXTURE = json.load(open(os.path.join(ROOT, "tests", "fixtures", "regression.json")))


def variants():
    return [{"name": "control", "is_control": True, "traffic_allocation": 34},
            {"name": "b", "traffic_allocation": 33}, {"name": "c", "traffic_allocation": 33}]


def create(c, name, metrics, primary, breakdowns=(), **extra):
    body = {"name": name, "experiment_type": "prompt", "primary_metric": primary, "salt": name,
            "variants": variants(), "metrics": metrics, "breakdowns": list(breakdowns), **extra}
    exp = c.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),)).fetchone()[0]
    c.execute("SELECT ab_start_experiment(%s)", (exp,))
    return exp


def load(c, exp, assignments, results, covariates, attribute=None):
    """The fixture's users, results and covariates, written directly with their variants."""
    ids = dict(c.execute("SELECT name, id FROM ab_variants WHERE experiment_id = %s", (exp,)).fetchall())
    with c.cursor() as cur:
        cur.executemany(
            "INSERT INTO ab_assignments (experiment_id, user_id, variant_id, attributes) VALUES (%s, %s, %s, %s)",
            [(exp, a["user_id"], ids[a["variant"]],
              Jsonb({attribute: a[attribute]}) if attribute and a.get(attribute) is not None else None)
             for a in assignments])
        variant_of = {a["user_id"]: ids[a["variant"]] for a in assignments}
        if not CITUS:
            cur.executemany(
                "INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(exp, variant_of[r["user_id"]], r["user_id"], r["metric"], r["value"]) for r in results])
        cur.executemany(
            "INSERT INTO ab_covariates (experiment_id, user_id, metric_name, value) VALUES (%s, %s, %s, %s)",
            [(exp, r["user_id"], r["metric"], r["value"]) for r in covariates])
    if CITUS:
        # Citus rebuilds the per-user state only for a stopped experiment: recorded in one batch.
        c.execute("SELECT ab_record_results(%s, %s, %s, %s)", (exp, [r["metric"] for r in results],
                  [float(r["value"]) for r in results], [r["user_id"] for r in results]))
    else:
        c.execute("SELECT ab_rebuild_user_metrics(%s)", (exp,))


def rows(c, exp):
    cur = c.execute("SELECT * FROM ab_adjusted(%s)", (exp,))
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def close(actual, expected, rel=1e-8):
    return actual is not None and math.isclose(actual, expected, rel_tol=rel, abs_tol=1e-12)


@pytest.mark.citus
def test_adjusted_matches_statsmodels(conn):
    exp = create(conn, "adjusted-reference", FIXTURE["metrics"], "funded", breakdowns=["loan_type"])
    load(conn, exp, FIXTURE["assignments"], FIXTURE["results"], FIXTURE["covariates"], attribute="loan_type")
    got = {(r["metric_name"], r["variant"]): r for r in rows(conn, exp)}
    assert len(got) == len(FIXTURE["expected"]) == 12
    # The primary metric first, then the others by name, as ab_analyze.
    assert [k[0] for k in got][::3] == ["funded", "applications", "loan_amount", "satisfaction"]
    for e in FIXTURE["expected"]:
        r = got[(e["metric"], e["variant"])]
        assert r["users"] == e["users"] and r["covariates"] == e["covariates"], (r, e)
        assert close(r["adjusted_mean"], e["adjusted_mean"]), (r, e)
        if e["variant"] == "control":
            assert r["diff"] is None and r["p_value"] is None and r["is_control"]
            continue
        for k in ["diff", "std_error", "ci_lower", "ci_upper", "p_value", "variance_reduction",
                  "variance_reduction_vs_cuped"]:
            assert (r[k] is None and e[k] is None) or close(r[k], e[k]), (k, r[k], e[k], e["metric"], e["variant"])
    # Holm over the metric's two treatments.
    b, c = got[("funded", "b")], got[("funded", "c")]
    low, high = sorted([b, c], key=lambda r: r["p_value"])
    assert close(low["p_value_adjusted"], 2 * low["p_value"])
    assert close(high["p_value_adjusted"], max(high["p_value"], 2 * low["p_value"]))
    assert c["significant"] is (c["p_value_adjusted"] < 0.05)
    # A stratum first: no single-covariate CUPED to compare with.
    assert got[("satisfaction", "b")]["variance_reduction_vs_cuped"] is None


def refused(c, sql, args, error, message):
    with pytest.raises(error) as e:
        c.execute(sql, args)
    assert e.value.diag.message_primary.startswith(message), e.value.diag.message_primary
    return e.value


def test_errors(conn):
    exp = create(conn, "adjusted-none", {"m": {}}, "m")
    err = refused(conn, "SELECT * FROM ab_adjusted(%s)", (exp,), psycopg.errors.InvalidParameterValue,
                  'experiment "adjusted-none" has no metric with covariates')
    assert err.sqlstate == "22023"
    refused(conn, "SELECT * FROM ab_adjusted('no-such-experiment')", (), psycopg.errors.UndefinedObject,
            'experiment "no-such-experiment" does not exist')
    before = conn.execute("SELECT count(*) FROM ab_experiments").fetchone()[0]
    body = {"name": "adjusted-bad", "experiment_type": "prompt", "primary_metric": "m", "variants": variants()}
    cases = [
        ({"metrics": {"m": {"covariates": ["m"]}}, "allocation": {"mode": "bandit"}},
         'metric "m" lists covariates but the experiment is a bandit'),
        ({"metrics": {"m": {"covariates": [{"attribute": "branch"}]}}},
         'covariate attribute "branch" of metric "m" is not listed in "breakdowns"'),
        ({"metrics": {"m": {"covariates": ["other"]}}}, 'covariate "other" of metric "m" is not a declared metric'),
        ({"metrics": {"m": {"covariates": [7]}}},
         'invalid experiment definition: a covariate is a declared metric\'s name or {"attribute": name}, got a number'),
    ]
    for extra, message in cases:
        err = refused(conn, "SELECT ab_create_experiment(%s)", (Jsonb({**body, **extra}),),
                      psycopg.errors.InvalidParameterValue, message)
        assert err.sqlstate == "22023"
    assert conn.execute("SELECT count(*) FROM ab_experiments").fetchone()[0] == before
    # Too many strata: refused when analysed (the levels are the data's).
    exp = create(conn, "adjusted-strata", {"m": {"covariates": [{"attribute": "zip"}]}}, "m", breakdowns=["zip"])
    conn.execute("INSERT INTO ab_assignments (experiment_id, user_id, variant_id, attributes) "
                 "SELECT %s, 'u' || g, (SELECT min(id) FROM ab_variants WHERE experiment_id = %s), "
                 "jsonb_build_object('zip', g::text) FROM generate_series(1, 51) g", (exp, exp))
    err = refused(conn, "SELECT * FROM ab_adjusted(%s)", (exp,), psycopg.errors.ProgramLimitExceeded,
                  'covariate attribute "zip" of metric "m" takes more than 50 values in experiment "adjusted-strata"')
    assert err.sqlstate == "54000"
    # The summary stays readable and says why the adjusted comparisons are missing.
    summary = conn.execute("SELECT ab_summary(%s)", (exp,)).fetchone()[0]
    assert 'Adjusted comparisons: not computed (attribute "zip" of metric "m" takes more than 50 values' in summary
    conn.execute("SELECT ab_stop_experiment(%s)", (exp,))
    conn.execute("SELECT ab_delete_experiment(%s)", (exp,))


def test_grants():
    """PUBLIC may not run it; ab_grant_analyst lets a role run it, ab_revoke_analyst takes it
    back (in a database of its own: grants leave explicit privileges behind)."""
    from conftest import CITUS, conninfo
    if CITUS:
        pytest.skip("creates a database")
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS ab_adjusted_grants WITH (FORCE)")
        c.execute("CREATE DATABASE ab_adjusted_grants")
        c.execute("DO $$ BEGIN CREATE ROLE ab_adj_analyst LOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
    db = conninfo("ab_adjusted_grants")
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION ab_testing")
            exp = create(conn, "adjusted-grants", {"m": {"covariates": ["m"]}}, "m")
            analyst = psycopg.conninfo.make_conninfo(db, user="ab_adj_analyst")
            with psycopg.connect(analyst, autocommit=True) as other:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    other.execute("SELECT * FROM public.ab_adjusted(%s)", (exp,))
            conn.execute("SELECT ab_grant_analyst('ab_adj_analyst')")
            with psycopg.connect(analyst, autocommit=True) as other:
                assert other.execute("SELECT count(*) FROM ab_adjusted(%s)", (exp,)).fetchone()[0] == 3
            conn.execute("SELECT ab_revoke_analyst('ab_adj_analyst')")
            assert conn.execute("SELECT has_function_privilege('ab_adj_analyst', 'ab_adjusted(bigint)', 'EXECUTE')"
                                ).fetchone()[0] is False
    finally:
        with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS ab_adjusted_grants WITH (FORCE)")
            c.execute("DROP ROLE IF EXISTS ab_adj_analyst")


def binomial_bounds(n, p, z=3.29):
    """A 99.9% normal range of a binomial count."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


def test_calibration_through_sql(conn):
    """Fixed seeds: 300 experiments of 600 users, the metric driven by two pre-period values
    and a stratum. The A/A comparison (c) rejects at alpha = 0.05 within binomial noise, and the
    CI of a true effect of 0.2 (b) covers it at the nominal 95%; the adjustment removes most of
    the variance."""
    metrics = {"y": {"covariates": ["y", "x", {"attribute": "segment"}]}, "x": {}}
    conn.execute("SELECT setseed(0.42)")
    rejected = covered = 0
    reductions = []
    runs = 300
    for i in range(runs):
        exp = create(conn, f"adjusted-cal-{i}", metrics, "y", breakdowns=["segment"])
        conn.execute("""
            WITH v AS (SELECT array_agg(id ORDER BY position) AS ids FROM ab_variants WHERE experiment_id = %(e)s),
            u AS (SELECT g, 'u' || g AS user_id, (SELECT ids FROM v)[1 + g %% 3] AS variant_id, g %% 3 AS arm,
                         (ARRAY['a', 'b', 'c', 'd'])[1 + floor(random() * 4)::int] AS segment,
                         random() * 10 AS pre_y, random() * 4 AS pre_x, random() AS n1, random() AS n2
                  FROM generate_series(1, 600) g),
            a AS (INSERT INTO ab_assignments (experiment_id, user_id, variant_id, attributes)
                  SELECT %(e)s, user_id, variant_id, jsonb_build_object('segment', segment) FROM u),
            c AS (INSERT INTO ab_covariates (experiment_id, user_id, metric_name, value)
                  SELECT %(e)s, user_id, 'y', pre_y FROM u UNION ALL SELECT %(e)s, user_id, 'x', pre_x FROM u)
            INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value)
            SELECT %(e)s, variant_id, user_id, 'y',
                   1.0 + 0.8 * pre_y + 0.5 * pre_x + (CASE segment WHEN 'a' THEN 2 WHEN 'b' THEN -1 ELSE 0 END)
                   + CASE arm WHEN 1 THEN 0.2 ELSE 0 END
                   + sqrt(-2 * ln(greatest(n1, 1e-300))) * cos(2 * pi() * n2)
            FROM u""", {"e": exp})
        conn.execute("SELECT ab_rebuild_user_metrics(%s)", (exp,))
        got = {r["variant"]: r for r in rows(conn, exp)}
        rejected += got["c"]["p_value"] < 0.05
        covered += got["b"]["ci_lower"] <= 0.2 <= got["b"]["ci_upper"]
        reductions.append(got["b"]["variance_reduction"])
    lo, hi = binomial_bounds(runs, 0.05)
    assert lo <= rejected <= hi, rejected
    lo, hi = binomial_bounds(runs, 0.95)
    assert lo <= covered <= hi, covered
    assert sum(reductions) / runs > 0.8, sum(reductions) / runs
    print(f"A/A rejections {rejected}/{runs}, coverage {covered}/{runs}, mean variance reduction "
          f"{sum(reductions) / runs:.3f}")


def test_update_to_0_14_0_lets_analysts_run_it():
    """On a 0.13.0 schema the 0.14.0 library accepts covariates (they live in the metrics'
    definitions) and ab_analyze runs as before; the update adds ab_adjusted for every role that
    may run ab_breakdown (analysts, not PUBLIC)."""
    from conftest import CITUS, conninfo
    if CITUS:
        pytest.skip("creates a database at an older version")
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS ab_adjusted_update WITH (FORCE)")
        c.execute("CREATE DATABASE ab_adjusted_update")
        c.execute("DO $$ BEGIN CREATE ROLE ab_adj_upd_analyst; EXCEPTION WHEN duplicate_object THEN END $$")
    try:
        with psycopg.connect(conninfo("ab_adjusted_update"), autocommit=True) as c:
            c.execute("CREATE EXTENSION ab_testing VERSION '0.13.0'")
            c.execute("SELECT ab_grant_analyst('ab_adj_upd_analyst')")
            exp = create(c, "adjusted-old", {"m": {"covariates": ["m"]}}, "m")
            load(c, exp, [{"user_id": f"u{i}", "variant": ["control", "b", "c"][i % 3]} for i in range(30)],
                 [{"user_id": f"u{i}", "metric": "m", "value": float(i % 7)} for i in range(30)],
                 [{"user_id": f"u{i}", "metric": "m", "value": float(i % 5)} for i in range(30)])
            assert c.execute("SELECT count(*) FROM ab_analyze(%s)", (exp,)).fetchone()[0] == 3
            assert c.execute("SELECT to_regprocedure('ab_adjusted(text)')").fetchone()[0] is None
            cluster = {"name": "old-branches", "experiment_type": "agent_config", "primary_metric": "m",
                       "variants": two_variants(), "breakdowns": ["branch"], "randomization_unit": "branch"}
            err = refused(c, "SELECT ab_create_experiment(%s)", (Jsonb(cluster),),
                          psycopg.errors.ObjectNotInPrerequisiteState,
                          "cluster-randomized experiments (randomization_unit) need version 0.14.0 of the ab_testing schema")
            assert err.sqlstate == "55000"
            assert c.execute("SELECT count(*) FROM ab_experiments WHERE name = 'old-branches'").fetchone()[0] == 0
            c.execute("ALTER EXTENSION ab_testing UPDATE TO '0.14.0'")
            assert c.execute("SELECT ab_create_experiment(%s) > 0", (Jsonb(cluster),)).fetchone()[0]
            privilege = "SELECT has_function_privilege(%s, %s, 'EXECUTE')"
            for f in ["ab_adjusted(text)", "ab_adjusted(bigint)"]:
                assert c.execute(privilege, ("ab_adj_upd_analyst", f)).fetchone()[0] is True
                assert c.execute(privilege, ("public", f)).fetchone()[0] is False
            c.execute("SET ROLE ab_adj_upd_analyst")
            assert c.execute("SELECT count(*) FROM ab_adjusted(%s)", (exp,)).fetchone()[0] == 3
            c.execute("RESET ROLE")
    finally:
        with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS ab_adjusted_update WITH (FORCE)")
            c.execute("DROP ROLE IF EXISTS ab_adj_upd_analyst")


def two_variants():
    return [{"name": "control", "is_control": True, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]


def test_cluster_randomized_assignment(conn):
    """Every user of a branch gets the branch's variant, users who join later too; a user
    without a branch is not enrolled; a stored assignment stays whatever the attributes say."""
    body = {"name": "cluster-assign", "experiment_type": "agent_config", "primary_metric": "m", "salt": "branches",
            "variants": two_variants(), "breakdowns": ["branch"], "randomization_unit": "branch"}
    exp = conn.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),)).fetchone()[0]
    conn.execute("SELECT ab_start_experiment(%s)", (exp,))

    def variant(user, attributes):
        v = conn.execute("SELECT ab_get_variant(%s, %s, %s)", (exp, user, Jsonb(attributes))).fetchone()[0]
        return v and v["variant"]

    seen = {}
    for i in range(300):
        branch = f"br{i % 20}"
        seen.setdefault(branch, set()).add(variant(f"u{i}", {"branch": branch}))
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {next(iter(v)) for v in seen.values()} == {"control", "b"}
    # The user's cluster is hashed in place of the user id (docs/guide.md, how assignment works).
    import xxhash
    for branch, got in seen.items():
        point = (xxhash.xxh3_64_intdigest(b"branches\0" + branch.encode()) * 10000) >> 64
        assert got == {"control" if point < 5000 else "b"}, (branch, point, got)
    late = variant("late-joiner", {"branch": "br7", "other": 1})
    assert {late} == seen["br7"]
    # Numbers are clusters too, by their JSON text.
    assert variant("n1", {"branch": 42}) == variant("n2", {"branch": "42"})
    assert variant("no-branch", {"other": "x"}) is None
    assert variant("no-attributes", {}) is None
    assert conn.execute("SELECT count(*) FROM ab_assignments WHERE experiment_id = %s AND user_id LIKE 'no-%%'",
                        (exp,)).fetchone()[0] == 0
    # Sticky: the stored assignment wins.
    first = variant("u0", {"branch": "br0"})
    other = next(b for b, v in seen.items() if v != seen["br0"])
    assert variant("u0", {"branch": other}) == first
    assert conn.execute("SELECT attributes FROM ab_assignments WHERE experiment_id = %s AND user_id = 'u0'",
                        (exp,)).fetchone()[0] == {"branch": "br0"}
    # Clusters are what the sample ratio check counts.
    rows_ = conn.execute("SELECT randomization_unit FROM ab_experiments WHERE id = %s", (exp,)).fetchone()
    assert rows_ == ("branch",)


def test_cluster_randomized_refusals(conn):
    before = conn.execute("SELECT count(*) FROM ab_experiments").fetchone()[0]
    body = {"name": "cluster-bad", "experiment_type": "agent_config", "primary_metric": "m",
            "variants": two_variants(), "breakdowns": ["branch"], "randomization_unit": "branch"}
    cases = [
        ({"allocation": {"mode": "bandit"}}, "a cluster-randomized experiment (randomization_unit) cannot be a bandit"),
        ({"allocation": {"mode": "rollout", "steps": [5, 100], "step_every": "1 hour"}},
         "a cluster-randomized experiment (randomization_unit) cannot be a rollout"),
        ({"layer": {"name": "cluster-layer", "percentage": 50}},
         "a cluster-randomized experiment (randomization_unit) cannot be in a layer"),
        ({"breakdowns": []}, 'randomization_unit "branch" is not listed in "breakdowns"'),
    ]
    conn.execute("SELECT ab_create_layer('cluster-layer', 0, 'cl')")
    try:
        for extra, message in cases:
            err = refused(conn, "SELECT ab_create_experiment(%s)", (Jsonb({**body, **extra}),),
                          psycopg.errors.InvalidParameterValue, message)
            assert err.sqlstate == "22023"
    finally:
        conn.execute("SELECT ab_delete_layer('cluster-layer')")
    assert conn.execute("SELECT count(*) FROM ab_experiments").fetchone()[0] == before


@pytest.mark.citus
def test_cluster_robust_matches_statsmodels(conn):
    data = FIXTURE["cluster"]
    exp = create(conn, "cluster-reference", {"handled": {"covariates": ["handled"]}, "calls": {}}, "handled",
                 breakdowns=["branch"], randomization_unit="branch")
    load(conn, exp, data["assignments"], data["results"], data["covariates"], attribute="branch")
    got = {r["variant"]: r for r in rows(conn, exp) if r["metric_name"] == "handled"}
    for e in data["expected"]:
        r = got[e["variant"]]
        assert r["users"] == e["users"] and r["clusters"] == e["clusters"], (r, e)
        assert close(r["adjusted_mean"], e["adjusted_mean"])
        if e["variant"] == "control":
            continue
        for k in ["diff", "std_error", "ci_lower", "ci_upper", "p_value"]:
            assert close(r[k], e[k]), (k, r[k], e[k])
        # What a per-user (HC1) analysis would claim: a standard error less than half as wide.
        assert r["std_error"] > 2 * e["naive_std_error"]
    # SRM on clusters: 22, 19 and 19 branches against 34/33/33.
    from scipy import stats
    expected_srm = stats.chisquare([22, 19, 19], [60 * 0.34, 60 * 0.33, 60 * 0.33]).pvalue
    assert close(got["b"]["srm_p_value"], expected_srm, 1e-9)
    # ab_analyze's check (and so the winner rule's) counts clusters too.
    srm = conn.execute("SELECT DISTINCT srm_p_value FROM ab_analyze(%s)", (exp,)).fetchall()
    assert len(srm) == 1 and close(srm[0][0], expected_srm, 1e-9)
    # Every continuous or binary metric of a cluster-randomized experiment has rows ("calls",
    # recorded by nobody here: no users, no comparison).
    assert {r["metric_name"] for r in rows(conn, exp)} == {"handled", "calls"}


def test_intra_cluster_correlation_simulation(conn):
    """A/A experiments randomized by branch (80 branches of 8 users, intra-cluster correlation
    0.3): a per-user Welch test (ab_welch_test on the per-user moments, what ab_analyze ran
    before 0.15.0) rejects far more often than alpha; ab_analyze's own cluster-robust test
    holds it, within binomial noise, with the p-value of ab_adjusted without covariates."""
    conn.execute("SELECT setseed(0.17)")
    naive = robust = 0
    runs = 200
    for i in range(runs):
        body = {"name": f"icc-{i}", "experiment_type": "agent_config", "primary_metric": "y", "salt": f"icc-{i}",
                "variants": two_variants(), "breakdowns": ["branch"], "randomization_unit": "branch",
                "metrics": {"y": {}}}
        exp = conn.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),)).fetchone()[0]
        conn.execute("SELECT ab_start_experiment(%s)", (exp,))
        conn.execute("""
            WITH v AS (SELECT array_agg(id ORDER BY position) AS ids FROM ab_variants WHERE experiment_id = %(e)s),
            b AS (SELECT g AS branch, (SELECT ids FROM v)[1 + (g %% 2)] AS variant_id,
                         sqrt(-2 * ln(greatest(random(), 1e-300))) * cos(2 * pi() * random()) * sqrt(0.3) AS effect
                  FROM generate_series(1, 80) g),
            u AS (SELECT b.*, 'u' || b.branch || '-' || k AS user_id,
                         sqrt(-2 * ln(greatest(random(), 1e-300))) * cos(2 * pi() * random()) * sqrt(0.7) AS noise
                  FROM b, generate_series(1, 8) k),
            a AS (INSERT INTO ab_assignments (experiment_id, user_id, variant_id, attributes)
                  SELECT %(e)s, user_id, variant_id, jsonb_build_object('branch', 'br' || branch) FROM u)
            INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value)
            SELECT %(e)s, variant_id, user_id, 'y', effect + noise FROM u""", {"e": exp})
        conn.execute("SELECT ab_rebuild_user_metrics(%s)", (exp,))
        per_user = conn.execute("""
            WITH m AS (SELECT v.position, count(*) AS n, avg(s.total) AS mean, var_samp(s.total) AS var
                       FROM ab_user_metrics s JOIN ab_variants v ON v.id = s.variant_id
                       WHERE s.experiment_id = %s AND s.metric_name = 'y' GROUP BY v.position)
            SELECT (ab_welch_test(a.n, a.mean, a.var, b.n, b.mean, b.var)).p_value
            FROM m a, m b WHERE a.position < b.position""", (exp,)).fetchone()[0]
        analyzed = conn.execute("SELECT p_value, test FROM ab_analyze(%s) WHERE variant = 'b'", (exp,)).fetchone()
        clustered = conn.execute("SELECT p_value FROM ab_adjusted(%s) WHERE variant = 'b'", (exp,)).fetchone()[0]
        assert analyzed[1] == "cluster" and close(analyzed[0], clustered, 1e-9), (analyzed, clustered)
        naive += per_user < 0.05
        robust += analyzed[0] < 0.05
    lo, hi = binomial_bounds(runs, 0.05)
    assert lo <= robust <= hi, robust
    assert naive > 3 * hi / 2, naive
    print(f"A/A rejections at alpha 0.05: per-user Welch {naive}/{runs}, ab_analyze (cluster-robust) {robust}/{runs}")


def test_covariate_read_from_a_source_equals_the_recorded_one(conn):
    """A covariate naming a source metric with a `covariate` lookback reads the source over the
    lookback before each user's enrollment: the same figures as a recorded copy of the same
    values (results and covariates written with ab_record_result and ab_record_covariate)."""
    conn.execute("DROP SCHEMA IF EXISTS crm_adj CASCADE")
    conn.execute("CREATE SCHEMA crm_adj")
    conn.execute("CREATE TABLE crm_adj.loans (borrower_id text, applied_at timestamptz)")
    source = {"relation": "crm_adj.loans", "user_column": "borrower_id", "time_column": "applied_at"}
    metrics = {"funded": {"type": "binary", "source": source, "window": "14 days", "covariate": {"lookback": "30 days"},
                          "covariates": ["funded", {"attribute": "channel"}]},
               "funded_copy": {"type": "binary", "covariates": ["funded_copy", {"attribute": "channel"}]}}
    body = {"name": "adjusted-source", "experiment_type": "workflow", "primary_metric": "funded", "salt": "adj-src",
            "variants": two_variants(), "metrics": metrics, "breakdowns": ["channel"]}
    exp = conn.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),)).fetchone()[0]
    conn.execute("SELECT ab_start_experiment(%s)", (exp,))
    arms = {}
    for g in range(400):
        v = conn.execute("SELECT ab_get_variant(%s, %s, %s)",
                         (exp, f"b{g}", Jsonb({"channel": ["web", "phone"][g % 2]}))).fetchone()[0]
        arms[g] = v["variant"]
    conn.execute("UPDATE ab_assignments SET assigned_at = '2026-03-01 00:00+00' WHERE experiment_id = %s", (exp,))
    pre = {g for g in range(400) if g % 3 == 0 or g % 7 == 0}
    won = {g for g in range(400) if (g % 3 == 0 and g % 4 != 1) or g % 11 == 0 or (arms[g] == "b" and g % 5 == 0)}
    rows = [(f"b{g}", "2026-02-19 00:00+00") for g in pre] + [(f"b{g}", "2026-03-03 00:00+00") for g in won]
    # Outside both: before the lookback, after the window.
    rows += [(f"b{g}", "2026-01-01 00:00+00") for g in range(0, 400, 2)]
    rows += [(f"b{g}", "2026-04-01 00:00+00") for g in range(1, 400, 2)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO crm_adj.loans VALUES (%s, %s)", rows)
    for g in range(400):
        if g in won:
            conn.execute("SELECT ab_record_result(%s, 'funded_copy', 1, %s)", (exp, f"b{g}"))
        if g in pre:
            conn.execute("SELECT ab_record_covariate(%s, 'funded_copy', %s, 1)", (exp, f"b{g}"))
    got = {(r["metric_name"], r["variant"]): r for r in rows_of(conn, exp)}
    a, b = got[("funded", "b")], got[("funded_copy", "b")]
    assert a["users"] == b["users"] == sum(1 for v in arms.values() if v == "b")
    for k in ["adjusted_mean", "diff", "std_error", "p_value", "variance_reduction", "variance_reduction_vs_cuped"]:
        assert close(a[k], b[k], 1e-9), (k, a[k], b[k])
    assert a["variance_reduction"] > 0.2
    # The experiment goes with its source (a running one reading a dropped table would fail
    # every later summary of the shared database).
    conn.execute("SELECT ab_stop_experiment(%s)", (exp,))
    conn.execute("SELECT ab_delete_experiment(%s)", (exp,))
    conn.execute("DROP SCHEMA crm_adj CASCADE")


def rows_of(c, exp):
    return rows(c, exp)


def test_cluster_randomized_winner_rule_and_summary(conn):
    """A per-user test of branch-randomized data calls the new agent better (p = 0.0135); the
    cluster-robust one, ab_analyze's own since 0.15.0 and ab_adjusted's, does not (p = 0.42):
    the summary and the winner rule read it, and stopping with declare_winner declares none."""
    body = {"name": "branch-winner", "experiment_type": "agent_config", "primary_metric": "funded",
            "salt": "branch-agent-3", "breakdowns": ["branch"], "randomization_unit": "branch",
            "metrics": {"funded": {"type": "binary"}},
            "variants": [{"name": "current agent", "is_control": True, "traffic_allocation": 50},
                         {"name": "new agent", "traffic_allocation": 50}]}
    exp = conn.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),)).fetchone()[0]
    conn.execute("SELECT ab_start_experiment(%s)", (exp,))
    conn.execute("SELECT count(ab_get_variant(%s, 'borrower-' || g, jsonb_build_object('branch', 'branch-' || g %% 60))) "
                 "FROM generate_series(1, 3000) g", (exp,))
    conn.execute("SELECT count(ab_record_result(%s, 'funded', ((g * 37) %% 100 < 15 + (g %% 60) %% 7 * 8)::int, "
                 "'borrower-' || g)) FROM generate_series(1, 3000) g", (exp,))
    naive = conn.execute("""
        WITH c AS (SELECT v.position, sum(s.total)::bigint AS x FROM ab_user_metrics s JOIN ab_variants v ON v.id = s.variant_id
                   WHERE s.experiment_id = %(e)s GROUP BY v.position),
             n AS (SELECT v.position, count(*) AS n FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
                   WHERE a.experiment_id = %(e)s GROUP BY v.position)
        SELECT (ab_proportion_test(c0.x, n0.n, c1.x, n1.n)).p_value FROM c c0, n n0, c c1, n n1
        WHERE c0.position = 0 AND n0.position = 0 AND c1.position = 1 AND n1.position = 1""", {"e": exp}).fetchone()[0]
    assert round(naive, 4) == 0.0135
    analyzed = conn.execute("SELECT p_value, srm_p_value, test FROM ab_analyze(%s) WHERE NOT is_control", (exp,)).fetchone()
    clustered = conn.execute("SELECT p_value, srm_p_value FROM ab_adjusted(%s) WHERE NOT is_control", (exp,)).fetchone()
    assert round(clustered[0], 4) == 0.4173 and close(analyzed[0], clustered[0], 1e-9) and close(analyzed[1], clustered[1])
    assert analyzed[2] == "cluster"
    summary = conn.execute("SELECT ab_summary(%s)", (exp,)).fetchone()[0]
    assert "vs control: +0.0443 (95% CI -0.0628 to +0.1515), lift +12.3% (CI -19.5% to +44.0%), p = 0.4173: " \
        "no significant difference from the control" in summary, summary
    assert "new agent      n = 1700     mean 0.4059 (95% CI 0.3352 to 0.4766, cluster-robust)" in summary, summary
    assert ("Recommendation: no winner yet. Reason: not significant: the smallest p-value on funded is 0.4173 "
            "(alpha 0.05)") in summary, summary
    assert 'Randomized by "branch" (clusters: 26 current agent, 34 new agent)' in summary
    assert "funded new agent: +0.0443 (95% CI -0.0628 to +0.1515), p = 0.4173, 9.4 times the per-user test's variance" \
        in summary
    stopped = conn.execute("SELECT ab_stop_experiment(%s, true)", (exp,)).fetchone()[0]
    assert stopped["winner"] is None, stopped


def test_cluster_randomized_ratio_primary_metric(conn):
    """With a ratio as the primary metric ab_analyze compares it cluster-robust (the delta method
    on the clusters' totals, tests/client/test_cluster_analysis.py), ab_summary runs, and
    ab_adjusted has rows for the continuous parts only."""
    body = {"name": "branch-ratio", "experiment_type": "agent_config", "primary_metric": "per_call",
            "salt": "branch-ratio", "breakdowns": ["branch"], "randomization_unit": "branch",
            "metrics": {"amount": {"aggregation": "sum"}, "calls": {"aggregation": "count"},
                        "per_call": {"type": "ratio", "numerator": "amount", "denominator": "calls"}},
            "variants": two_variants()}
    exp = conn.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),)).fetchone()[0]
    conn.execute("SELECT ab_start_experiment(%s)", (exp,))
    conn.execute("SELECT count(ab_get_variant(%s, 'u' || g, jsonb_build_object('branch', 'br' || g %% 20))) "
                 "FROM generate_series(1, 400) g", (exp,))
    conn.execute("SELECT count(ab_record_result(%s, 'amount', g %% 7, 'u' || g)), "
                 "count(ab_record_result(%s, 'calls', 1, 'u' || g)) FROM generate_series(1, 400) g", (exp, exp))
    assert conn.execute("SELECT count(*) FROM ab_analyze(%s)", (exp,)).fetchone()[0] == 6
    assert conn.execute("SELECT test FROM ab_analyze(%s) WHERE metric_name = 'per_call' AND NOT is_control",
                        (exp,)).fetchone()[0] == "cluster"
    summary = conn.execute("SELECT ab_summary(%s)", (exp,)).fetchone()[0]
    assert 'Randomized by "branch"' in summary and "Recommendation: no winner yet" in summary, summary
    assert {r["metric_name"] for r in rows(conn, exp)} == {"amount", "calls"}


def test_hostile_names_and_levels_are_data(conn):
    """Metric names, attribute names and stratum values reach the queries as parameters: quotes
    and SQL in them are data."""
    attr = "seg'ment\"); DROP TABLE ab_results; --"
    metrics = {"m'x": {"covariates": ["m'x", {"attribute": attr}]}}
    exp = create(conn, "adjusted-hostile", metrics, "m'x", breakdowns=[attr])
    users = [{"user_id": f"h{i}", "variant": ["control", "b", "c"][i % 3],
              attr: ["o'brien", "'; SELECT 1; --", "plain"][i % 3 if i % 5 else (i + 1) % 3]} for i in range(90)]
    load(conn, exp, users, [{"user_id": f"h{i}", "metric": "m'x", "value": float(i % 11)} for i in range(90)],
         [{"user_id": f"h{i}", "metric": "m'x", "value": float(i % 7)} for i in range(90)], attribute=attr)
    got = rows(conn, exp)
    assert len(got) == 3 and all(r["covariates"] == 3 for r in got), got
    assert conn.execute("SELECT to_regclass('ab_results') IS NOT NULL").fetchone()[0]
