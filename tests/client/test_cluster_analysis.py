"""ab_analyze in a cluster-randomized experiment (randomization_unit): its comparisons of
continuous, binary, ratio, funnel and retention metrics are cluster-robust (the delta method on
cluster totals), checked against statsmodels (on tests/fixtures/cluster.json, written by
tests/fixtures/generate.py, and for funnels and retention in the test), equal to ab_adjusted's
without covariates, and read by ab_summary, ab_plot, ab_bayes and the winner rule; ab_timeline
(each day), ab_breakdown (each segment), ab_funnel, ab_retention and ab_interactions are
cluster-robust too, and so are quantile metrics (their variance clustered by the unit, as
gbstats' QuantileClusteredStatistic)."""
import json
import math
import os

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import CITUS

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIXTURE = json.load(open(os.path.join(ROOT, "tests", "fixtures", "cluster.json")))

METRICS = {"handled": {}, "converted": {"type": "binary"}, "amount": {"aggregation": "sum"},
           "calls": {"aggregation": "count"}, "per_call": {"type": "ratio", "numerator": "amount", "denominator": "calls"}}


def close(actual, expected, rel=1e-8):
    return actual is not None and math.isclose(actual, expected, rel_tol=rel, abs_tol=1e-12)


def two_variants():
    return [{"name": "control", "is_control": True, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]


def create(c, name, metrics, primary="handled", **extra):
    body = {"name": name, "experiment_type": "agent_config", "primary_metric": primary, "salt": name,
            "variants": two_variants(), "metrics": metrics, "breakdowns": ["branch", "region"],
            "randomization_unit": "branch", **extra}
    exp = c.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),)).fetchone()[0]
    c.execute("SELECT ab_start_experiment(%s)", (exp,))
    return exp


