use super::*;
use crate::definition::{Aggregation, Direction};
use crate::stats::sequential;
use std::collections::HashMap;

fn arm(name: &str, control: bool, assigned: u64, values: &[f64]) -> ArmInput {
    let mut m = Moments::default();
    values.iter().for_each(|&x| m.add(x));
    ArmInput {
        variant: name.into(),
        is_control: control,
        assigned,
        observed: m,
        covariate: None,
        periods: vec![],
        ratio: None,
        quantile: None,
    }
}

fn settings(min: i64) -> Settings {
    Settings::fixed(0.05, min)
}

#[test]
fn sum_metrics_count_silent_users_as_zero() {
    let def = MetricDef { aggregation: Aggregation::Sum, ..Default::default() };
    let input = MetricInput {
        cap: None,
        name: "orders".into(),
        def,
        arms: vec![arm("c", true, 4, &[2.0, 4.0]), arm("t", false, 3, &[1.0, 1.0, 1.0])],
    };
    let r = analyze_metric(&settings(2), &input);
    assert_eq!(r.arms[0].users, 4);
    assert_eq!(r.arms[0].mean, Some(1.5));
    assert!(r.arms[0].comparison.is_none());
    assert_eq!(r.arms[0].recommendation, "control");
    let c = r.arms[1].comparison.unwrap();
    assert!((c.diff - -0.5).abs() < 1e-12);
    assert_eq!(c.test, "welch");
}

#[test]
fn binary_metrics_use_the_z_test() {
    let def = MetricDef { kind: MetricType::Binary, aggregation: Aggregation::Max, ..Default::default() };
    // 100 assigned per arm; 30 and 45 converted (silent users are non-converters).
    let input = MetricInput {
        cap: None,
        name: "converted".into(),
        def,
        arms: vec![arm("c", true, 100, &[1.0; 30]), arm("t", false, 100, &[1.0; 45])],
    };
    let r = analyze_metric(&settings(10), &input);
    let c = r.arms[1].comparison.unwrap();
    assert_eq!(c.test, "z");
    assert!((c.diff - 0.15).abs() < 1e-12);
    assert_eq!(r.arms[1].users, 100);
}

#[test]
fn too_few_users_for_a_test() {
    let input = MetricInput {
        cap: None,
        name: "m".into(),
        def: MetricDef::default(),
        arms: vec![arm("c", true, 1, &[1.0]), arm("t", false, 5, &[1.0, 2.0, 3.0])],
    };
    let r = analyze_metric(&settings(2), &input);
    assert!(r.arms[1].comparison.is_none());
    assert!(r.arms[1].recommendation.starts_with("not enough data"));
    assert_eq!(r.arms[0].std_dev, None);
}

#[test]
fn direction_decides_better_or_worse() {
    let lower = MetricDef { direction: Direction::Lower, ..Default::default() };
    let c: Vec<f64> = (0..50).map(|i| (i % 5) as f64).collect();
    let t: Vec<f64> = (0..50).map(|i| (i % 5) as f64 + 3.0).collect();
    let input = MetricInput {
        cap: None,
        name: "escalation".into(),
        def: lower,
        arms: vec![arm("c", true, 50, &c), arm("t", false, 50, &t)],
    };
    let r = analyze_metric(&settings(10), &input);
    assert_eq!(r.arms[1].recommendation, "worse than the control");
    assert!(r.arms[1].comparison.unwrap().chance_to_beat_control < 0.01);
    let input = MetricInput { def: MetricDef::default(), ..input };
    let r = analyze_metric(&settings(10), &input);
    assert_eq!(r.arms[1].recommendation, "better than the control");
    let r = analyze_metric(&settings(100), &input);
    assert!(r.arms[1].recommendation.starts_with("keep collecting"));
}

#[test]
fn sequential_intervals_are_wider() {
    let c: Vec<f64> = (0..500).map(|i| (i % 7) as f64).collect();
    let t: Vec<f64> = (0..500).map(|i| (i % 7) as f64 + 0.3).collect();
    let input = MetricInput {
        cap: None,
        name: "m".into(),
        def: MetricDef::default(),
        arms: vec![arm("c", true, 500, &c), arm("t", false, 500, &t)],
    };
    let fixed = analyze_metric(&settings(10), &input).arms[1].comparison.unwrap();
    let seq = analyze_metric(&Settings { sequential_tuning: Some(5000.0), ..settings(10) }, &input).arms[1]
        .comparison
        .unwrap();
    assert_eq!(seq.test, "welch-sequential");
    assert!(seq.ci_upper - seq.ci_lower > fixed.ci_upper - fixed.ci_lower);
    assert!(seq.p_value > fixed.p_value);
}

