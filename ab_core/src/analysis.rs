//! The per-metric analysis: per-variant statistics over per-user values, each treatment
//! compared with the control by Welch's test, Holm-adjusted across treatments, and a
//! plain-words recommendation for every row.

use crate::definition::MetricDef;
use crate::stats::multiple::holm;
use crate::stats::welch::{cohens_d, relative_lift, welch_test, Sample};
use crate::stats::Moments;

/// One variant's data for one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmInput {
    pub variant: String,
    pub is_control: bool,
    /// Users assigned to the variant.
    pub assigned: u64,
    /// Moments of the per-user values of the users who recorded the metric.
    pub observed: Moments,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricInput {
    pub name: String,
    pub def: MetricDef,
    pub arms: Vec<ArmInput>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub alpha: f64,
    pub min_sample_size: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub diff: f64,
    pub ci_lower: f64,
    pub ci_upper: f64,
    pub relative_lift: Option<f64>,
    pub p_value: f64,
    /// Holm-adjusted over the metric's treatments (equal to p_value with one treatment).
    pub p_adjusted: f64,
    pub significant: bool,
    pub effect_size: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArmResult {
    pub variant: String,
    pub is_control: bool,
    pub users: u64,
    pub mean: Option<f64>,
    pub std_dev: Option<f64>,
    pub comparison: Option<Comparison>,
    pub recommendation: String,
    /// 1 - adjusted p-value of the comparison with the control.
    pub confidence: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    pub name: String,
    pub def: MetricDef,
    pub arms: Vec<ArmResult>,
}

impl MetricResult {
    pub fn control(&self) -> Option<&ArmResult> {
        self.arms.iter().find(|a| a.is_control)
    }
}

/// The moments the test uses: users who recorded nothing count as 0 for sum and count metrics.
pub fn effective_moments(def: &MetricDef, arm: &ArmInput) -> Moments {
    if def.aggregation.counts_silent_users_as_zero() {
        let silent = (arm.assigned as f64 - arm.observed.n).max(0.0);
        arm.observed.merge(&Moments::constant(silent, 0.0))
    } else {
        arm.observed
    }
}

fn sample(m: &Moments) -> Option<Sample> {
    m.variance().map(|variance| Sample { n: m.n, mean: m.mean, variance })
}

pub fn analyze_metric(settings: &Settings, input: &MetricInput) -> MetricResult {
    let moments: Vec<Moments> = input.arms.iter().map(|a| effective_moments(&input.def, a)).collect();
    let control_idx = input.arms.iter().position(|a| a.is_control);
    let control_sample = control_idx.and_then(|i| sample(&moments[i]));

    // Raw comparisons first, then Holm over the family of treatments that could be tested.
    let mut raw: Vec<Option<(crate::stats::WelchResult, Sample)>> = Vec::with_capacity(moments.len());
    for (i, m) in moments.iter().enumerate() {
        let r = match (Some(i) == control_idx, control_sample, sample(m)) {
            (false, Some(c), Some(t)) => welch_test(&c, &t, settings.alpha).ok().map(|w| (w, t)),
            _ => None,
        };
        raw.push(r);
    }
    let tested: Vec<usize> = (0..raw.len()).filter(|&i| raw[i].is_some()).collect();
    let adjusted = holm(&tested.iter().map(|&i| raw[i].unwrap().0.p_value).collect::<Vec<_>>());

    let min = settings.min_sample_size.max(0) as f64;
    let control_n = control_idx.map(|i| moments[i].n).unwrap_or(0.0);
    let arms = input
        .arms
        .iter()
        .enumerate()
        .map(|(i, arm)| {
            let m = &moments[i];
            let comparison = raw[i].map(|(w, t)| {
                let p_adjusted = adjusted[tested.iter().position(|&j| j == i).unwrap()];
                let c = control_sample.unwrap();
                Comparison {
                    diff: w.diff,
                    ci_lower: w.ci_lower,
                    ci_upper: w.ci_upper,
                    relative_lift: relative_lift(c.mean, t.mean),
                    p_value: w.p_value,
                    p_adjusted,
                    significant: p_adjusted < settings.alpha,
                    effect_size: cohens_d(&c, &t),
                }
            });
            let recommendation = if arm.is_control {
                "control".to_string()
            } else {
                match &comparison {
                    None => "not enough data: each variant needs at least 2 users with this metric".to_string(),
                    Some(_) if m.n < min || control_n < min => format!(
                        "keep collecting: {} and {} users of the {} required per variant",
                        control_n, m.n, settings.min_sample_size
                    ),
                    Some(c) if !c.significant => "no significant difference from the control".to_string(),
                    Some(c) if input.def.direction.is_improvement(c.diff) => "better than the control".to_string(),
                    Some(_) => "worse than the control".to_string(),
                }
            };
            ArmResult {
                variant: arm.variant.clone(),
                is_control: arm.is_control,
                users: m.n as u64,
                mean: (m.n > 0.0).then_some(m.mean),
                std_dev: m.variance().map(f64::sqrt),
                confidence: comparison.map(|c| 1.0 - c.p_adjusted),
                comparison,
                recommendation,
            }
        })
        .collect();
    MetricResult { name: input.name.clone(), def: input.def, arms }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{Aggregation, Direction};

    fn arm(name: &str, control: bool, assigned: u64, values: &[f64]) -> ArmInput {
        let mut m = Moments::default();
        values.iter().for_each(|&x| m.add(x));
        ArmInput { variant: name.into(), is_control: control, assigned, observed: m }
    }

    #[test]
    fn sum_metrics_count_silent_users_as_zero() {
        let def = MetricDef { aggregation: Aggregation::Sum, direction: Direction::Higher };
        let input = MetricInput {
            name: "orders".into(),
            def,
            arms: vec![arm("c", true, 4, &[2.0, 4.0]), arm("t", false, 3, &[1.0, 1.0, 1.0])],
        };
        let r = analyze_metric(&Settings { alpha: 0.05, min_sample_size: 2 }, &input);
        assert_eq!(r.arms[0].users, 4);
        assert_eq!(r.arms[0].mean, Some(1.5));
        assert!(r.arms[0].comparison.is_none());
        assert_eq!(r.arms[0].recommendation, "control");
        let c = r.arms[1].comparison.unwrap();
        assert!((c.diff - -0.5).abs() < 1e-12);
    }

    #[test]
    fn too_few_users_for_a_test() {
        let input = MetricInput {
            name: "m".into(),
            def: MetricDef::default(),
            arms: vec![arm("c", true, 1, &[1.0]), arm("t", false, 5, &[1.0, 2.0, 3.0])],
        };
        let r = analyze_metric(&Settings { alpha: 0.05, min_sample_size: 2 }, &input);
        assert!(r.arms[1].comparison.is_none());
        assert!(r.arms[1].recommendation.starts_with("not enough data"));
        assert_eq!(r.arms[0].std_dev, None);
    }

    #[test]
    fn direction_decides_better_or_worse() {
        let lower = MetricDef { aggregation: Aggregation::Mean, direction: Direction::Lower };
        let c: Vec<f64> = (0..50).map(|i| (i % 5) as f64).collect();
        let t: Vec<f64> = (0..50).map(|i| (i % 5) as f64 + 3.0).collect();
        let input = MetricInput { name: "escalation".into(), def: lower, arms: vec![arm("c", true, 50, &c), arm("t", false, 50, &t)] };
        let r = analyze_metric(&Settings { alpha: 0.05, min_sample_size: 10 }, &input);
        assert_eq!(r.arms[1].recommendation, "worse than the control");
        let input = MetricInput { def: MetricDef::default(), ..input };
        let r = analyze_metric(&Settings { alpha: 0.05, min_sample_size: 10 }, &input);
        assert_eq!(r.arms[1].recommendation, "better than the control");
        let r = analyze_metric(&Settings { alpha: 0.05, min_sample_size: 100 }, &input);
        assert!(r.arms[1].recommendation.starts_with("keep collecting"));
    }
}