def load(c, exp):
    """The fixture's users (with their branch, and a region that cuts across branches) and results."""
    ids = dict(c.execute("SELECT name, id FROM ab_variants WHERE experiment_id = %s", (exp,)).fetchall())
    assignments = FIXTURE["assignments"]
    with c.cursor() as cur:
        cur.executemany(
            "INSERT INTO ab_assignments (experiment_id, user_id, variant_id, attributes) VALUES (%s, %s, %s, %s)",
            [(exp, a["user_id"], ids[a["variant"]], Jsonb({"branch": a["branch"], "region": f"r{k % 3}"}))
             for k, a in enumerate(assignments)])
        variant_of = {a["user_id"]: ids[a["variant"]] for a in assignments}
        if not CITUS:
            cur.executemany(
                "INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(exp, variant_of[r["user_id"]], r["user_id"], r["metric"], r["value"]) for r in FIXTURE["results"]])
    if CITUS:
        # Citus rebuilds the per-user state only for a stopped experiment: recorded in one batch.
        c.execute("SELECT ab_record_results(%s, %s, %s, %s)", (exp, [r["metric"] for r in FIXTURE["results"]],
                  [float(r["value"]) for r in FIXTURE["results"]], [r["user_id"] for r in FIXTURE["results"]]))
    else:
        c.execute("SELECT ab_rebuild_user_metrics(%s)", (exp,))


def table(c, sql, args):
    cur = c.execute(sql, args)
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def ols_cluster(rows):
    """(diff, p) of statsmodels' OLS of y on the treated arm with cluster-robust standard
    errors (its default small-sample factor, normal reference), rows (y, treated, cluster)."""
    import numpy as np
    import pandas as pd
    import statsmodels.api as sm
    y = np.array([r[0] for r in rows], float)
    treated = np.array([r[1] for r in rows], float)
    fit = sm.OLS(y, sm.add_constant(treated)).fit(cov_type="cluster",
                                                  cov_kwds={"groups": pd.factorize(pd.Series([r[2] for r in rows]))[0]})
    return fit.params[1], fit.pvalues[1]


@pytest.fixture
def loaded(conn, request):
    exp = create(conn, "cluster-" + request.node.name.removeprefix("test_")[:60], METRICS)
    load(conn, exp)
    return exp


@pytest.mark.citus
def test_analyze_is_cluster_robust_and_matches_statsmodels(conn, loaded):
    got = {(r["metric_name"], r["variant"]): r for r in table(conn, "SELECT * FROM ab_analyze(%s)", (loaded,))}
    for metric, e in FIXTURE["expected"].items():
        for arm in ["control", "b"]:
            r = got[(metric, arm)]
            assert r["users"] == e["users"][arm] and close(r["mean"], e["means"][arm]), (metric, r, e)
        b = got[(metric, "b")]
        assert b["test"] == "cluster", b
        for k in ["diff", "ci_lower", "ci_upper", "p_value"]:
            assert close(b[k], e[k]), (metric, k, b[k], e[k])
        # The relative lift's interval and the non-inferiority tests use the same variances.
        assert b["relative_lift_ci_lower"] < b["relative_lift"] < b["relative_lift_ci_upper"]
    # Without covariates ab_adjusted's cluster-robust comparison is the same one.
    adjusted = {(r["metric_name"], r["variant"]): r for r in table(conn, "SELECT * FROM ab_adjusted(%s)", (loaded,))}
    for metric in ["handled", "converted"]:
        a, b = adjusted[(metric, "b")], got[(metric, "b")]
        assert close(a["p_value"], b["p_value"], 1e-9) and close(a["ci_lower"], b["ci_lower"], 1e-9), (a, b)
        assert a["clusters"] == FIXTURE["clusters"]["b"]
    # ab_bayes reads the same variance: with no prior, the posterior's sd is the standard error.
    bayes = {(r["metric_name"], r["variant"]): r for r in table(conn, "SELECT * FROM ab_bayes(%s)", (loaded,))}
    for metric, e in FIXTURE["expected"].items():
        assert close(bayes[(metric, "b")]["posterior_sd"], e["std_error"], 1e-8), (metric, bayes[(metric, "b")])
        assert close(got[(metric, "b")]["chance_to_beat_control"], bayes[(metric, "b")]["chance_to_beat_control"], 1e-9)


def test_summary_and_plot_read_the_cluster_robust_rows(conn, loaded):
    e = FIXTURE["expected"]["handled"]
    summary = conn.execute("SELECT ab_summary(%s)", (loaded,)).fetchone()[0]
    assert f"vs control: {e['diff']:+.4f} (95% CI {e['ci_lower']:+.4f} to {e['ci_upper']:+.4f})" in summary, summary
    assert f"p = {e['p_value']:.4f}: no significant difference from the control" in summary, summary
    # Each variant's mean has its cluster-robust interval too.
    assert f"mean {e['means']['b']:.4f} (95% CI " in summary and ", cluster-robust)" in summary, summary
    assert ('Randomized by "branch" (clusters: 25 control, 25 b): users of one cluster are not independent, so the '
            'comparisons are cluster-robust') in summary, summary

    def num(x):
        return f"{x:.3f}".rstrip("0").rstrip(".")
    plot = conn.execute("SELECT ab_plot(%s)", (loaded,)).fetchone()[0]
    assert f"{num(e['diff'])} [{num(e['ci_lower'])}, {num(e['ci_upper'])}], p = {e['p_value']:.4f}" in plot, plot


@pytest.mark.citus
def test_timeline_is_cluster_robust_on_each_day(conn, loaded):
    """Each day of ab_timeline compares the users enrolled by then, with what they had recorded
    by then, cluster-robust: the first day as statsmodels on those users (half the branches
    enrolled three days earlier with part of their results), the last day as ab_analyze; for a
    mean (users with a value) and a sum (silent users are 0s)."""
    # A constant time (Citus refuses a STABLE expression of a column in an UPDATE).
    then = conn.execute("SELECT now() - interval '3 days'").fetchone()[0]
    conn.execute("UPDATE ab_assignments SET assigned_at = %s WHERE experiment_id = %s "
                 "AND substr(attributes->>'branch', 3)::int %% 4 < 2", (then, loaded))
    conn.execute("UPDATE ab_results r SET recorded_at = %s FROM ab_assignments a "
                 "WHERE r.experiment_id = %s AND a.experiment_id = r.experiment_id AND a.user_id = r.user_id "
                 "AND substr(a.attributes->>'branch', 3)::int %% 4 < 2 AND r.id %% 3 <> 0", (then, loaded))
    first = conn.execute("SELECT min(assigned_at)::date FROM ab_assignments WHERE experiment_id = %s",
                         (loaded,)).fetchone()[0]
    users = conn.execute(
        "SELECT a.user_id, NOT v.is_control, a.attributes->>'branch', a.assigned_at::date - %s FROM ab_assignments a "
        "JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = %s", (first, loaded)).fetchall()
    results = conn.execute("SELECT user_id, metric_name, metric_value, recorded_at::date - %s FROM ab_results "
                           "WHERE experiment_id = %s", (first, loaded)).fetchall()
    early = {u for u, _, _, day in users if day == 0}
    assert 0 < len(early) < len(users)
    by_day0 = {}
    for u, metric, value, day in results:
        if day == 0:
            by_day0.setdefault((metric, u), []).append(value)
    assert any(day > 0 for u, _, _, day in results if u in early), "some early users record later too"
    expected = {
        "handled": ols_cluster([(sum(v) / len(v), t, b) for u, t, b, d in users
                                if d == 0 and (v := by_day0.get(("handled", u)))]),
        "amount": ols_cluster([(sum(by_day0.get(("amount", u), [0.0])), t, b) for u, t, b, d in users if d == 0]),
    }
    analyzed = {r["metric_name"]: r for r in table(conn, "SELECT * FROM ab_analyze(%s) WHERE variant = 'b'", (loaded,))}
    for metric, (diff, p) in expected.items():
        rows = table(conn, "SELECT * FROM ab_timeline(%s, %s) WHERE variant = 'b' ORDER BY day", (loaded, metric))
        assert len(rows) == 4 and all(r["test"] == "cluster" for r in rows), rows
        assert close(rows[0]["diff"], diff, 1e-9) and close(rows[0]["p_value"], p, 1e-8), (metric, rows[0], diff, p)
        for k in ("diff", "ci_lower", "ci_upper", "p_value"):
            assert close(rows[-1][k], analyzed[metric][k], 1e-9), (metric, k, rows[-1][k], analyzed[metric][k])


@pytest.mark.citus
def test_breakdown_is_cluster_robust_within_each_segment(conn, loaded):
    """Each segment of ab_breakdown is compared cluster-robust over its own users (a region cuts
    across branches: a branch's users in the segment form its cluster there), as statsmodels'
    OLS with cluster-robust errors on the segment's users; a silent user is a 0 of a binary
    metric there too."""
    users = conn.execute(
        "SELECT a.user_id, NOT v.is_control, a.attributes->>'branch', a.attributes->>'region' FROM ab_assignments a "
        "JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = %s", (loaded,)).fetchall()
    values = {}
    for metric in ("handled", "converted"):
        values[metric] = dict(conn.execute(
            "SELECT user_id, total / n FROM ab_user_metrics WHERE experiment_id = %s AND metric_name = %s",
            (loaded, metric)).fetchall())
    got = {(r["value"], r["metric_name"]): r for r in table(
        conn, "SELECT * FROM ab_breakdown(%s, 'region') WHERE variant = 'b'", (loaded,))}
    checked = 0
    for region in ("r0", "r1", "r2"):
        for metric in ("handled", "converted"):
            if metric == "handled":
                rows = [(values[metric][u], t, b) for u, t, b, r in users if r == region and u in values[metric]]
            else:
                rows = [(values[metric].get(u, 0.0), t, b) for u, t, b, r in users if r == region]
            diff, p = ols_cluster(rows)
            row = got[(region, metric)]
            assert close(row["diff"], diff, 1e-9) and close(row["p_value"], p, 1e-8), (region, metric, row, p)
            checked += 1
    assert checked == 6


@pytest.mark.citus
def test_quantile_metrics_are_cluster_robust_as_gbstats(conn):
    """A quantile of the per-user values and one of every recorded value, in an experiment
    randomized by branch: the variance clustered by branch, as gbstats'
    QuantileClusteredStatistic with the branches as clusters and its TwoSidedTTest
    (tests/fixtures/cluster_quantile.json, written by tests/fixtures/generate.py); test
    `cluster`. Before 0.15.0 such a metric was refused."""
    fixture = json.load(open(os.path.join(ROOT, "tests", "fixtures", "cluster_quantile.json")))
    exp = create(conn, "cluster-quantile", fixture["metrics"], primary="response_time")
    ids = dict(conn.execute("SELECT name, id FROM ab_variants WHERE experiment_id = %s", (exp,)).fetchall())
    ids = {"control": ids["control"], "faster": ids["b"]}
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ab_assignments (experiment_id, user_id, variant_id, attributes) VALUES (%s, %s, %s, %s)",
            [(exp, a["user_id"], ids[a["variant"]], Jsonb({"branch": a["branch"]})) for a in fixture["assignments"]])
    results = fixture["results"]
    conn.execute("SELECT ab_record_results(%s, %s, %s, %s)", (exp, [r["metric"] for r in results],
                 [r["value"] for r in results], [r["user_id"] for r in results]))
    got = {(r["metric_name"], r["variant"]): r for r in table(conn, "SELECT * FROM ab_analyze(%s)", (exp,))}
    for e in fixture["expected"]:
        r = got[(e["metric"], "b" if e["variant"] == "faster" else "control")]
        assert r["users"] == e["users"] and close(r["mean"], e["mean"], 1e-12), (r, e)
        if "diff" in e:
            assert r["test"] == "cluster", r
            for k in ("diff", "ci_lower", "ci_upper", "p_value"):
                assert close(r[k], e[k], 1e-8), (e["metric"], k, r[k], e[k])
    summary = conn.execute("SELECT ab_summary(%s)", (exp,)).fetchone()[0]
    assert 'so the comparisons are cluster-robust (test "cluster").' in summary, summary


