//! Agreement with scipy: the fixtures come from tests/fixtures/generate.py.

use ab_core::bucketing::point;
use ab_core::stats::dist::{t_isf, t_sf};
use ab_core::stats::welch::{welch_test, Sample};
use serde_json::Value;

fn fixture(name: &str) -> Vec<Value> {
    let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).unwrap()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[track_caller]
fn assert_rel(actual: f64, expected: f64, rel: f64, what: &str) {
    let tol = rel * expected.abs();
    assert!((actual - expected).abs() <= tol.max(1e-300), "{what}: got {actual:e}, scipy {expected:e}");
}

#[test]
fn welch_matches_scipy() {
    for case in fixture("welch.json") {
        let a = Sample { n: f(&case, "n_a"), mean: f(&case, "mean_a"), variance: f(&case, "var_a") };
        let b = Sample { n: f(&case, "n_b"), mean: f(&case, "mean_b"), variance: f(&case, "var_b") };
        let r = welch_test(&a, &b, f(&case, "alpha")).unwrap();
        let what = format!("{case}");
        assert_rel(r.t.unwrap(), f(&case, "t_stat"), 1e-9, &what);
        assert_rel(r.df.unwrap(), f(&case, "df"), 1e-9, &what);
        assert_rel(r.p_value, f(&case, "p_value"), 1e-6, &what);
        assert_rel(r.diff, f(&case, "diff"), 1e-12, &what);
        assert_rel(r.ci_lower, f(&case, "ci_lower"), 1e-6, &what);
        assert_rel(r.ci_upper, f(&case, "ci_upper"), 1e-6, &what);
    }
}

#[test]
fn t_quantiles_match_scipy() {
    for case in fixture("t_quantiles.json") {
        assert_rel(t_isf(f(&case, "q"), f(&case, "df")), f(&case, "isf"), 1e-9, &case.to_string());
    }
}

#[test]
fn t_tails_match_scipy() {
    for case in fixture("t_tails.json") {
        assert_rel(t_sf(f(&case, "t"), f(&case, "df")), f(&case, "sf"), 1e-9, &case.to_string());
    }
}

#[test]
fn bucketing_matches_python_xxhash() {
    for case in fixture("bucketing.json") {
        let p = point(case["salt"].as_str().unwrap(), case["user_id"].as_str().unwrap());
        assert_eq!(p as u64, case["point"].as_u64().unwrap(), "{case}");
    }
}

#[test]
fn proportion_test_matches_statsmodels() {
    use ab_core::stats::proportion::proportion_test;
    for c in fixture("proportions.json") {
        let r = proportion_test(f(&c, "x_a"), f(&c, "n_a"), f(&c, "x_b"), f(&c, "n_b"), f(&c, "alpha")).unwrap();
        let what = c.to_string();
        assert_rel(r.z.unwrap(), f(&c, "z_stat"), 1e-9, &what);
        assert_rel(r.p_value, f(&c, "p_value"), 1e-6, &what);
        assert_rel(r.diff, f(&c, "diff"), 1e-12, &what);
        assert_rel(r.ci_lower, f(&c, "ci_lower"), 1e-9, &what);
        assert_rel(r.ci_upper, f(&c, "ci_upper"), 1e-9, &what);
    }
}

