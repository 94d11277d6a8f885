//! Interactions and differential impact against scipy and statsmodels: the fixture comes
//! from tests/fixtures/generate_impact.py.

use ab_core::impact::{cochran_q, differential_impact, effect, independence, interaction, AttributeInput};
use ab_core::stats::Moments;
use serde_json::Value;

fn fixture() -> Value {
    let path = format!("{}/../tests/fixtures/impact.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).unwrap()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn moments(v: &Value) -> Moments {
    Moments { n: f(v, "n"), mean: f(v, "mean"), m2: f(v, "m2") }
}

#[track_caller]
fn assert_rel(actual: f64, expected: f64, rel: f64, what: &str) {
    let tol = (rel * expected.abs()).max(1e-12);
    assert!((actual - expected).abs() <= tol, "{what}: got {actual:e}, reference {expected:e}");
}

#[test]
fn independence_matches_scipy() {
    let cases = fixture()["independence"].as_array().unwrap().clone();
    for case in cases {
        let table: Vec<Vec<f64>> = case["table"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
            .collect();
        let r = independence(&table).unwrap();
        let what = case.to_string();
        assert_rel(r.statistic, f(&case, "statistic"), 1e-9, &what);
        assert_eq!(r.df, f(&case, "df"), "{what}");
        assert_rel(r.p_value, f(&case, "p_value"), 1e-6, &what);
    }
}

#[test]
fn interaction_matches_statsmodels_hc2() {
    let cases = fixture()["interaction"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let cells: Vec<Vec<Moments>> = case["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(moments).collect())
            .collect();
        let r = interaction(&cells).unwrap();
        let what = format!("{}", case["terms"]);
        assert_rel(r.wald.statistic, f(&case, "statistic"), 1e-8, &what);
        assert_eq!(r.wald.df, f(&case, "df"), "{what}");
        assert_rel(r.wald.p_value, f(&case, "p_value"), 1e-6, &what);
        let expected = case["terms"].as_array().unwrap();
        assert_eq!(r.terms.len(), expected.len());
        for t in expected {
            let (a, b) = (t["a"].as_u64().unwrap() as usize, t["b"].as_u64().unwrap() as usize);
            let got = r.terms.iter().find(|x| x.a == a && x.b == b).unwrap();
            assert_rel(got.estimate, f(t, "estimate"), 1e-9, &what);
            assert_rel(got.se, f(t, "se"), 1e-9, &what);
        }
    }
}

#[test]
fn heterogeneity_matches_statsmodels() {
    let cases = fixture()["heterogeneity"].as_array().unwrap().clone();
    for case in cases {
        let attrs = case["attributes"].as_array().unwrap();
        let input: Vec<AttributeInput> = attrs
            .iter()
            .map(|a| AttributeInput {
                segments: a["segments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| vec![moments(&s["control"]), moments(&s["treatment"])])
                    .collect(),
            })
            .collect();
        let out = differential_impact(&input);
        for (a, rows) in attrs.iter().zip(&out) {
            let what = a.to_string();
            let effects: Vec<_> = rows.iter().map(|r| r.effect.unwrap()).collect();
            assert_rel(cochran_q(&effects).unwrap().statistic, f(a, "q_statistic"), 1e-9, &what);
            for (s, r) in a["segments"].as_array().unwrap().iter().zip(rows) {
                let e = effect(&moments(&s["control"]), &moments(&s["treatment"])).unwrap();
                assert_eq!(r.effect, Some(e));
                assert_rel(e.diff, f(s, "diff"), 1e-9, &what);
                assert_rel(e.variance, f(s, "variance"), 1e-9, &what);
                assert_rel(r.rest.unwrap().diff, f(s, "rest_diff"), 1e-9, &what);
                assert_rel(r.p_value.unwrap(), f(s, "p_value"), 1e-6, &what);
                assert_rel(r.q_value.unwrap(), f(s, "q_value"), 1e-6, &what);
                assert_rel(r.heterogeneity_p.unwrap(), f(a, "heterogeneity_p"), 1e-6, &what);
            }
        }
    }
}