@pytest.mark.citus
def test_get_experiment_shows_the_unit(conn, loaded):
    got = conn.execute("SELECT ab_get_experiment(%s)", (loaded,)).fetchone()[0]
    assert got["randomization_unit"] == "branch" and got["breakdowns"] == ["branch", "region"]
    other = conn.execute("SELECT ab_create_experiment(%s)", (Jsonb(
        {"name": "not-clustered", "experiment_type": "prompt", "primary_metric": "m", "variants": two_variants()}),)).fetchone()[0]
    plain = conn.execute("SELECT ab_get_experiment(%s)", (other,)).fetchone()[0]
    assert "randomization_unit" in plain and plain["randomization_unit"] is None


def test_sequential_mode_counts_clusters(conn):
    """In sequential mode the comparison is the always-valid one on the cluster-robust variance,
    with the clusters as the confidence sequence's units: wider than the fixed-horizon one."""
    exp = create(conn, "cluster-sequential", METRICS, sequential=True)
    load(conn, exp)
    b = table(conn, "SELECT * FROM ab_analyze(%s) WHERE metric_name = 'handled' AND variant = 'b'", (exp,))[0]
    e = FIXTURE["expected"]["handled"]
    assert b["test"] == "cluster-sequential" and close(b["diff"], e["diff"]), b
    assert b["ci_lower"] < e["ci_lower"] and b["ci_upper"] > e["ci_upper"] and b["p_value"] >= e["p_value"], (b, e)
    # The half-width of the confidence sequence (docs/statistics.md) for n = 50 clusters.
    n, alpha, tuning = 50, 0.05, conn.execute("SELECT sequential_tuning FROM ab_experiments WHERE id = %s",
                                               (exp,)).fetchone()[0]
    se2 = e["std_error"] ** 2
    l = -2 * math.log(alpha)
    rho2 = (l + math.log(l + 1)) / tuning
    half = math.sqrt(se2 * n) * math.sqrt(2 * (n * rho2 + 1) / (n * n * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha))
    assert close(b["ci_upper"] - b["diff"], half, 1e-9), (b["ci_upper"] - b["diff"], half)