#[test]
fn srm_matches_scipy_chisquare() {
    use ab_core::stats::srm::srm_test;
    for c in fixture("srm.json") {
        let obs: Vec<f64> = c["observed"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let w: Vec<f64> = c["weights"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let r = srm_test(&obs, &w).unwrap();
        assert!((r.chi2 - f(&c, "chi2")).abs() <= 1e-9 * f(&c, "chi2").max(1e-9), "{c}");
        assert_rel(r.p_value, f(&c, "p_value"), 1e-6, &c.to_string());
    }
}

#[test]
fn sample_size_matches_the_formula() {
    use ab_core::stats::power::sample_size;
    for c in fixture("sample_size.json") {
        let n = sample_size(f(&c, "std_dev"), f(&c, "mde"), f(&c, "alpha"), f(&c, "power")).unwrap();
        assert_eq!(n, c["n"].as_u64().unwrap(), "{c}");
    }
}

#[test]
fn adjustments_match_statsmodels() {
    use ab_core::stats::multiple::{benjamini_hochberg, holm};
    for c in fixture("adjust.json") {
        let p: Vec<f64> = c["p"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        for (got, key) in [(holm(&p), "holm"), (benjamini_hochberg(&p), "bh")] {
            for (g, e) in got.iter().zip(c[key].as_array().unwrap()) {
                assert_rel(*g, e.as_f64().unwrap(), 1e-12, &format!("{key} {c}"));
            }
        }
    }
}

#[test]
fn sequential_matches_the_reference_implementation() {
    use ab_core::stats::sequential::{half_width, p_value};
    for c in fixture("sequential.json") {
        let (d, se2, n, a, tuning) = (f(&c, "diff"), f(&c, "se2"), f(&c, "n"), f(&c, "alpha"), f(&c, "tuning"));
        assert_rel(half_width(se2, n, a, tuning), f(&c, "half_width"), 1e-12, &c.to_string());
        assert_rel(p_value(d, se2, n, tuning), f(&c, "p_value"), 1e-6, &c.to_string());
    }
}

#[test]
fn bayes_matches_scipy() {
    use ab_core::definition::Direction;
    use ab_core::stats::bayes::bayes;
    for c in fixture("bayes.json") {
        let dir = Direction::parse(c["direction"].as_str().unwrap()).unwrap();
        let r = bayes(f(&c, "diff"), f(&c, "se"), dir);
        assert_rel(r.chance_to_beat_control, f(&c, "chance_to_beat_control"), 1e-9, &c.to_string());
        assert_rel(r.expected_loss, f(&c, "expected_loss"), 1e-9, &c.to_string());
    }
}

#[test]
fn bandit_matches_scipy() {
    use ab_core::analysis::{analyze_metric, ArmInput, MetricInput, Settings};
    use ab_core::bandit::{chance_best, srm_by_period};
    use ab_core::definition::{Direction, MetricDef};
    use ab_core::stats::Moments;

    let path = format!("{}/../tests/fixtures/bandit.json", env!("CARGO_MANIFEST_DIR"));
    let all: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).unwrap();
    let floats = |v: &Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };

    for case in all["chance_best"].as_array().unwrap() {
        let post: Vec<(f64, f64)> = case["posteriors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
            .collect();
        let lower = case["lower"].as_bool().unwrap();
        let got = chance_best(&post, if lower { Direction::Lower } else { Direction::Higher });
        for (g, e) in got.iter().zip(floats(&case["chance_best"])) {
            assert!((g - e).abs() <= 1e-9 + 1e-7 * e, "{case}: got {got:?}");
        }
    }

    for case in all["stratified"].as_array().unwrap() {
        let arms: Vec<ArmInput> = case["cells"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, arm)| {
                let periods: Vec<(u64, Moments)> = arm
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|cell| {
                        let mut m = Moments::default();
                        floats(cell).iter().for_each(|&x| m.add(x));
                        (m.n as u64, m)
                    })
                    .collect();
                let observed = periods.iter().fold(Moments::default(), |acc, c| acc.merge(&c.1));
                ArmInput {
                    variant: format!("v{i}"),
                    is_control: i == 0,
                    assigned: observed.n as u64,
                    observed,
                    covariate: None,
                    periods,
                    ratio: None,
                    quantile: None,
                }
            })
            .collect();
        let r = analyze_metric(
            &Settings::fixed(f(case, "alpha"), 2),
            &MetricInput { cap: None, name: "m".into(), def: MetricDef::default(), arms },
        );
        let what = "stratified case";
        for (a, e) in r.arms.iter().zip(floats(&case["means"])) {
            assert_rel(a.mean.unwrap(), e, 1e-12, what);
        }
        let c = r.arms[1].comparison.unwrap();
        assert_eq!(c.test, "stratified");
        assert_rel(c.diff, f(case, "diff"), 1e-9, what);
        assert_rel(c.ci_lower, f(case, "ci_lower"), 1e-9, what);
        assert_rel(c.ci_upper, f(case, "ci_upper"), 1e-9, what);
        assert_rel(c.p_value, f(case, "p_value"), 1e-6, what);
    }

    for case in all["srm"].as_array().unwrap() {
        let periods: Vec<(Vec<f64>, Vec<f64>)> =
            case["periods"].as_array().unwrap().iter().map(|p| (floats(&p[0]), floats(&p[1]))).collect();
        let r = srm_by_period(&periods).unwrap();
        assert_rel(r.chi2, f(case, "chi2"), 1e-12, "srm chi2");
        assert_rel(r.p_value, f(case, "p_value"), 1e-9, "srm p");
    }
}