fn bandit_arm(name: &str, control: bool, periods: &[&[f64]]) -> ArmInput {
    let cells: Vec<(u64, Moments)> = periods
        .iter()
        .map(|vals| {
            let mut m = Moments::default();
            vals.iter().for_each(|&x| m.add(x));
            (vals.len() as u64, m)
        })
        .collect();
    let observed = cells.iter().fold(Moments::default(), |acc, c| acc.merge(&c.1));
    ArmInput {
        variant: name.into(),
        is_control: control,
        assigned: observed.n as u64,
        observed,
        covariate: None,
        periods: cells,
        ratio: None,
        quantile: None,
    }
}

#[test]
fn one_period_stratified_is_welch() {
    let c: Vec<f64> = (0..40).map(|i| (i % 7) as f64).collect();
    let t: Vec<f64> = (0..60).map(|i| (i % 5) as f64 + 0.7).collect();
    let plain = MetricInput {
        cap: None,
        name: "m".into(),
        def: MetricDef::default(),
        arms: vec![arm("c", true, 40, &c), arm("t", false, 60, &t)],
    };
    let welch = analyze_metric(&settings(10), &plain).arms[1].comparison.unwrap();
    let bandit = MetricInput { arms: vec![bandit_arm("c", true, &[&c]), bandit_arm("t", false, &[&t])], ..plain };
    let strat = analyze_metric(&settings(10), &bandit).arms[1].comparison.unwrap();
    assert_eq!(strat.test, "stratified");
    for (a, b) in [
        (strat.diff, welch.diff),
        (strat.ci_lower, welch.ci_lower),
        (strat.ci_upper, welch.ci_upper),
        (strat.p_value, welch.p_value),
    ] {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }
    let seq = analyze_metric(&Settings { sequential_tuning: Some(5000.0), ..settings(10) }, &bandit).arms[1]
        .comparison
        .unwrap();
    assert_eq!(seq.test, "stratified-sequential");
    assert!(seq.ci_upper - seq.ci_lower > strat.ci_upper - strat.ci_lower);
    assert!(seq.p_value > strat.p_value);
}

#[test]
fn periods_are_weighted_by_their_users() {
    // Period 0: 10 users per arm, no difference; period 1: 40 and 10 users, treatment +1.
    let c0: Vec<f64> = (0..10).map(|i| (i % 2) as f64).collect();
    let c1: Vec<f64> = (0..10).map(|i| (i % 2) as f64 + 5.0).collect();
    let t1: Vec<f64> = (0..40).map(|i| (i % 2) as f64 + 6.0).collect();
    let input = MetricInput {
        cap: None,
        name: "m".into(),
        def: MetricDef::default(),
        arms: vec![bandit_arm("c", true, &[&c0, &c1]), bandit_arm("t", false, &[&c0, &t1])],
    };
    let r = analyze_metric(&settings(2), &input);
    let cmp = r.arms[1].comparison.unwrap();
    // Weights 20/70 and 50/70: the difference is 50/70 * 1.
    assert!((cmp.diff - 50.0 / 70.0).abs() < 1e-12, "{}", cmp.diff);
    assert!((r.arms[0].mean.unwrap() - (20.0 / 70.0 * 0.5 + 50.0 / 70.0 * 5.5)).abs() < 1e-12);
    // Pooled, the treatment's late users would make the difference 4.1 - 2.75 = 1.35.
    assert!(cmp.ci_upper < 1.35);
    assert!(r.arms[1].comparison.unwrap().cuped.is_none());
}