@pytest.mark.citus
def test_funnel_and_retention_metrics_are_cluster_robust(conn):
    """A funnel's completion and a retention metric's activity (among the users old enough to
    count) are compared cluster-robust, as statsmodels' OLS with cluster-robust errors on the
    same 0/1 values per user; the steps, binary metrics, too."""
    metrics = {"started": {"type": "binary"}, "uploaded": {"type": "binary"}, "session": {"type": "binary"},
               "uploads": {"funnel": {"steps": ["started", "uploaded"], "window": "7 days"}},
               "back": {"retention": {"metric": "session", "days": [0, 7]}},
               "conv": {"type": "ratio", "numerator": "uploaded", "denominator": "started"}}
    exp = create(conn, "cluster-funnel", metrics, primary="uploads")
    conn.execute("SELECT count(ab_get_variant(%s, 'u' || g, jsonb_build_object('branch', 'br' || g %% 30))) "
                 "FROM generate_series(1, 600) g", (exp,))
    conn.execute("SELECT count(ab_record_result(%s, 'started', 1, 'u' || g)) FROM generate_series(1, 600) g "
                 "WHERE g %% 4 < 3", (exp,))
    conn.execute("SELECT count(ab_record_result(%s, 'uploaded', 1, 'u' || g)) FROM generate_series(1, 600) g "
                 "WHERE g %% 4 < 3 AND g %% 30 < 12 + g %% 5", (exp,))
    conn.execute("SELECT count(ab_record_result(%s, 'session', 1, 'u' || g)) FROM generate_series(1, 600) g "
                 "WHERE g %% 30 < 10 + g %% 7", (exp,))
    # Nine users in ten enrolled (and acted, in the same order) ten days ago: old enough for
    # days [0, 7). Constant times: Citus refuses a STABLE expression of a column in an UPDATE.
    t0, t1, t2, t3 = conn.execute("SELECT now() - interval '10 days' + i * interval '1 minute' "
                                  "FROM generate_series(0, 3) i ORDER BY i").fetchall()
    conn.execute("UPDATE ab_assignments SET assigned_at = %s WHERE experiment_id = %s "
                 "AND substr(user_id, 2)::int %% 10 <> 0", (t0[0], exp))
    conn.execute("UPDATE ab_results SET recorded_at = CASE metric_name WHEN 'started' THEN %s::timestamptz "
                 "WHEN 'uploaded' THEN %s::timestamptz ELSE %s::timestamptz END "
                 "WHERE experiment_id = %s AND substr(user_id, 2)::int %% 10 <> 0", (t1[0], t2[0], t3[0], exp))
    users = conn.execute("SELECT substr(a.user_id, 2)::int, NOT v.is_control, a.attributes->>'branch' "
                         "FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = %s",
                         (exp,)).fetchall()
    assert len(users) == 600
    expected = {
        "uploads": ols_cluster([(int(g % 4 < 3 and g % 30 < 12 + g % 5), t, b) for g, t, b in users]),
        "back": ols_cluster([(int(g % 30 < 10 + g % 7), t, b) for g, t, b in users if g % 10 != 0]),
    }
    got = {r["metric_name"]: r for r in table(conn, "SELECT * FROM ab_analyze(%s) WHERE NOT is_control", (exp,))}
    assert {m: r["test"] for m, r in got.items()} == {m: "cluster" for m in metrics}, got
    for metric, (diff, p) in expected.items():
        assert close(got[metric]["diff"], diff, 1e-9) and close(got[metric]["p_value"], p, 1e-8), (metric, got[metric], p)
    assert got["back"]["users"] == sum(1 for g, t, _ in users if t and g % 10 != 0)
    summary = conn.execute("SELECT ab_summary(%s)", (exp,)).fetchone()[0]
    assert 'comparisons are cluster-robust (test "cluster").' in summary, summary
    # ab_funnel's steps and ab_retention are cluster-robust too: step 1's share is the binary
    # metric "started", step 2's conversion the ratio "uploaded" / "started", and the
    # retention rate ab_analyze's row of "back".
    steps = {r["step"]: r for r in table(conn, "SELECT * FROM ab_funnel(%s) WHERE variant = 'b'", (exp,))}
    retention = table(conn, "SELECT * FROM ab_retention(%s) WHERE variant = 'b'", (exp,))[0]
    for row, metric in ((steps[1], "started"), (steps[2], "conv"), (retention, "back")):
        for k in ("ci_lower", "ci_upper", "p_value"):
            assert close(row[k], got[metric][k], 1e-9), (metric, k, row[k], got[metric][k])


