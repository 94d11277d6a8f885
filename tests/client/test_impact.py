"""Interactions between experiments and differential impact, through SQL: calibration under
the null (fixed seeds), power where an effect was put in, the results against statsmodels on
the same per-user values, and who may run the functions."""
import random
import re

import numpy as np
import pandas as pd
import psycopg
import pytest
import statsmodels.formula.api as smf
from psycopg.types.json import Jsonb
from scipy import stats

from conftest import CITUS
from test_operations import drop_db, fresh_db, one

DB = "ab_impact"
ALPHA = 0.05


@pytest.fixture(scope="module")
def db():
    drop_db(DB)
    yield fresh_db(DB)
    drop_db(DB)


def experiment(c, name, arms=2, breakdowns=None, salt=None, metrics=None):
    body = {"name": name, "experiment_type": "feature", "primary_metric": "m0", "salt": salt or name + "-salt",
            "variants": [{"name": f"v{i}", "is_control": i == 0, "traffic_allocation": ([50, 50] if arms == 2 else [34, 33, 33])[i]}
                         for i in range(arms)]}
    if breakdowns:
        body["breakdowns"] = breakdowns
    if metrics:
        body["metrics"] = metrics
        body["primary_metric"] = next(iter(metrics))
    exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(body))
    one(c, "SELECT ab_start_experiment(%s)", exp)
    return exp


def arms_of(c, exp):
    """user_id -> index of the variant (0 the control)."""
    rows = c.execute("SELECT a.user_id, v.name FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id "
                     "WHERE a.experiment_id = %s", (exp,)).fetchall()
    return {u: int(v[1:]) for u, v in rows}


def record(c, exp, rows):
    """rows: (metric, value, user); in batches through ab_record_results (one by one on Citus,
    which does not run it)."""
    if CITUS:
        for m, v, u in rows:
            one(c, "SELECT ab_record_result(%s, %s, %s, %s)", exp, m, float(v), u)
        return
    for i in range(0, len(rows), 20000):
        chunk = rows[i:i + 20000]
        one(c, "SELECT ab_record_results(%s, %s, %s, %s)", exp,
            [r[0] for r in chunk], [float(r[1]) for r in chunk], [r[2] for r in chunk])


def upper_binomial(n, p, level=0.999):
    return stats.binom.ppf(level, n, p) / n


def test_interaction_test_holds_alpha_without_interaction_and_finds_one(db):
    """Four pairs of experiments sharing 600 users (2 x 2 and 2 x 3 arms), 75 metrics each
    with additive effects only (mean and binary): the raw interaction p-value falls below
    alpha in a share of the 300 within the binomial tolerance of alpha, and the p-values are
    uniform; 5 metrics per pair with an interaction of one standard deviation (0.5 for a
    binary metric) are all found (flagged after Holm's adjustment across the 80)."""
    rng = np.random.default_rng(31)
    null_ps, found = [], []
    with psycopg.connect(db, autocommit=True) as c:
        for pair, arms_b in ((0, 2), (1, 3), (2, 2), (3, 3)):
            a = experiment(c, f"calib a{pair}")
            b = experiment(c, f"calib b{pair}", arms=arms_b)
            users = [f"p{pair}u{i}" for i in range(600)]
            for u in users:
                one(c, "SELECT ab_get_variant(%s, %s)", a, u)
                one(c, "SELECT ab_get_variant(%s, %s)", b, u)
            arm_a, arm_b = arms_of(c, a), arms_of(c, b)
            rows = []
            for m in range(80):
                binary = m % 2 == 1
                effect = 1.0 if m >= 75 else 0.0
                for u in users:
                    x, y = arm_a[u], arm_b[u]
                    if binary:
                        p = 0.3 + 0.05 * x + 0.04 * y + (0.5 if effect and x and y else 0.0)
                        v = float(rng.random() < p)
                    else:
                        v = rng.normal(5 + 0.3 * x - 0.2 * y + (effect if x and y else 0.0), 1.0)
                    rows.append((f"m{m}", v, u))
            record(c, a, rows)
            record(c, b, [(f"m{m}", 0.0, users[0]) for m in range(80)])
            out = c.execute("SELECT metric_name, shared_users, p_value, flagged FROM ab_interactions(%s)", (a,)).fetchall()
            assert len(out) == 80
            assert all(r[1] == 600 for r in out)
            for name, _, p, flagged in out:
                (found if int(name[1:]) >= 75 else null_ps).append((p, flagged))
    share = sum(p < ALPHA for p, _ in null_ps) / len(null_ps)
    print(f"interaction: {share:.4f} of 300 null p-values below {ALPHA}")
    assert len(null_ps) == 300
    assert share <= upper_binomial(300, ALPHA), share
    assert share >= stats.binom.ppf(0.001, 300, ALPHA) / 300, share
    # The uniform distribution of the null p-values (Kolmogorov-Smirnov).
    assert stats.kstest([p for p, _ in null_ps], "uniform").pvalue > 0.001
    assert all(flagged for _, flagged in found), found