/// Ratio metrics against GrowthBook's gbstats (RatioStatistic, two-sided t-test of the
/// absolute difference): per-user numerators and denominators built from the fixture's raw
/// results, every assigned user counted (0 for a part not recorded).
#[test]
fn ratio_matches_gbstats() {
    use ab_core::analysis::{analyze_metric, ArmInput, MetricInput, Settings};
    use ab_core::definition::MetricDef;
    use ab_core::stats::cuped::CoMoments;
    use ab_core::stats::Moments;
    use std::collections::HashMap;

    let path = format!("{}/../tests/fixtures/ratio.json", env!("CARGO_MANIFEST_DIR"));
    let all: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut per_user: HashMap<(&str, &str), f64> = HashMap::new();
    for r in all["results"].as_array().unwrap() {
        let metric = r["metric"].as_str().unwrap();
        let agg = all["metrics"][metric]["aggregation"].as_str().unwrap();
        let v = if agg == "count" { 1.0 } else { f(r, "value") };
        *per_user.entry((metric, r["user_id"].as_str().unwrap())).or_default() += v;
    }
    let variants = ["control", "short", "long"];
    for (name, spec) in all["metrics"].as_object().unwrap() {
        if spec["type"] != "ratio" {
            continue;
        }
        let def: MetricDef = serde_json::from_value(spec.clone()).unwrap();
        let (num, den) = def.ratio_of().unwrap();
        let arms: Vec<ArmInput> = variants
            .iter()
            .map(|&v| {
                let mut co = CoMoments::default();
                for a in all["assignments"].as_array().unwrap().iter().filter(|a| a["variant"] == v) {
                    let u = a["user_id"].as_str().unwrap();
                    co.add(
                        per_user.get(&(num, u)).copied().unwrap_or(0.0),
                        per_user.get(&(den, u)).copied().unwrap_or(0.0),
                    );
                }
                ArmInput {
                    variant: v.into(),
                    is_control: v == "control",
                    assigned: co.n as u64,
                    observed: Moments::default(),
                    covariate: None,
                    periods: vec![],
                    ratio: Some(co),
                    quantile: None,
                }
            })
            .collect();
        let r = analyze_metric(&Settings::fixed(0.05, 100), &MetricInput { cap: None, name: name.clone(), def, arms });
        for e in all["expected"].as_array().unwrap().iter().filter(|e| e["metric"] == name.as_str()) {
            let a = r.arms.iter().find(|a| a.variant == e["variant"].as_str().unwrap()).unwrap();
            let what = format!("{name}/{}", a.variant);
            assert_eq!(a.users, e["users"].as_u64().unwrap(), "{what}");
            assert_rel(a.mean.unwrap(), f(e, "mean"), 1e-12, &what);
            assert_rel(a.std_dev.unwrap(), f(e, "std_dev"), 1e-9, &what);
            let Some(c) = a.comparison else {
                assert!(a.is_control, "{what}");
                continue;
            };
            assert_eq!(c.test, "welch");
            assert_rel(c.diff, f(e, "diff"), 1e-9, &what);
            assert_rel(c.ci_lower, f(e, "ci_lower"), 1e-9, &what);
            assert_rel(c.ci_upper, f(e, "ci_upper"), 1e-9, &what);
            assert_rel(c.p_value, f(e, "p_value"), 1e-6, &what);
            assert_rel(c.relative_lift.unwrap(), f(e, "relative_lift"), 1e-9, &what);
            assert_rel(c.effect_size.unwrap(), f(e, "effect_size"), 1e-9, &what);
        }
    }
}

/// An arm from summary statistics (n, mean, variance); "a" is the control.
fn arm(name: &str, n: f64, mean: f64, var: f64) -> ab_core::analysis::ArmInput {
    ab_core::analysis::ArmInput {
        variant: name.into(),
        is_control: name == "a",
        assigned: n as u64,
        observed: ab_core::stats::Moments { n, mean, m2: var * (n - 1.0) },
        covariate: None,
        periods: vec![],
        ratio: None,
        quantile: None,
    }
}