@pytest.mark.citus
def test_users_stored_without_a_cluster_are_clusters_of_their_own(conn):
    """Assignments written by hand without the unit's attribute: each such user is a cluster in
    ab_analyze as in ab_adjusted and the sample ratio check, and the two still agree."""
    exp = create(conn, "cluster-without-unit", METRICS)
    load(conn, exp)
    conn.execute("UPDATE ab_assignments SET attributes = attributes - 'branch' WHERE experiment_id = %s "
                 "AND user_id LIKE 'br0%%-1_'", (exp,))
    lost = conn.execute("SELECT count(*) FROM ab_assignments WHERE experiment_id = %s AND NOT attributes ? 'branch'",
                        (exp,)).fetchone()[0]
    assert lost > 10
    adjusted = {(r["metric_name"], r["variant"]): r for r in table(conn, "SELECT * FROM ab_adjusted(%s)", (exp,))}
    analyzed = {(r["metric_name"], r["variant"]): r for r in table(conn, "SELECT * FROM ab_analyze(%s)", (exp,))}
    for metric in ["handled", "converted"]:
        a, b = adjusted[(metric, "b")], analyzed[(metric, "b")]
        assert close(a["p_value"], b["p_value"], 1e-9) and close(a["ci_upper"], b["ci_upper"], 1e-9), (a, b)
        assert not close(b["p_value"], FIXTURE["expected"][metric]["p_value"], 1e-6)
    clusters = sum(r["clusters"] for k, r in adjusted.items() if k[0] == "converted")
    assert clusters == 50 + lost, (clusters, lost)
    for metric in ["handled", "converted", "amount"]:
        last = table(conn, "SELECT * FROM ab_timeline(%s, %s) WHERE variant = 'b' ORDER BY day DESC LIMIT 1",
                     (exp, metric))[0]
        assert last["test"] == "cluster" and close(last["p_value"], analyzed[(metric, "b")]["p_value"], 1e-9), metric
    from scipy import stats
    counts = [adjusted[("converted", v)]["clusters"] for v in ["control", "b"]]
    assert close(analyzed[("handled", "b")]["srm_p_value"], stats.chisquare(counts).pvalue, 1e-9)


