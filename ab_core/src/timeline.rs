//! Results over time: the comparison as it stood at the end of each day, over the users
//! enrolled by then and what they had recorded by then. Each day is a full analysis
//! (`analyze_metric`) of that day's cumulative data, so the last day equals the analysis of
//! all the data (without CUPED, which the timeline leaves out); cluster-robust in a
//! cluster-randomized experiment.

use crate::analysis::{analyze_clustered, ArmInput, ClusterTotals, Clustering, MetricInput, MetricResult, Settings};
use crate::definition::MetricDef;
use crate::stats::Moments;

/// The cumulative per-user moments of one (arm, period) cell at the end of `day`, on a day
/// the cell changed; a cell keeps its moments through the days it does not change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    pub day: usize,
    pub arm: usize,
    pub period: usize,
    pub moments: Moments,
}

/// Users enrolled in (arm, period) on `day`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Enrolled {
    pub day: usize,
    pub arm: usize,
    pub period: usize,
    pub users: u64,
}

/// In a cluster-randomized experiment: an arm's cluster totals at the end of `day`, on a day
/// they changed (cumulative, as a cell's moments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterCell {
    pub day: usize,
    pub arm: usize,
    pub totals: ClusterTotals,
}

pub struct Arm {
    pub variant: String,
    pub is_control: bool,
}

/// One analysis per day `0..days`. `periods` is the number of weight periods of a bandit
/// experiment (its arms are then stratified by period), 0 for fixed allocations. Cells and
/// enrollments dated `days` or later do not count.
#[allow(clippy::too_many_arguments)]
pub fn timeline(
    settings: &Settings,
    name: &str,
    def: &MetricDef,
    cap: Option<f64>,
    arms: &[Arm],
    periods: usize,
    days: usize,
    cells: &[Cell],
    enrolled: &[Enrolled],
) -> Vec<MetricResult> {
    timeline_with(settings, name, def, cap, arms, periods, days, cells, enrolled, &[], || ())
}