/// The relative lift's CI and p-value against gbstats (delta method; sequential CIs too),
/// binary ones against the normal-theory definition, and the guardrails' non-inferiority
/// p-values against spotify-confidence (continuous) and the score test (binary).
#[test]
fn relative_and_non_inferiority_match_the_references() {
    use ab_core::analysis::{analyze_metric, ArmInput, MetricInput, Settings};
    use ab_core::definition::{Direction, MetricDef, MetricType};

    let path = format!("{}/../tests/fixtures/inference.json", env!("CARGO_MANIFEST_DIR"));
    let all: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // Per-user 0/1 values: x ones among n.
    let binary = |name: &str, x: f64, n: f64| arm(name, n, x / n, x * (1.0 - x / n) / (n - 1.0));
    let run = |settings: Settings, def: MetricDef, a: ArmInput, b: ArmInput| {
        let r = analyze_metric(&settings, &MetricInput { name: "m".into(), def, cap: None, arms: vec![a, b] });
        r.arms[1].comparison.unwrap()
    };
    let direction = |c: &Value| if c["direction"] == "lower" { Direction::Lower } else { Direction::Higher };

    for c in all["relative"].as_array().unwrap() {
        let settings =
            Settings { sequential_tuning: c["sequential_tuning"].as_f64(), ..Settings::fixed(f(c, "alpha"), 2) };
        let r = run(
            settings,
            MetricDef::default(),
            arm("a", f(c, "n_a"), f(c, "mean_a"), f(c, "var_a")),
            arm("b", f(c, "n_b"), f(c, "mean_b"), f(c, "var_b")),
        );
        let what = c.to_string();
        assert_rel(r.relative_lift.unwrap(), f(c, "relative_lift"), 1e-12, &what);
        let (lo, hi) = r.relative_ci.unwrap();
        assert_rel(lo, f(c, "ci_lower"), 1e-9, &what);
        assert_rel(hi, f(c, "ci_upper"), 1e-9, &what);
        assert_rel(r.relative_p_value.unwrap(), f(c, "p_value"), 1e-6, &what);
    }
    for c in all["relative_binary"].as_array().unwrap() {
        let def = MetricDef { kind: MetricType::Binary, ..Default::default() };
        let r = run(
            Settings::fixed(f(c, "alpha"), 2),
            def,
            binary("a", f(c, "x_a"), f(c, "n_a")),
            binary("b", f(c, "x_b"), f(c, "n_b")),
        );
        let what = c.to_string();
        let (lo, hi) = r.relative_ci.unwrap();
        assert_rel(lo, f(c, "ci_lower"), 1e-9, &what);
        assert_rel(hi, f(c, "ci_upper"), 1e-9, &what);
        assert_rel(r.relative_p_value.unwrap(), f(c, "p_value"), 1e-6, &what);
    }
    for c in all["non_inferiority"].as_array().unwrap() {
        let def = MetricDef { direction: direction(c), margin: Some(f(c, "margin")), ..Default::default() };
        let r = run(
            Settings::fixed(0.05, 2),
            def,
            arm("a", f(c, "n_a"), f(c, "mean_a"), f(c, "var_a")),
            arm("b", f(c, "n_b"), f(c, "mean_b"), f(c, "var_b")),
        );
        let ni = r.non_inferiority.unwrap();
        assert_rel(ni.p_value, f(c, "p_value"), 1e-6, &c.to_string());
        assert_eq!(ni.passed, f(c, "p_value") < 0.05);
    }
    for c in all["non_inferiority_binary"].as_array().unwrap() {
        let def = MetricDef {
            kind: MetricType::Binary,
            direction: direction(c),
            margin: Some(f(c, "margin")),
            ..Default::default()
        };
        let r = run(
            Settings::fixed(0.05, 2),
            def,
            binary("a", f(c, "x_a"), f(c, "n_a")),
            binary("b", f(c, "x_b"), f(c, "n_b")),
        );
        assert_rel(r.non_inferiority.unwrap().p_value, f(c, "p_value"), 1e-9, &c.to_string());
    }
}

/// The Bayesian read (ab_bayes) against gbstats' EffectBayesianABTest: flat and proper priors,
/// absolute and relative effects, both directions.
#[test]
fn bayesian_posterior_matches_gbstats() {
    use ab_core::analysis::{analyze_metric, MetricInput, Settings};
    use ab_core::definition::{Direction, MetricDef};
    use ab_core::stats::bayes::posterior;

    for c in fixture("bayesian.json") {
        let direction = if c["direction"] == "lower" { Direction::Lower } else { Direction::Higher };
        let def = MetricDef { direction, ..Default::default() };
        let arms = vec![
            arm("a", f(&c, "n_a"), f(&c, "mean_a"), f(&c, "var_a")),
            arm("b", f(&c, "n_b"), f(&c, "mean_b"), f(&c, "var_b")),
        ];
        let r = analyze_metric(&Settings::fixed(0.05, 2), &MetricInput { name: "m".into(), def, cap: None, arms });
        let cmp = r.arms[1].comparison.unwrap();
        let (estimate, var) = if c["relative"].as_bool().unwrap() {
            (cmp.relative_lift.unwrap(), cmp.relative_variance.unwrap())
        } else {
            (cmp.diff, cmp.variance)
        };
        let prior = c["prior"].as_object().map(|p| (p["mean"].as_f64().unwrap(), p["sd"].as_f64().unwrap()));
        let p = posterior(estimate, var, prior, 0.05, direction).unwrap();
        let what = c.to_string();
        assert_rel(p.mean, f(&c, "posterior_mean"), 1e-9, &what);
        assert_rel(p.sd, f(&c, "posterior_sd"), 1e-9, &what);
        assert_rel(p.ci_lower, f(&c, "credible_lower"), 1e-9, &what);
        assert_rel(p.ci_upper, f(&c, "credible_upper"), 1e-9, &what);
        assert_rel(p.chance_to_beat_control, f(&c, "chance_to_beat_control"), 1e-9, &what);
        assert_rel(p.risk_of_keeping_control, f(&c, "risk_of_keeping_control"), 1e-7, &what);
        assert_rel(p.risk_of_shipping, f(&c, "risk_of_shipping"), 1e-6, &what);
    }
}