/// A binary guardrail passes at alpha exactly when the score interval at level 1 - 2 alpha
/// stays within the margin: both are the score test at the margin.
#[test]
fn binary_non_inferiority_agrees_with_the_score_interval() {
    use crate::stats::proportion::proportion_test;
    let binary = |name: &str, control: bool, x: f64, n: f64| {
        let mut a = arm(name, control, n as u64, &[]);
        a.observed = Moments { n, mean: x / n, m2: x * (1.0 - x / n) };
        a
    };
    for (direction, margin) in [(Direction::Lower, 0.03), (Direction::Higher, 0.05)] {
        let def = MetricDef { kind: MetricType::Binary, direction, margin: Some(margin), ..Default::default() };
        for xt in (60..200).step_by(3) {
            let input = MetricInput {
                name: "g".into(),
                def: def.clone(),
                cap: None,
                arms: vec![binary("c", true, 100.0, 1000.0), binary("t", false, xt as f64, 1000.0)],
            };
            let ni = analyze_metric(&settings(2), &input).arms[1].comparison.unwrap().non_inferiority.unwrap();
            let ci = proportion_test(100.0, 1000.0, xt as f64, 1000.0, 0.1).unwrap();
            let within = match direction {
                Direction::Lower => ci.ci_upper < margin,
                Direction::Higher => ci.ci_lower > -margin,
            };
            assert_eq!(ni.passed, within, "{direction:?} {xt} {ni:?} {ci:?}");
        }
    }
}

/// In sequential mode a guardrail's p-value is the always-valid one of the difference from
/// the margin, and 1 when the estimate is on the wrong side of it.
#[test]
fn sequential_non_inferiority() {
    let seq = Settings { sequential_tuning: Some(5000.0), ..settings(2) };
    let def = MetricDef { direction: Direction::Lower, margin: Some(0.5), ..Default::default() };
    let values = |shift: f64| (0..400).map(|i| (i % 7) as f64 * 0.3 + shift).collect::<Vec<_>>();
    let ni = |shift: f64| {
        let input = MetricInput {
            name: "g".into(),
            def: def.clone(),
            cap: None,
            arms: vec![arm("c", true, 400, &values(0.0)), arm("t", false, 400, &values(shift))],
        };
        let c = analyze_metric(&seq, &input).arms[1].comparison.unwrap();
        (c, c.non_inferiority.unwrap())
    };
    let (c, within) = ni(0.1);
    let expected = sequential::p_value(c.diff - 0.5, c.variance, 800.0, 5000.0);
    assert!((within.p_value - expected).abs() < 1e-15 && within.p_value < 0.05, "{within:?}");
    // Worse than the margin: the estimate is past it, p is 1.
    assert_eq!(ni(0.7).1.p_value, 1.0);
}

fn ratio_def() -> MetricDef {
    MetricDef {
        kind: MetricType::Ratio,
        numerator: Some("revenue".into()),
        denominator: Some("visits".into()),
        ..Default::default()
    }
}

fn ratio_arm(name: &str, control: bool, pairs: &[(f64, f64)]) -> ArmInput {
    let mut co = CoMoments::default();
    pairs.iter().for_each(|&(y, x)| co.add(y, x));
    ArmInput { ratio: Some(co), ..arm(name, control, pairs.len() as u64, &[]) }
}

/// Denominators that are all 0: the users count, there is no ratio, and every message
/// says why (not "0 users").
#[test]
fn all_zero_denominators_say_so() {
    let pairs = [(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)];
    let input = MetricInput {
        name: "per_visit".into(),
        def: ratio_def(),
        cap: None,
        arms: vec![ratio_arm("A", true, &pairs), ratio_arm("B", false, &[(1.0, 1.0), (2.0, 2.0), (1.0, 3.0)])],
    };
    let r = analyze_metric(&settings(2), &input);
    assert_eq!((r.arms[0].users, r.arms[0].mean), (3, None));
    let why = "the denominator \"visits\" of ratio metric \"per_visit\" is 0 for every user of A";
    assert_eq!(r.arms[0].no_estimate.as_deref(), Some(why));
    assert_eq!(r.arms[1].no_estimate, None);
    assert!(r.arms[1].comparison.is_none());
    assert_eq!(r.arms[1].recommendation, why);
    let d = crate::winner::decide(&r, 2, 0.05, None, &[]);
    assert_eq!(d.reason, why);
    assert_eq!(r.non_finite(), None);
}