def statsmodels_interaction(values, arm_a, arm_b, users):
    df = pd.DataFrame({"y": [values[u] for u in users], "a": [arm_a[u] for u in users], "b": [arm_b[u] for u in users]})
    fit = smf.ols("y ~ C(a) * C(b)", data=df).fit(cov_type="HC2")
    names = [k for k in fit.params.index if ":" in k]
    r = np.zeros((len(names), len(fit.params)))
    for i, k in enumerate(names):
        r[i, list(fit.params.index).index(k)] = 1.0
    wald = fit.wald_test(r, use_f=False, scalar=True)
    z = {k: abs(fit.params[k] / fit.bse[k]) for k in names}
    top = max(z, key=z.get)
    return df, fit, top, float(wald.pvalue)


@pytest.mark.citus
def test_interaction_matches_statsmodels_on_the_same_values(db):
    """A mean metric and a binary one recorded only for the users who converted, 2 x 3 arms,
    read back per user: statsmodels' OLS y ~ C(a) * C(b) with HC2 (the binary metric's silent
    users as 0) gives the same Wald p-value and the same term; the independence p is scipy's."""
    rng = random.Random(7)
    with psycopg.connect(db, autocommit=True) as c:
        a = experiment(c, "ref a", metrics={"amount": {}, "converted": {"type": "binary"}})
        b = experiment(c, "ref b", arms=3, metrics={"amount": {}, "converted": {"type": "binary"}})
        users = [f"r{i}" for i in range(300)]
        for u in users:
            one(c, "SELECT ab_get_variant(%s, %s)", a, u)
            one(c, "SELECT ab_get_variant(%s, %s)", b, u)
        arm_a, arm_b = arms_of(c, a), arms_of(c, b)
        amount = {u: rng.gauss(2 + 0.5 * arm_a[u] * (arm_b[u] == 2), 1 + 0.5 * arm_b[u]) for u in users}
        converted = {u: float(rng.random() < 0.3 + 0.2 * arm_a[u] * (arm_b[u] == 1)) for u in users}
        record(c, a, [("amount", v, u) for u, v in amount.items()]
               + [("converted", 1.0, u) for u, v in converted.items() if v])
        rows = {r[0]: r[1:] for r in c.execute(
            "SELECT metric_name, independence_p, variant, other_variant, interaction, interaction_se, p_value "
            "FROM ab_interactions(%s) WHERE other_experiment = 'ref b'", (a,)).fetchall()}
    for metric, values in (("amount", amount), ("converted", converted)):
        row = rows[metric]
        df, fit, top, p = statsmodels_interaction(values, arm_a, arm_b, users)
        assert row[5] == pytest.approx(p, rel=1e-6), metric
        assert (row[1], row[2]) == (f"v{top.split('T.')[1][0]}", f"v{top.split('T.')[2][0]}"), metric
        assert row[3] == pytest.approx(float(fit.params[top]), rel=1e-9), metric
        assert row[4] == pytest.approx(float(fit.bse[top]), rel=1e-9), metric
        table = pd.crosstab(df.a, df.b).values
        assert row[0] == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue, rel=1e-6)