/// Lin's estimator with cluster-robust variances (tests/fixtures/regression.json, statsmodels
/// OLS with cov_type="cluster") on a cluster-randomized experiment, and the naive HC1
/// standard error it would report per user.
#[test]
fn cluster_robust_regression_matches_statsmodels() {
    use ab_core::stats::regression::{
        adjusted_mean_variance, cluster_meat_of_rows, compare, fit, meat_of_rows, pooled_means, small_sample_factor,
        ArmStats,
    };
    use std::collections::HashMap;
    let path = format!("{}/../tests/fixtures/regression.json", env!("CARGO_MANIFEST_DIR"));
    let all: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let c = &all["cluster"];
    let y: HashMap<&str, f64> =
        c["results"].as_array().unwrap().iter().map(|r| (r["user_id"].as_str().unwrap(), f(r, "value"))).collect();
    let pre: HashMap<&str, f64> =
        c["covariates"].as_array().unwrap().iter().map(|r| (r["user_id"].as_str().unwrap(), f(r, "value"))).collect();
    let arms = ["control", "b", "c"];
    let mut rows: Vec<Vec<(f64, Vec<f64>)>> = vec![vec![]; 3];
    let mut clusters: Vec<Vec<usize>> = vec![vec![]; 3];
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for a in c["assignments"].as_array().unwrap() {
        let u = a["user_id"].as_str().unwrap();
        let i = arms.iter().position(|v| *v == a["variant"].as_str().unwrap()).unwrap();
        rows[i].push((y[u], vec![pre[u]]));
        let next = ids.len();
        clusters[i].push(*ids.entry(a["branch"].as_str().unwrap()).or_insert(next));
    }
    let stats: Vec<ArmStats> = rows.iter().map(|r| ArmStats::from_rows(r)).collect();
    let center = pooled_means(&stats);
    let fits: Vec<_> = stats.iter().map(|s| fit(s, &center).unwrap()).collect();
    let n: f64 = stats.iter().map(|s| s.n).sum();
    let k: f64 = fits.iter().map(|f| 1.0 + f.kept.len() as f64).sum();
    let g = ids.len() as f64;
    let var = |i: usize, clustered: bool| {
        let m = if clustered {
            cluster_meat_of_rows(&stats[i], &fits[i], &center, &rows[i], &clusters[i])
        } else {
            meat_of_rows(&stats[i], &fits[i], &center, &rows[i])
        };
        (fits[i].adjusted_mean, adjusted_mean_variance(&stats[i], &fits[i], &center, &m).unwrap())
    };
    for (i, e) in c["expected"].as_array().unwrap().iter().enumerate() {
        assert_eq!(e["variant"], arms[i]);
        assert_rel(fits[i].adjusted_mean, f(e, "adjusted_mean"), 1e-9, "adjusted mean");
        if i == 0 {
            continue;
        }
        let r = compare(0.05, var(0, true), var(i, true), small_sample_factor(n, k, Some(g)).unwrap());
        assert_rel(r.diff, f(e, "diff"), 1e-9, "diff");
        assert_rel(r.variance.sqrt(), f(e, "std_error"), 1e-9, "cluster-robust standard error");
        assert_rel(r.ci_lower, f(e, "ci_lower"), 1e-9, "ci_lower");
        assert_rel(r.p_value, f(e, "p_value"), 1e-9, "p_value");
        let naive = compare(0.05, var(0, false), var(i, false), small_sample_factor(n, k, None).unwrap());
        assert_rel(naive.variance.sqrt(), f(e, "naive_std_error"), 1e-9, "HC1 standard error");
    }
}
