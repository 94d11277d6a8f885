//! Property tests: the pure layer never panics on any input, and whatever it returns as valid
//! is finite and in range.

use ab_core::bucketing::{point, variant_for_point, BUCKETS};
use ab_core::definition::parse_definition;
use ab_core::stats::multiple::{benjamini_hochberg, holm};
use ab_core::stats::proportion::proportion_test;
use ab_core::stats::sequential;
use ab_core::stats::srm::srm_test;
use ab_core::stats::welch::{welch_test, Sample};
use ab_core::targeting::Segments;
use proptest::prelude::*;
use serde_json::Value;

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::from(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-z_ ]{0,12}".prop_map(Value::String),
        prop_oneof![Just("mean"), Just("binary"), Just("lower"), Just("prompt"), Just("Control")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("experiment_type".to_string()),
                    Just("primary_metric".to_string()),
                    Just("variants".to_string()),
                    Just("traffic_allocation".to_string()),
                    Just("is_control".to_string()),
                    Just("config".to_string()),
                    Just("metrics".to_string()),
                    Just("target_segments".to_string()),
                    Just("alpha".to_string()),
                    Just("gte".to_string()),
                    Just("in".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        prop_oneof![Just(0.0), Just(1.0), Just(2.0), 2.0..1e9f64, any::<f64>()],
        prop_oneof![Just(0.0), -1e300..1e300f64, any::<f64>()],
        prop_oneof![Just(0.0), 0.0..1e12f64, any::<f64>()],
    )
        .prop_map(|(n, mean, variance)| Sample { n: n.floor(), mean, variance })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn definitions_never_panic(v in json()) {
        let _ = parse_definition(&v);
        let _ = Segments::parse(&v).map(|s| s.matches(&v));
    }

    #[test]
    fn valid_definitions_have_sane_allocations(v in json()) {
        if let Ok(spec) = parse_definition(&v) {
            let total: f64 = spec.variants.iter().map(|v| v.traffic_allocation).sum();
            prop_assert!(total > 0.0 && total <= 100.0 + 1e-9);
            prop_assert_eq!(spec.variants.iter().filter(|v| v.is_control).count(), 1);
        }
    }

    #[test]
    fn points_are_in_range(salt in ".{0,40}", user in ".{0,200}") {
        let p = point(&salt, &user);
        prop_assert!(p < BUCKETS);
        prop_assert_eq!(p, point(&salt, &user));
    }

    #[test]
    fn every_point_lands_in_at_most_one_range(widths in prop::collection::vec(0u32..5000, 1..6), p in 0u32..BUCKETS) {
        let total: u32 = widths.iter().sum();
        match variant_for_point(&widths, p) {
            Some(i) => {
                let start: u32 = widths[..i].iter().sum();
                prop_assert!(p >= start && p < start + widths[i]);
            }
            None => prop_assert!(p >= total),
        }
    }

    #[test]
    fn welch_is_finite_when_valid(a in sample(), b in sample(), alpha in prop_oneof![Just(0.05), any::<f64>()]) {
        if let Ok(r) = welch_test(&a, &b, alpha) {
            prop_assert!(r.p_value >= 0.0 && r.p_value <= 1.0, "{:?}", r);
            prop_assert!(r.diff.is_finite() && !r.ci_lower.is_nan() && !r.ci_upper.is_nan(), "{:?}", r);
            prop_assert!(r.ci_lower <= r.ci_upper || r.ci_lower.is_infinite(), "{:?}", r);
            if let (Some(t), Some(df)) = (r.t, r.df) {
                prop_assert!(!t.is_nan() && df > 0.0, "{:?}", r);
            }
        }
    }

    #[test]
    fn proportions_are_finite_when_valid(xa in 0u64..2000, na in 0u64..2000, xb in 0u64..2000, nb in 0u64..2000) {
        if let Ok(r) = proportion_test(xa as f64, na as f64, xb as f64, nb as f64, 0.05) {
            prop_assert!(r.p_value >= 0.0 && r.p_value <= 1.0);
            prop_assert!(r.ci_lower.is_finite() && r.ci_upper.is_finite() && r.ci_lower <= r.ci_upper);
            prop_assert!(r.ci_lower <= r.diff && r.diff <= r.ci_upper, "{:?}", r);
            // The CI inverts the test: it excludes 0 exactly when p < alpha.
            if (r.p_value - 0.05).abs() > 1e-9 {
                prop_assert_eq!(r.ci_lower > 0.0 || r.ci_upper < 0.0, r.p_value < 0.05, "{:?}", r);
            }
        }
    }

    #[test]
    fn srm_p_values_are_probabilities(obs in prop::collection::vec(0u64..1_000_000, 0..5), w in prop::collection::vec(any::<f64>(), 0..5)) {
        let obs: Vec<f64> = obs.into_iter().map(|o| o as f64).collect();
        if let Ok(r) = srm_test(&obs, &w) {
            prop_assert!(r.p_value >= 0.0 && r.p_value <= 1.0 && !r.chi2.is_nan());
        }
    }

    #[test]
    fn sequential_p_values_are_probabilities(diff in -10.0..10.0f64, se2 in 0.0..10.0f64, n in 2.0..1e7f64, tuning in 1.0..1e6f64) {
        let p = sequential::p_value(diff, se2, n, tuning);
        prop_assert!((0.0..=1.0).contains(&p), "{}", p);
    }

    #[test]
    fn adjusted_p_values_stay_in_range(p in prop::collection::vec(0.0..=1.0f64, 0..20)) {
        for adj in [holm(&p), benjamini_hochberg(&p)] {
            prop_assert_eq!(adj.len(), p.len());
            for (a, raw) in adj.iter().zip(&p) {
                prop_assert!(*a >= *raw - 1e-15 && *a <= 1.0);
            }
        }
    }
}