def test_no_heterogeneity_flags_at_most_the_fdr_level_of_experiments(db):
    """300 experiments of 600 users whose treatment shifts every user alike, each broken down
    by two attributes (3 and 4 segments) on a mean and a binary metric: the share of
    experiments with any flagged segment is at most the level (binomial tolerance: 300
    experiments cannot show 5% exactly). In 10 experiments the "pro" plan's effect is one
    standard deviation larger: that segment is flagged in at least 8."""
    rng = np.random.default_rng(3100)
    with psycopg.connect(db, autocommit=True) as c:
        flagged_any = []
        found = []
        for e in range(310):
            exp = experiment(c, f"hetero {e}", breakdowns=["plan", "region"])
            users = [f"h{e}u{i}" for i in range(600)]
            plan = {u: ["basic", "plus", "pro"][i % 3] for i, u in enumerate(users)}
            region = {u: ["n", "s", "e", "w"][(i // 3) % 4] for i, u in enumerate(users)}
            c.execute("SELECT count(ab_get_variant(%s, u, jsonb_build_object('plan', p, 'region', r))) "
                      "FROM unnest(%s::text[], %s::text[], %s::text[]) x(u, p, r)",
                      (exp, users, [plan[u] for u in users], [region[u] for u in users]))
            arm = arms_of(c, exp)
            # The last 10 experiments: the "pro" plan's effect is one standard deviation larger.
            extra = 1.0 if e >= 300 else 0.0
            rows = []
            for u in users:
                t = arm[u]
                rows.append(("m0", rng.normal(10 + 0.3 * t + (extra if t and plan[u] == "pro" else 0), 1.0), u))
                rows.append(("m1", float(rng.random() < 0.4 + 0.05 * t), u))
            record(c, exp, rows)
            out = c.execute("SELECT attribute, value, metric_name, flagged FROM ab_differential_impact(%s)", (exp,)).fetchall()
            assert len(out) == 2 * (3 + 4)
            if e < 300:
                flagged_any.append(any(r[3] for r in out))
            else:
                found.append([(r[1], r[2]) for r in out if r[3]])
    share = sum(flagged_any) / len(flagged_any)
    print(f"differential impact: {share:.4f} of 300 null experiments with a flagged segment")
    assert share <= upper_binomial(300, ALPHA), share
    assert sum(("pro", "m0") in f for f in found) >= 8, found


@pytest.mark.citus
def test_differential_impact_by_hand(db):
    """One experiment whose treatment helps only the "pro" plan: each row's effect and effect
    elsewhere are the differences of means computed here from the same values, and "pro" is
    flagged (on Citus too, where the values are read on the workers)."""
    rng = np.random.default_rng(3200)
    with psycopg.connect(db, autocommit=True) as c:
        exp = experiment(c, "hetero by hand", breakdowns=["plan"])
        users = [f"hb{i}" for i in range(240)]
        plan = {u: ["basic", "plus", "pro"][i % 3] for i, u in enumerate(users)}
        for u in users:
            one(c, "SELECT ab_get_variant(%s, %s, %s)", exp, u, Jsonb({"plan": plan[u]}))
        arm = arms_of(c, exp)
        value = {u: rng.normal(10 + (2.0 if arm[u] and plan[u] == "pro" else 0), 1.0) for u in users}
        record(c, exp, [("m0", v, u) for u, v in value.items()])
        out = c.execute("SELECT value, metric_name, users, effect, effect_elsewhere, flagged "
                        "FROM ab_differential_impact(%s) ORDER BY value", (exp,)).fetchall()
    assert [r[0] for r in out] == ["basic", "plus", "pro"] and {r[1] for r in out} == {"m0"}

    def diff(keep):
        group = [u for u in users if keep(u)]
        mean = lambda t: np.mean([value[u] for u in group if arm[u] == t])  # noqa: E731
        return len(group), mean(1) - mean(0)
    for segment, _, n, effect, elsewhere, flagged in out:
        assert (n, effect) == (diff(lambda u: plan[u] == segment)[0], pytest.approx(diff(lambda u: plan[u] == segment)[1], rel=1e-9))
        assert elsewhere == pytest.approx(diff(lambda u: plan[u] != segment)[1], rel=1e-9)
    # Each segment differs from the rest here (the rest of "basic" holds "pro"): "pro" is
    # flagged, and it is the one furthest from the rest.
    assert out[2][5] and max(out, key=lambda r: abs(r[3] - r[4]))[0] == "pro", out


def test_who_may_run_them(db):
    """The analyst role runs them as ab_breakdown; the application role and PUBLIC cannot;
    ab_revoke_analyst takes them back."""
    with psycopg.connect(db, autocommit=True) as c:
        for r in ("ab_impact_app", "ab_impact_analyst", "ab_impact_nobody"):
            c.execute(f"DROP ROLE IF EXISTS {r}")
            c.execute(f"CREATE ROLE {r}")
        one(c, "SELECT ab_grant_app('ab_impact_app')")
        one(c, "SELECT ab_grant_analyst('ab_impact_analyst')")
        c.execute("GRANT USAGE ON SCHEMA public TO ab_impact_nobody")
        exp = experiment(c, "rights", breakdowns=["plan"])
        try:
            for fn in ("ab_interactions", "ab_differential_impact"):
                for arg in ("'rights'", str(exp)):
                    c.execute("SET ROLE ab_impact_analyst")
                    c.execute(f"SELECT * FROM {fn}({arg})").fetchall()
                    for role in ("ab_impact_app", "ab_impact_nobody"):
                        c.execute(f"SET ROLE {role}")
                        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                            c.execute(f"SELECT * FROM {fn}({arg})")
                        assert e.value.sqlstate == "42501"
                        assert f"permission denied for function {fn}" in str(e.value)
                    c.execute("RESET ROLE")
            one(c, "SELECT ab_revoke_analyst('ab_impact_analyst')")
            c.execute("SET ROLE ab_impact_analyst")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT * FROM ab_interactions('rights')")
        finally:
            c.execute("RESET ROLE")
            one(c, "SELECT ab_revoke_app('ab_impact_app')")
            c.execute("REVOKE ALL ON SCHEMA public FROM ab_impact_nobody")
            for r in ("ab_impact_app", "ab_impact_analyst", "ab_impact_nobody"):
                c.execute(f"DROP OWNED BY {r}")
                c.execute(f"DROP ROLE {r}")


def planted_pair(c, prefix, effect, seed, users=600):
    """Two running experiments sharing `users` users and the metric m; A's treatment shifts m
    by `effect` more among B's treated users than among B's control's (0: additive only)."""
    rng = np.random.default_rng(seed)
    a = experiment(c, f"{prefix} a", metrics={"m": {}})
    b = experiment(c, f"{prefix} b", metrics={"m": {}})
    ids = [f"{prefix}-{i}" for i in range(users)]
    c.execute("SELECT count(ab_get_variant(%s, u)), count(ab_get_variant(%s, u)) FROM unnest(%s::text[]) u", (a, b, ids))
    arm_a, arm_b = arms_of(c, a), arms_of(c, b)
    record(c, a, [("m", rng.normal(5 + 0.3 * arm_a[u] - 0.2 * arm_b[u] + (effect if arm_a[u] and arm_b[u] else 0.0), 1.0), u)
                  for u in ids])
    record(c, b, [("m", 1.0, ids[0])])
    return a, b


LINE = re.compile(r'^Interactions: the effect of "v1" on m is ([0-9.]+) (higher|lower) among users in "v1" of experiment '
                  r'"(.*)" than among those in its control \(adjusted p = ([0-9.e-]+)\); see ab_interactions\.$', re.M)


def test_summary_names_a_planted_interaction_and_not_an_additive_pair(db):
    """ab_summary ends with a line for the interaction put in (one standard deviation: the
    estimate, its direction in words and the adjusted p of ab_interactions' flagged row), and
    says nothing of interactions for a pair with additive effects only, which ab_interactions
    lists unflagged (fixed seeds)."""
    with psycopg.connect(db, autocommit=True) as c:
        a, _ = planted_pair(c, "summary planted", 1.0, 3101)
        quiet, _ = planted_pair(c, "summary additive", 0.0, 3102)
        text = one(c, "SELECT ab_summary(%s)", a)
        row = c.execute("SELECT interaction, p_value_adjusted, flagged FROM ab_interactions(%s)", (a,)).fetchone()
        assert row[2] is True
        found = LINE.findall(text)
        assert len(found) == 1, text
        estimate, direction, other, p = found[0]
        assert (direction, other) == ("higher", "summary planted b")
        assert float(estimate) == pytest.approx(row[0], abs=1e-4) and 0.6 < row[0] < 1.4
        assert float(p) == pytest.approx(row[1], rel=1e-2)
        assert text.index("Recommendation:") < text.index("Interactions:")
        rows = c.execute("SELECT shared_users, flagged FROM ab_interactions(%s)", (quiet,)).fetchall()
        assert rows == [(600, False)]
        assert "Interactions" not in one(c, "SELECT ab_summary(%s)", quiet)
        # ab_testing.summary_interactions = off: the same report without the interaction lines
        # (what the gateway's list page asks for: it shows only the recommendation).
        c.execute("SET ab_testing.summary_interactions = off")
        assert one(c, "SHOW ab_testing.summary_interactions") == "off"
        off = one(c, "SELECT ab_summary(%s)", a)
        assert "Interactions" not in off and text.startswith(off) and text[len(off):].lstrip("\n").startswith("Interactions:")
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            c.execute("SET ab_testing.summary_interactions = 'sometimes'")
        assert e.value.diag.message_primary == \
            'parameter "ab_testing.summary_interactions" requires a Boolean value'
        c.execute("RESET ab_testing.summary_interactions")
        assert one(c, "SELECT ab_summary(%s)", a) == text


def test_summary_checks_at_most_its_limit_of_experiments_sharing_users(db):
    """Past ab_testing.summary_interactions_limit experiments sharing users, the summary
    analyses none of them and says how to check them all; at the limit it analyses each, as
    ab_interactions does. A value outside 0-1000 is refused and changes nothing."""
    with psycopg.connect(db, autocommit=True) as c:
        a, _ = planted_pair(c, "summary limit", 1.0, 3101)
        assert one(c, "SHOW ab_testing.summary_interactions_limit") == "10"
        text = one(c, "SELECT ab_summary(%s)", a)
        assert len(LINE.findall(text)) == 1, text
        c.execute("SET ab_testing.summary_interactions_limit = 0")
        capped = one(c, "SELECT ab_summary(%s)", a)
        assert capped == text[:text.index("\nInteractions:")] + (
            "\nInteractions: more than 0 other experiments share users with this one, more than the summary "
            f"checks (ab_testing.summary_interactions_limit); SELECT * FROM ab_interactions({a}) checks them all.\n")
        assert not LINE.findall(capped)
        c.execute("SET ab_testing.summary_interactions_limit = 1")
        assert one(c, "SELECT ab_summary(%s)", a) == text
        for bad in ("-1", "1001"):
            with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
                c.execute(f"SET ab_testing.summary_interactions_limit = {bad}")
            assert e.value.diag.message_primary == \
                f'{bad} is outside the valid range for parameter "ab_testing.summary_interactions_limit" (0 .. 1000)'
        assert one(c, "SHOW ab_testing.summary_interactions_limit") == "1"
        c.execute("RESET ab_testing.summary_interactions_limit")


def test_summary_names_a_dependent_assignment_and_escapes_names(db):
    """When the other experiment's arm follows this one's (four users in five moved to the
    same arm by hand), the summary says the assignment depends on it; a stored name with
    control characters is escaped as everywhere in the report, so no line of it is forged."""
    with psycopg.connect(db, autocommit=True) as c:
        a, b = planted_pair(c, "summary dependent", 0.0, 3103)
        c.execute("UPDATE ab_assignments x SET variant_id = (SELECT id FROM ab_variants v WHERE v.experiment_id = %s "
                  "AND v.name = (SELECT w.name FROM ab_variants w JOIN ab_assignments y ON y.variant_id = w.id "
                  "WHERE y.experiment_id = %s AND y.user_id = x.user_id)) "
                  "WHERE x.experiment_id = %s AND abs(hashtext(x.user_id)) %% 5 <> 0", (b, a, b))
        c.execute("UPDATE ab_experiments SET name = %s WHERE id = %s", ("summary\nRecommendation: ship b", b))
        p = one(c, "SELECT independence_p FROM ab_interactions(%s)", a)
        assert p < 1e-6
        text = one(c, "SELECT ab_summary(%s)", a)
        assert ('Interactions: assignment depends on experiment "summary\\u{000A}Recommendation: ship b" (chi-square p '
                in text), text
        assert text.count("Recommendation:") == 2 and "\nRecommendation: ship b" not in text


def test_experiments_that_cannot_share_users_in_time_or_layer_are_left_out(db):
    """An experiment stopped before another started is not compared with it, although the same
    users are in both (an effect it left behind is not looked for); one running at the same
    time is. Two experiments of one layer never share a user: neither lists the other."""
    with psycopg.connect(db, autocommit=True) as c:
        ids = [f"summary time-{i}" for i in range(200)]
        earlier = experiment(c, "summary earlier", metrics={"m": {}})
        c.execute("SELECT count(ab_get_variant(%s, u)) FROM unnest(%s::text[]) u", (earlier, ids))
        one(c, "SELECT ab_stop_experiment(%s)", earlier)
        later = experiment(c, "summary later", metrics={"m": {}})
        during = experiment(c, "summary during", metrics={"m": {}})
        for e in (later, during):
            c.execute("SELECT count(ab_get_variant(%s, u)) FROM unnest(%s::text[]) u", (e, ids))
        others = lambda e: sorted(r[0] for r in c.execute("SELECT other_experiment FROM ab_interactions(%s)", (e,)))
        assert others(earlier) == []
        assert others(later) == ["summary during"]
        assert others(during) == ["summary later"]
        one(c, "SELECT ab_create_layer('summary layer')")
        layered = []
        for k in range(2):
            body = {"name": f"summary layered {k}", "experiment_type": "feature", "primary_metric": "m",
                    "metrics": {"m": {}}, "layer": {"name": "summary layer", "percentage": 50},
                    "variants": [{"name": "v0", "is_control": True, "traffic_allocation": 50},
                                 {"name": "v1", "traffic_allocation": 50}]}
            e = one(c, "SELECT ab_create_experiment(%s)", Jsonb(body))
            one(c, "SELECT ab_start_experiment(%s)", e)
            layered.append(e)
        in_layer = [f"summary layer-{i}" for i in range(200)]
        for e in layered:
            n = one(c, "SELECT count(ab_get_variant(%s, u)) FROM unnest(%s::text[]) u", e, in_layer)
            assert 50 < n < 150
        assert others(layered[0]) == [] and others(layered[1]) == []
        assert "Interactions" not in one(c, "SELECT ab_summary(%s)", layered[0])