/// Denominators near 0 make the ratio's figures overflow: the result names the metric,
/// variant and column, and the message the denominator.
#[test]
fn a_ratio_of_tiny_denominators_is_not_finite() {
    let tiny: Vec<(f64, f64)> = (0..10).map(|i| (1.0 + (i % 4) as f64, 1e-300 * (1 + i % 3) as f64)).collect();
    let input = MetricInput {
        name: "per_visit".into(),
        def: ratio_def(),
        cap: None,
        arms: vec![ratio_arm("A", true, &tiny), ratio_arm("B", false, &tiny)],
    };
    let r = analyze_metric(&settings(2), &input);
    let (variant, column, x) = r.non_finite().unwrap();
    assert_eq!((variant, column), ("A", "std_dev"));
    assert!(x.is_infinite());
    assert_eq!(
        r.overflow_problem().unwrap(),
        "metric \"per_visit\": the std_dev of variant \"A\" is Infinity, not a finite number: \
         its denominator \"visits\" is too close to 0 for the ratio to be computed"
    );
    // Ordinary denominators: every figure finite.
    let fine: Vec<(f64, f64)> = (0..10).map(|i| (1.0 + (i % 4) as f64, 1.0 + (i % 3) as f64)).collect();
    let input = MetricInput { arms: vec![ratio_arm("A", true, &fine), ratio_arm("B", false, &fine)], ..input };
    assert_eq!(analyze_metric(&settings(2), &input).overflow_problem(), None);
}

/// A quantile over equal values is that value, without spread: equal arms differ by
/// exactly 0 (p 1), unequal ones by exactly their difference (p 0).
#[test]
fn a_quantile_of_equal_values_is_the_value() {
    let def = MetricDef { kind: MetricType::Quantile, ..Default::default() };
    let q = |estimate: f64| QuantileStat {
        users: 50,
        n: 50.0,
        nu: 0.5,
        estimate,
        lower: estimate,
        upper: estimate,
        cluster: None,
    };
    let arm_q = |name: &str, control: bool, estimate: f64| ArmInput {
        quantile: Some(q(estimate)),
        ..arm(name, control, 50, &[])
    };
    let input = MetricInput {
        name: "median".into(),
        def,
        cap: None,
        arms: vec![arm_q("A", true, 250.0), arm_q("B", false, 250.0)],
    };
    let r = analyze_metric(&settings(2), &input);
    assert_eq!((r.arms[0].users, r.arms[0].mean), (50, Some(250.0)));
    let c = r.arms[1].comparison.unwrap();
    assert_eq!((c.diff, c.ci_lower, c.ci_upper, c.p_value), (0.0, 0.0, 0.0, 1.0));
    let input = MetricInput { arms: vec![arm_q("A", true, 250.0), arm_q("B", false, 260.0)], ..input };
    let c = analyze_metric(&settings(2), &input).arms[1].comparison.unwrap();
    assert_eq!((c.diff, c.ci_lower, c.ci_upper, c.p_value), (10.0, 10.0, 10.0, 0.0));
    // Too few values for the interval: still no estimate, as gbstats.
    assert_eq!(quantile_moments(&QuantileStat { n: 3.0, users: 3, ..q(1.0) }), None);
}

