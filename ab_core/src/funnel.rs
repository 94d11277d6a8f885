//! The statistics of funnel and retention metrics from their counts (the extension counts
//! in SQL): each step's share of the enrolled users (two-proportion z-test, as a binary
//! metric) and its conversion from the previous step (a ratio of two binary per-user
//! values, delta method, as a ratio metric); a retention rate among the users old enough.

use crate::analysis::{analyze_clustered, ArmInput, ArmResult, ClusterTotals, Clustering, MetricInput, Settings};
use crate::definition::{Aggregation, Direction, MetricDef, MetricType};
use crate::stats::cuped::CoMoments;
use crate::stats::Moments;

/// One variant's counts: users enrolled and, per step, users who reached it in order.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelArm {
    pub variant: String,
    pub is_control: bool,
    pub enrolled: u64,
    pub reached: Vec<u64>,
}

/// One (step, variant) row of `ab_funnel`; steps from 1.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelRow {
    pub step: usize,
    pub variant: String,
    pub is_control: bool,
    pub users: u64,
    /// users / enrolled.
    pub share: Option<f64>,
    /// users / users of the previous step (of the enrolled for step 1).
    pub conversion: Option<f64>,
    /// The treatment's conversion minus the control's, its CI at the experiment's alpha and
    /// the p-value; None for the control.
    pub diff: Option<f64>,
    pub ci_lower: Option<f64>,
    pub ci_upper: Option<f64>,
    pub p_value: Option<f64>,
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// A binary per-user value: `ones` users at 1 among `users`.
fn binary_arm(variant: &str, is_control: bool, users: u64, ones: u64) -> ArmInput {
    ArmInput {
        variant: variant.to_string(),
        is_control,
        assigned: users,
        observed: Moments::constant(ones as f64, 1.0),
        covariate: None,
        periods: vec![],
        ratio: None,
        quantile: None,
    }
}

/// Co-moments over `n` users of (y, x), both 0/1 with y = 1 only where x = 1: `ys` and `xs` ones.
fn nested_binary(n: u64, ys: u64, xs: u64) -> CoMoments {
    let nf = n as f64;
    let (py, px) = (ys as f64 / nf.max(1.0), xs as f64 / nf.max(1.0));
    CoMoments {
        n: nf,
        mean_y: py,
        mean_x: px,
        m2_y: nf * py * (1.0 - py),
        m2_x: nf * px * (1.0 - px),
        c_xy: nf * py * (1.0 - px),
    }
}

fn def(kind: MetricType, direction: Direction) -> MetricDef {
    let mut d = MetricDef { kind, direction, ..Default::default() };
    if kind == MetricType::Binary {
        d.aggregation = Aggregation::Max;
    } else {
        d.numerator = Some("step".into());
        d.denominator = Some("previous step".into());
    }
    d
}

type Compared = (Option<f64>, Option<f64>, Option<f64>, Option<f64>);

/// (diff, ci_lower, ci_upper, p_value) of a treatment's comparison with the control.
fn compared(result: &ArmResult) -> Compared {
    match &result.comparison {
        Some(c) => (Some(c.diff), Some(c.ci_lower), Some(c.ci_upper), Some(c.p_value)),
        None => (None, None, None, None),
    }
}

/// Per step and variant (in the arms' order): the users, share and conversion, and each
/// treatment's comparison with the control on the conversion.
/// `clusters`, in a cluster-randomized experiment: per step, each arm's cluster totals of the
/// users who reached it (y) over those who reached the step before, or were enrolled (x); the
/// comparisons are then cluster-robust. Empty: per user.
pub fn funnel_rows(
    settings: &Settings,
    direction: Direction,
    arms: &[FunnelArm],
    clusters: &[Vec<ClusterTotals>],
) -> Vec<FunnelRow> {
    let steps = arms.iter().map(|a| a.reached.len()).max().unwrap_or(0);
    let mut rows = Vec::new();
    for k in 0..steps {
        let at = |a: &FunnelArm, i: usize| a.reached.get(i).copied().unwrap_or(0);
        let input = if k == 0 {
            MetricInput {
                name: String::new(),
                def: def(MetricType::Binary, direction),
                cap: None,
                arms: arms.iter().map(|a| binary_arm(&a.variant, a.is_control, a.enrolled, at(a, 0))).collect(),
            }
        } else {
            MetricInput {
                name: String::new(),
                def: def(MetricType::Ratio, direction),
                cap: None,
                arms: arms
                    .iter()
                    .map(|a| ArmInput {
                        ratio: Some(nested_binary(a.enrolled, at(a, k), at(a, k - 1))),
                        ..binary_arm(&a.variant, a.is_control, a.enrolled, 0)
                    })
                    .collect(),
            }
        };
        let clustering = clusters.get(k).map(|totals| Clustering::Robust(totals.clone()));
        let result = analyze_clustered(settings, &input, clustering.as_ref());
        for (a, r) in arms.iter().zip(&result.arms) {
            let previous = if k == 0 { a.enrolled } else { at(a, k - 1) };
            let (diff, ci_lower, ci_upper, p_value) = compared(r);
            rows.push(FunnelRow {
                step: k + 1,
                variant: a.variant.clone(),
                is_control: a.is_control,
                users: at(a, k),
                share: ratio(at(a, k), a.enrolled),
                conversion: ratio(at(a, k), previous),
                diff,
                ci_lower,
                ci_upper,
                p_value,
            });
        }
    }
    rows
}