def test_guardrails_use_the_cluster_robust_variance_and_cuped_is_not_applied(conn):
    """A guardrail's non-inferiority p-value is the one-sided normal test on the cluster-robust
    standard error; with covariates recorded, CUPED's columns are NULL (ab_adjusted adjusts for
    them, cluster-robust)."""
    from scipy import stats
    metrics = {**METRICS, "handled": {"margin": 0.5, "covariates": ["handled"]}, "converted": {"type": "binary", "margin": 0.05}}
    exp = create(conn, "cluster-guardrails", metrics, primary="per_call")
    load(conn, exp)
    conn.execute("INSERT INTO ab_covariates (experiment_id, user_id, metric_name, value) "
                 "SELECT experiment_id, user_id, 'handled', length(user_id) FROM ab_assignments WHERE experiment_id = %s",
                 (exp,))
    rows = {r["metric_name"]: r for r in table(conn, "SELECT * FROM ab_analyze(%s) WHERE variant = 'b'", (exp,))}
    for metric, margin in [("handled", 0.5), ("converted", 0.05)]:
        e, r = FIXTURE["expected"][metric], rows[metric]
        assert close(r["non_inferiority_p_value"], stats.norm.sf((e["diff"] + margin) / e["std_error"]), 1e-8), r
        assert r["cuped_diff"] is None and r["cuped_p_value"] is None, r
    adjusted = table(conn, "SELECT * FROM ab_adjusted(%s) WHERE metric_name = 'handled' AND variant = 'b'", (exp,))[0]
    assert adjusted["covariates"] == 1 and adjusted["clusters"] == FIXTURE["clusters"]["b"]