/// The assigned users who recorded nothing count as zeros in a ratio's parts, and in the
/// covariate's co-moments of a metric whose silent users count as 0; a period's cell comes
/// with its assigned users.
#[test]
fn metric_input_adds_the_silent_users() {
    let frame = |id: i64, assigned: u64, per_period: Vec<u64>| ArmFrame {
        id,
        variant: format!("v{id}"),
        is_control: id == 1,
        assigned,
        assigned_per_period: per_period,
    };
    let mut co = CoMoments::default();
    co.add(2.0, 1.0);
    co.add(4.0, 3.0);
    let mut silent = CoMoments::default();
    silent.add(0.0, 5.0);
    let data = MetricData {
        observed: HashMap::from([(1, Observed { moments: Moments { n: 2.0, mean: 3.0, m2: 2.0 }, co: Some(co) })]),
        silent_covariate: HashMap::from([(1, silent)]),
        ..Default::default()
    };
    let sum = MetricDef { aggregation: Aggregation::Sum, ..Default::default() };
    let input = metric_input("m".into(), sum, Some(9.0), true, &[frame(1, 10, vec![]), frame(2, 4, vec![])], &data);
    assert_eq!((input.name.as_str(), input.cap), ("m", Some(9.0)));
    let c = input.arms[0].covariate.unwrap();
    // 2 recorded, 1 silent with a covariate, 7 silent without one.
    assert_eq!(c.n, 10.0);
    assert!((c.mean_y - 0.6).abs() < 1e-12 && (c.mean_x - 0.9).abs() < 1e-12, "{c:?}");
    assert_eq!(input.arms[0].observed.n, 2.0);
    assert_eq!(input.arms[1].covariate.unwrap().n, 4.0);
    assert!(input.arms.iter().all(|a| a.ratio.is_none() && a.periods.is_empty()));
    // Without a covariate: none, whatever was read.
    let plain = metric_input("m".into(), MetricDef::default(), None, false, &[frame(1, 10, vec![])], &data);
    assert_eq!(plain.arms[0].covariate, None);

    let ratio = MetricData {
        ratio: Some(HashMap::from([(1, co)])),
        periods: HashMap::from([((2, 1), Moments { n: 3.0, mean: 1.0, m2: 0.5 })]),
        ..Default::default()
    };
    let input =
        metric_input("r".into(), ratio_def(), None, false, &[frame(1, 5, vec![]), frame(2, 6, vec![4, 2])], &ratio);
    let r = input.arms[0].ratio.unwrap();
    assert_eq!((r.n, r.mean_y, r.mean_x), (5.0, 6.0 / 5.0, 4.0 / 5.0));
    assert_eq!(input.arms[1].ratio.unwrap().n, 6.0);
    assert_eq!(input.arms[1].periods, vec![(4, Moments::default()), (2, Moments { n: 3.0, mean: 1.0, m2: 0.5 })]);
    // A retention metric counts only its eligible users, as if they alone were assigned.
    let retention = MetricData {
        observed: HashMap::from([(1, Observed { moments: Moments::constant(3.0, 1.0), co: None })]),
        eligible: Some(HashMap::from([(1, 4)])),
        ..Default::default()
    };
    let binary =
        MetricDef { kind: crate::definition::MetricType::Binary, aggregation: Aggregation::Max, ..Default::default() };
    let input = metric_input("r".into(), binary, None, false, &[frame(1, 10, vec![]), frame(2, 6, vec![])], &retention);
    assert_eq!((input.arms[0].assigned, input.arms[1].assigned), (4, 0));
}

/// A result's rows carry each arm's figures by name, the control's without a comparison.
#[test]
fn rows_name_every_figure() {
    let def = MetricDef { margin: Some(0.5), mde: Some(0.2), ..Default::default() };
    let c: Vec<f64> = (0..50).map(|i| (i % 5) as f64).collect();
    let t: Vec<f64> = (0..50).map(|i| (i % 5) as f64 + 0.1).collect();
    let input = MetricInput {
        cap: Some(7.0),
        name: "m".into(),
        def,
        arms: vec![arm("c", true, 50, &c), arm("t", false, 60, &t)],
    };
    let result = analyze_metric(&settings(10), &input);
    let rows = result.rows(Some(0.25));
    assert_eq!(rows.len(), 2);
    let (control, treatment) = (&rows[0], &rows[1]);
    assert_eq!((control.metric_name.as_str(), control.variant.as_str(), control.is_control), ("m", "c", true));
    assert_eq!((control.diff, control.test.as_deref(), control.recommendation.as_str()), (None, None, "control"));
    let cmp = result.arms[1].comparison.unwrap();
    // Silent users of a mean metric do not count.
    assert_eq!(treatment.users, 50);
    assert_eq!((treatment.diff, treatment.p_value_adjusted), (Some(cmp.diff), Some(cmp.p_adjusted)));
    assert_eq!(treatment.test.as_deref(), Some("welch"));
    assert_eq!(treatment.metric_type, "continuous");
    assert_eq!((treatment.srm_p_value, treatment.margin, treatment.cap), (Some(0.25), Some(0.5), Some(7.0)));
    let ni = cmp.non_inferiority.unwrap();
    assert_eq!(
        (treatment.non_inferiority_p_value, treatment.non_inferior, treatment.non_inferiority_p_value_adjusted),
        (Some(ni.p_value), Some(ni.passed), Some(ni.p_adjusted))
    );
    assert_eq!(treatment.users_needed, cmp.users_needed.map(|n| n as i64));
    assert_eq!(treatment.confidence, Some(1.0 - cmp.p_adjusted));
    assert_eq!(treatment.recommendation, result.arms[1].recommendation);
}
