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