/// `timeline`, calling `each_day` before each day's analysis (the database checks there
/// whether the query was cancelled); with `clusters` (a cluster-randomized experiment), each
/// day's comparisons are cluster-robust on the arms' cluster totals of that day.
#[allow(clippy::too_many_arguments)]
pub fn timeline_with(
    settings: &Settings,
    name: &str,
    def: &MetricDef,
    cap: Option<f64>,
    arms: &[Arm],
    periods: usize,
    days: usize,
    cells: &[Cell],
    enrolled: &[Enrolled],
    clusters: &[ClusterCell],
    mut each_day: impl FnMut(),
) -> Vec<MetricResult> {
    let strata = periods.max(1);
    let mut totals = vec![ClusterTotals::default(); arms.len()];
    let mut clusters = clusters.iter().peekable();
    let clustered = clusters.peek().is_some();
    let mut moments = vec![vec![Moments::default(); strata]; arms.len()];
    let mut assigned = vec![vec![0u64; strata]; arms.len()];
    let (mut cells, mut enrolled) = (cells.iter().peekable(), enrolled.iter().peekable());
    let mut out = Vec::with_capacity(days);
    for day in 0..days {
        each_day();
        while let Some(c) = cells.next_if(|c| c.day <= day) {
            if c.arm < arms.len() && c.period < strata {
                moments[c.arm][c.period] = c.moments;
            }
        }
        while let Some(e) = enrolled.next_if(|e| e.day <= day) {
            if e.arm < arms.len() && e.period < strata {
                assigned[e.arm][e.period] += e.users;
            }
        }
        while let Some(c) = clusters.next_if(|c| c.day <= day) {
            if c.arm < arms.len() {
                totals[c.arm] = c.totals;
            }
        }
        let inputs = arms
            .iter()
            .enumerate()
            .map(|(i, a)| ArmInput {
                variant: a.variant.clone(),
                is_control: a.is_control,
                assigned: assigned[i].iter().sum(),
                observed: moments[i].iter().fold(Moments::default(), |acc, m| acc.merge(m)),
                covariate: None,
                periods: if periods == 0 {
                    vec![]
                } else {
                    (0..periods).map(|p| (assigned[i][p], moments[i][p])).collect()
                },
                ratio: None,
                quantile: None,
            })
            .collect();
        let input = MetricInput { name: name.into(), def: def.clone(), cap, arms: inputs };
        let clustering = clustered.then(|| Clustering::Robust(totals.clone()));
        out.push(analyze_clustered(settings, &input, clustering.as_ref()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::analyze_metric;
    use crate::definition::Aggregation;

    fn moments(xs: &[f64]) -> Moments {
        let mut m = Moments::default();
        xs.iter().for_each(|&x| m.add(x));
        m
    }

    fn arms() -> Vec<Arm> {
        vec![Arm { variant: "a".into(), is_control: true }, Arm { variant: "b".into(), is_control: false }]
    }

    /// Each day equals the analysis of that day's data, cells carried over the days they do
    /// not change and enrollments added up.
    #[test]
    fn each_day_is_the_analysis_of_the_data_so_far() {
        let settings = Settings::fixed(0.05, 2);
        let def = MetricDef { aggregation: Aggregation::Sum, ..Default::default() };
        let day0 = [moments(&[1.0, 2.0, 3.0]), moments(&[2.0, 4.0])];
        let day2 = [moments(&[1.0, 2.0, 5.0, 1.0]), moments(&[2.0, 6.0, 7.0])];
        let cells = vec![
            Cell { day: 0, arm: 0, period: 0, moments: day0[0] },
            Cell { day: 0, arm: 1, period: 0, moments: day0[1] },
            Cell { day: 2, arm: 0, period: 0, moments: day2[0] },
            Cell { day: 2, arm: 1, period: 0, moments: day2[1] },
        ];
        let enrolled = vec![
            Enrolled { day: 0, arm: 0, period: 0, users: 4 },
            Enrolled { day: 0, arm: 1, period: 0, users: 3 },
            Enrolled { day: 1, arm: 1, period: 0, users: 2 },
            Enrolled { day: 2, arm: 0, period: 0, users: 1 },
        ];
        let days = timeline(&settings, "m", &def, None, &arms(), 0, 4, &cells, &enrolled);
        assert_eq!(days.len(), 4);
        let direct = |assigned: [u64; 2], m: [Moments; 2]| {
            let inputs = arms()
                .into_iter()
                .zip(assigned.into_iter().zip(m))
                .map(|(a, (n, m))| ArmInput {
                    variant: a.variant,
                    is_control: a.is_control,
                    assigned: n,
                    observed: m,
                    covariate: None,
                    periods: vec![],
                    ratio: None,
                    quantile: None,
                })
                .collect();
            analyze_metric(&settings, &MetricInput { name: "m".into(), def: def.clone(), cap: None, arms: inputs })
        };
        assert_eq!(days[0], direct([4, 3], day0));
        assert_eq!(days[1], direct([4, 5], day0));
        assert_eq!(days[2], direct([5, 5], day2));
        assert_eq!(days[3], days[2]);
        assert_eq!(days[0].arms[1].users, 3, "silent users count as 0 for a sum");
    }

    /// A bandit's days are stratified by period like its analysis.
    #[test]
    fn bandit_days_keep_their_periods() {
        let settings = Settings::fixed(0.05, 2);
        let def = MetricDef::default();
        let cells = vec![
            Cell { day: 0, arm: 0, period: 0, moments: moments(&[1.0, 2.0, 3.0]) },
            Cell { day: 0, arm: 1, period: 0, moments: moments(&[2.0, 3.0, 4.0]) },
            Cell { day: 1, arm: 1, period: 1, moments: moments(&[5.0, 6.0, 4.0]) },
            Cell { day: 1, arm: 0, period: 1, moments: moments(&[1.0, 1.5]) },
        ];
        let enrolled = vec![
            Enrolled { day: 0, arm: 0, period: 0, users: 3 },
            Enrolled { day: 0, arm: 1, period: 0, users: 3 },
            Enrolled { day: 1, arm: 0, period: 1, users: 2 },
            Enrolled { day: 1, arm: 1, period: 1, users: 3 },
        ];
        let days = timeline(&settings, "m", &def, None, &arms(), 2, 2, &cells, &enrolled);
        let c = days[1].arms[1].comparison.unwrap();
        assert!(c.test.starts_with("stratified"), "{}", c.test);
        assert_eq!(days[1].arms[0].users, 5);
    }

    /// The callback runs once per day (where the database checks for a cancel), and cells or
    /// enrollments dated past the last day do not count.
    #[test]
    fn each_day_is_checked_and_later_rows_do_not_count() {
        let settings = Settings::fixed(0.05, 2);
        let def = MetricDef::default();
        let cells = vec![
            Cell { day: 0, arm: 0, period: 0, moments: moments(&[1.0, 2.0, 3.0]) },
            Cell { day: 0, arm: 1, period: 0, moments: moments(&[2.0, 3.0, 4.0]) },
            Cell { day: 2_900_000, arm: 1, period: 0, moments: moments(&[2.0, 3.0, 4.0, 100.0]) },
        ];
        let enrolled = vec![
            Enrolled { day: 0, arm: 0, period: 0, users: 3 },
            Enrolled { day: 0, arm: 1, period: 0, users: 3 },
            Enrolled { day: 2_900_000, arm: 1, period: 0, users: 1 },
        ];
        let mut checked = 0;
        let days = timeline_with(&settings, "m", &def, None, &arms(), 0, 3, &cells, &enrolled, &[], || checked += 1);
        assert_eq!((days.len(), checked), (3, 3));
        assert_eq!(days[2].arms[1].users, 3);
        assert_eq!(days[2], timeline(&settings, "m", &def, None, &arms(), 0, 1, &cells, &enrolled)[0]);
    }
}
