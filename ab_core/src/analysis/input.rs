//! What the analysis reads for one metric, and the `MetricInput` it makes. A new kind of
//! metric adds its part to `MetricData` (filled by one read step of the extension) and
//! passes it on here to its field of `ArmInput`.

use std::collections::HashMap;

use super::{ArmInput, MetricInput, QuantileStat};
use crate::definition::MetricDef;
use crate::stats::cuped::CoMoments;
use crate::stats::Moments;

/// Moments of one variant's per-user values and, with a covariate, their co-moments with it
/// (0 for users without one).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    pub moments: Moments,
    pub co: Option<CoMoments>,
}

/// What the analysis read for one metric, per variant id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricData {
    /// The users who recorded the metric (every metric but ratios and quantiles).
    pub observed: HashMap<i64, Observed>,
    /// Bandit experiments: the moments of each (variant, weight period) cell.
    pub periods: HashMap<(i64, usize), Moments>,
    /// Ratio metrics: co-moments of (numerator, denominator) over the users who recorded either.
    pub ratio: Option<HashMap<i64, CoMoments>>,
    /// Quantile metrics: each variant's estimate.
    pub quantile: HashMap<i64, QuantileStat>,
    /// Users who recorded nothing but have a covariate: co-moments of (0, covariate).
    pub silent_covariate: HashMap<i64, CoMoments>,
    /// Retention metrics: per variant, the users enrolled long enough ago to count; they
    /// stand in for the assigned users.
    pub eligible: Option<HashMap<i64, u64>>,
}

/// One variant as every metric's analysis sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmFrame {
    pub id: i64,
    pub variant: String,
    pub is_control: bool,
    /// Users assigned to the variant.
    pub assigned: u64,
    /// Bandit experiments: the users assigned in each weight period; empty otherwise.
    pub assigned_per_period: Vec<u64>,
}

/// The input of `analyze_metric`: per arm, what was read, with the assigned users who
/// recorded nothing added as zeros where they count (the covariate of a metric whose silent
/// users count as 0, both parts of a ratio).
pub fn metric_input(
    name: String,
    def: MetricDef,
    cap: Option<f64>,
    with_covariate: bool,
    arms: &[ArmFrame],
    data: &MetricData,
) -> MetricInput {
    let arms = arms
        .iter()
        .map(|v| {
            let assigned = match &data.eligible {
                Some(e) => e.get(&v.id).copied().unwrap_or(0),
                None => v.assigned,
            };
            let obs = data.observed.get(&v.id);
            let moments = obs.map(|o| o.moments).unwrap_or_default();
            let covariate = with_covariate.then(|| {
                let mut co = obs.and_then(|o| o.co).unwrap_or_default();
                if def.silent_users_are_zero() {
                    let with_cov = data.silent_covariate.get(&v.id).copied().unwrap_or_default();
                    let without = (assigned as f64 - moments.n - with_cov.n).max(0.0);
                    co = co.merge(&with_cov).merge(&CoMoments { n: without, ..Default::default() });
                }
                co
            });
            let periods = v
                .assigned_per_period
                .iter()
                .enumerate()
                .map(|(i, &assigned)| (assigned, data.periods.get(&(v.id, i)).copied().unwrap_or_default()))
                .collect();
            let ratio = data.ratio.as_ref().map(|r| {
                let co = r.get(&v.id).copied().unwrap_or_default();
                co.merge(&CoMoments { n: (assigned as f64 - co.n).max(0.0), ..Default::default() })
            });
            ArmInput {
                variant: v.variant.clone(),
                is_control: v.is_control,
                assigned,
                observed: moments,
                covariate,
                periods,
                ratio,
                quantile: data.quantile.get(&v.id).copied(),
            }
        })
        .collect();
    MetricInput { cap, name, def, arms }
}