/// One variant's counts of a retention metric: enrolled, enrolled too recently to have
/// lived through the days counted, and active among the others.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionArm {
    pub variant: String,
    pub is_control: bool,
    pub enrolled: u64,
    pub too_new: u64,
    pub active: u64,
}

impl RetentionArm {
    pub fn eligible(&self) -> u64 {
        self.enrolled.saturating_sub(self.too_new)
    }
}

/// One variant's row of `ab_retention`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRow {
    pub variant: String,
    pub is_control: bool,
    pub enrolled: u64,
    pub too_new: u64,
    pub eligible: u64,
    pub active: u64,
    pub rate: Option<f64>,
    pub diff: Option<f64>,
    pub ci_lower: Option<f64>,
    pub ci_upper: Option<f64>,
    pub p_value: Option<f64>,
}

/// The retention rate among the eligible users and each treatment's comparison with the
/// control (two-proportion z-test, as the binary metric in `ab_analyze`).
/// `clusters`, in a cluster-randomized experiment: each arm's cluster totals of the active
/// users among the eligible; the comparisons are then cluster-robust. Empty: per user.
pub fn retention_rows(
    settings: &Settings,
    direction: Direction,
    arms: &[RetentionArm],
    clusters: &[ClusterTotals],
) -> Vec<RetentionRow> {
    let input = MetricInput {
        name: String::new(),
        def: def(MetricType::Binary, direction),
        cap: None,
        arms: arms.iter().map(|a| binary_arm(&a.variant, a.is_control, a.eligible(), a.active)).collect(),
    };
    let clustering = (!clusters.is_empty()).then(|| Clustering::Robust(clusters.to_vec()));
    let result = analyze_clustered(settings, &input, clustering.as_ref());
    arms.iter()
        .zip(&result.arms)
        .map(|(a, r)| {
            let (diff, ci_lower, ci_upper, p_value) = compared(r);
            RetentionRow {
                variant: a.variant.clone(),
                is_control: a.is_control,
                enrolled: a.enrolled,
                too_new: a.too_new,
                eligible: a.eligible(),
                active: a.active,
                rate: ratio(a.active, a.eligible()),
                diff,
                ci_lower,
                ci_upper,
                p_value,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(variant: &str, is_control: bool, enrolled: u64, reached: &[u64]) -> FunnelArm {
        FunnelArm { variant: variant.into(), is_control, enrolled, reached: reached.to_vec() }
    }

    #[test]
    fn funnel_steps_by_hand() {
        let settings = Settings::fixed(0.05, 1);
        let arms = [arm("control", true, 1000, &[600, 300, 150]), arm("treatment", false, 1000, &[600, 360, 216])];
        let rows = funnel_rows(&settings, Direction::Higher, &arms, &[]);
        assert_eq!(rows.len(), 6);
        let t2 = &rows[3];
        assert_eq!((t2.step, t2.variant.as_str(), t2.users), (2, "treatment", 360));
        assert_eq!((t2.share, t2.conversion), (Some(0.36), Some(0.6)));
        assert_eq!(rows[2].conversion, Some(0.5));
        let diff = t2.diff.unwrap();
        assert!((diff - 0.1).abs() < 1e-12, "{diff}");
        // Conversion from the previous step has the binomial variance r(1 - r) / reached there
        // (the delta method reduces to it); Welch on n users divides by n - 1.
        let se = ((0.6 * 0.4 / 600.0) + (0.5 * 0.5 / 600.0) as f64).sqrt() * (1000.0f64 / 999.0).sqrt();
        let half = (t2.ci_upper.unwrap() - t2.ci_lower.unwrap()) / 2.0;
        assert!((half / se - 1.959964).abs() < 2e-3, "{half} {se}");
        assert!(t2.p_value.unwrap() < 0.001);
        // Step 1 is the share of the enrolled: equal here.
        assert!(rows[1].diff.unwrap().abs() < 1e-12 && rows[1].p_value.unwrap() > 0.99);
        assert_eq!((rows[0].diff, rows[0].p_value), (None, None));
        // A variant with nobody at the previous step has no conversion.
        let rows = funnel_rows(
            &settings,
            Direction::Higher,
            &[arm("c", true, 10, &[0, 0]), arm("t", false, 10, &[2, 1])],
            &[],
        );
        assert_eq!((rows[2].conversion, rows[3].conversion), (None, Some(0.5)));
        assert_eq!(rows[3].diff, None);
    }

    #[test]
    fn retention_counts_only_eligible_users() {
        let settings = Settings::fixed(0.05, 1);
        let arms = [
            RetentionArm { variant: "c".into(), is_control: true, enrolled: 1200, too_new: 200, active: 300 },
            RetentionArm { variant: "t".into(), is_control: false, enrolled: 1100, too_new: 100, active: 350 },
        ];
        let rows = retention_rows(&settings, Direction::Higher, &arms, &[]);
        assert_eq!((rows[0].eligible, rows[0].rate), (1000, Some(0.3)));
        assert_eq!((rows[1].eligible, rows[1].rate), (1000, Some(0.35)));
        assert!((rows[1].diff.unwrap() - 0.05).abs() < 1e-12);
        // Two-proportion z-test, unpooled standard error.
        let se = (0.3f64 * 0.7 / 1000.0 + 0.35 * 0.65 / 1000.0).sqrt();
        let half = (rows[1].ci_upper.unwrap() - rows[1].ci_lower.unwrap()) / 2.0;
        assert!((half / se - 1.959964).abs() < 5e-3, "{half} {se}");
    }
}