@pytest.mark.citus
def test_differential_impact_is_refused(conn, loaded):
    """Its tests compare a segment with the rest per user: refused (0A000), naming the unit."""
    before = conn.execute("SELECT count(*) FROM ab_insights").fetchone()[0]
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        conn.execute("SELECT * FROM ab_differential_impact(%s)", (loaded,))
    name = conn.execute("SELECT name FROM ab_experiments WHERE id = %s", (loaded,)).fetchone()[0]
    assert e.value.diag.message_primary == (f'experiment "{name}" is randomized by "branch": differential impact '
                                            "is not supported in a cluster-randomized experiment yet")
    assert e.value.diag.message_hint == "ab_breakdown compares each segment cluster-robust"
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM ab_insights").fetchone()[0] == before


@pytest.mark.citus
def test_interactions_are_cluster_robust_by_the_unit(conn):
    """With this experiment randomized by branch and the other per user, the interaction term
    and its standard error are statsmodels' OLS y ~ C(a) * C(b) with errors clustered by branch,
    and the assignments' independence is tested per user (the other's arms are random within
    each branch). Both randomized by branch: the independence test counts branches. By two
    different units: neither test is computed (two-way clustering)."""
    import numpy as np
    import pandas as pd
    import statsmodels.formula.api as smf
    from scipy import stats
    a = create(conn, "cluster-interaction-a", {"m": {}}, primary="m")
    b = conn.execute("SELECT ab_create_experiment(%s)", (Jsonb({
        "name": "cluster-interaction-b", "experiment_type": "feature", "primary_metric": "m", "salt": "ci-b",
        "variants": two_variants(), "metrics": {"m": {}}}),)).fetchone()[0]
    conn.execute("SELECT ab_start_experiment(%s)", (b,))
    conn.execute("SELECT count(ab_get_variant(%s, 'ci' || g, jsonb_build_object('branch', 'br' || g %% 40))), "
                 "count(ab_get_variant(%s, 'ci' || g)) FROM generate_series(1, 1200) g", (a, b))
    arms = conn.execute(
        "SELECT x.user_id, (SELECT NOT is_control FROM ab_variants WHERE id = x.variant_id)::int, "
        "(SELECT NOT is_control FROM ab_variants WHERE id = y.variant_id)::int, x.attributes->>'branch' "
        "FROM ab_assignments x JOIN ab_assignments y ON y.user_id = x.user_id "
        "WHERE x.experiment_id = %s AND y.experiment_id = %s ORDER BY 1", (a, b)).fetchall()
    rng = np.random.default_rng(3301)
    effect = {f"br{i}": rng.normal(0, 1.0) for i in range(40)}
    values = [5 + effect[br] + 0.3 * xa + 0.2 * xb + 0.4 * xa * xb + rng.normal(0, 1.0) for _, xa, xb, br in arms]
    conn.execute("SELECT count(ab_record_result(%s, 'm', v, u)) FROM unnest(%s::text[], %s::float8[]) AS t(u, v)",
                 (a, [r[0] for r in arms], values))
    frame = pd.DataFrame({"y": values, "a": [r[1] for r in arms], "b": [r[2] for r in arms], "g": [r[3] for r in arms]})
    fit = smf.ols("y ~ C(a) * C(b)", frame).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(frame["g"])[0]})
    term = "C(a)[T.1]:C(b)[T.1]"
    row = table(conn, "SELECT * FROM ab_interactions(%s) WHERE other_experiment = 'cluster-interaction-b'", (a,))[0]
    assert close(row["interaction"], fit.params[term], 1e-9), (row, fit.params[term])
    assert close(row["interaction_se"], fit.bse[term], 1e-8), (row, fit.bse[term])
    assert close(row["p_value"], stats.chi2.sf((fit.params[term] / fit.bse[term]) ** 2, 1), 1e-8), row
    counts = pd.crosstab(frame["a"], frame["b"]).to_numpy()
    assert close(row["independence_p"], stats.chi2_contingency(counts, correction=False).pvalue, 1e-9), row
    # Both randomized by branch: the table counts branches.
    c2 = create(conn, "cluster-interaction-c", {"m": {}}, primary="m")
    conn.execute("SELECT count(ab_get_variant(%s, 'ci' || g, jsonb_build_object('branch', 'br' || g %% 40))) "
                 "FROM generate_series(1, 1200) g", (c2,))
    branches = conn.execute(
        "SELECT (SELECT NOT is_control FROM ab_variants WHERE id = x.variant_id)::int, "
        "(SELECT NOT is_control FROM ab_variants WHERE id = y.variant_id)::int, count(DISTINCT x.attributes->>'branch') "
        "FROM ab_assignments x JOIN ab_assignments y ON y.user_id = x.user_id "
        "WHERE x.experiment_id = %s AND y.experiment_id = %s GROUP BY 1, 2 ORDER BY 1, 2", (a, c2)).fetchall()
    by_branch = np.array([[0, 0], [0, 0]])
    for xa, xc, n in branches:
        by_branch[xa][xc] = n
    row = table(conn, "SELECT * FROM ab_interactions(%s) WHERE other_experiment = 'cluster-interaction-c'", (a,))[0]
    assert close(row["independence_p"], stats.chi2_contingency(by_branch, correction=False).pvalue, 1e-9), (row, by_branch)
    # Randomized by two different units: no test.
    body = {"name": "cluster-interaction-d", "experiment_type": "agent_config", "primary_metric": "m", "salt": "ci-d",
            "variants": two_variants(), "metrics": {"m": {}}, "breakdowns": ["officer"], "randomization_unit": "officer"}
    d = conn.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),)).fetchone()[0]
    conn.execute("SELECT ab_start_experiment(%s)", (d,))
    conn.execute("SELECT count(ab_get_variant(%s, 'ci' || g, jsonb_build_object('officer', 'o' || g %% 25))) "
                 "FROM generate_series(1, 1200) g", (d,))
    row = table(conn, "SELECT * FROM ab_interactions(%s) WHERE other_experiment = 'cluster-interaction-d'", (a,))[0]
    assert row["shared_users"] == 1200 and row["independence_p"] is None and row["p_value"] is None, row
    # An attribute of the same name that splits the users otherwise (41 branches, not 40) is
    # another unit: no test, from either side.
    other_teams = create(conn, "cluster-interaction-e", {"m": {}}, primary="m")
    conn.execute("SELECT count(ab_get_variant(%s, 'ci' || g, jsonb_build_object('branch', 'br' || g %% 41))) "
                 "FROM generate_series(1, 1200) g", (other_teams,))
    conn.execute("SELECT count(ab_record_result(%s, 'm', g, 'ci' || g)) FROM generate_series(1, 1200) g",
                 (other_teams,))
    for this, other in ((a, "cluster-interaction-e"), (other_teams, "cluster-interaction-a")):
        row = table(conn, "SELECT * FROM ab_interactions(%s) WHERE other_experiment = %s", (this, other))[0]
        assert row["shared_users"] == 1200 and row["independence_p"] is None and row["p_value"] is None, row
    for e in (a, b, c2, d, other_teams):
        conn.execute("SELECT ab_stop_experiment(%s)", (e,))
