//! Interactions between experiments and differential impact across segments.
//!
//! Interaction: users enrolled in two experiments A and B form an r x c table of cells (arm of
//! A, arm of B). Independence of the two assignments is Pearson's chi-square test on the
//! table of users (scipy.stats.chi2_contingency, correction=False). The interaction on a
//! metric is the OLS of the per-user value on A's arms, B's arms and their products with
//! HC2 robust variance, Wald-tested on the products (statsmodels `y ~ C(a) * C(b)`,
//! cov_type="HC2"). That model is saturated, so its fit is the cell means and its HC2
//! variance of a cell mean is the cell's sample variance over its n: the test needs only
//! each cell's n, mean and sum of squares.
//!
//! Differential impact: per attribute and treatment, each segment's effect (difference of
//! means with the control, Welch's variance), Cochran's Q across segments
//! (statsmodels combine_effects), and each segment against the rest of the users (the 2 x 2
//! interaction above with the segment as the other factor). Benjamini-Hochberg across every
//! segment test of the experiment keeps the expected share of false findings at the level.

use crate::stats::dist::normal_sf;
use crate::stats::multiple::benjamini_hochberg;
use crate::stats::srm::chi2_sf;
use crate::stats::Moments;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChiSquare {
    pub statistic: f64,
    pub df: f64,
    pub p_value: f64,
}

/// Pearson's chi-square test of independence of an r x c table of counts. Rows and columns
/// with no count are left out (their expected counts are 0); None below 2 x 2 after that.
pub fn independence(table: &[Vec<f64>]) -> Option<ChiSquare> {
    let cols = table.iter().map(|r| r.len()).max().unwrap_or(0);
    let at = |i: usize, j: usize| table[i].get(j).copied().unwrap_or(0.0);
    let row_sums: Vec<f64> = (0..table.len()).map(|i| (0..cols).map(|j| at(i, j)).sum()).collect();
    let col_sums: Vec<f64> = (0..cols).map(|j| (0..table.len()).map(|i| at(i, j)).sum()).collect();
    let rows: Vec<usize> = (0..table.len()).filter(|&i| row_sums[i] > 0.0).collect();
    let columns: Vec<usize> = (0..cols).filter(|&j| col_sums[j] > 0.0).collect();
    if rows.len() < 2 || columns.len() < 2 {
        return None;
    }
    let total: f64 = row_sums.iter().sum();
    let mut statistic = 0.0;
    for &i in &rows {
        for &j in &columns {
            let expected = row_sums[i] * col_sums[j] / total;
            statistic += (at(i, j) - expected).powi(2) / expected;
        }
    }
    let df = ((rows.len() - 1) * (columns.len() - 1)) as f64;
    Some(ChiSquare { statistic, df, p_value: chi2_sf(statistic, df) })
}

/// One interaction term: (treatment effect of A's arm `a` in B's arm `b`) minus (that effect
/// in B's control), with its HC2 standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Term {
    pub a: usize,
    pub b: usize,
    pub estimate: f64,
    pub se: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub terms: Vec<Term>,
    /// The Wald test of every term together.
    pub wald: ChiSquare,
}

impl Interaction {
    /// The term furthest from 0 in standard errors (the only one for 2 x 2).
    pub fn largest(&self) -> Term {
        *self
            .terms
            .iter()
            .max_by(|x, y| (x.estimate / x.se).abs().total_cmp(&(y.estimate / y.se).abs()))
            .expect("an interaction has a term")
    }
}

/// In a cluster-randomized experiment: per pair of cells (`a`, `b` of each), the sums over
/// clusters of the products of the two cells' totals in the cluster: sum of values times sum
/// of values (`yy`), values times users (`yn`), users times values (`ny`), users times users
/// (`nn`). With the cells' means they give the clusters' scores' cross-products.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CellCross {
    pub yy: f64,
    pub yn: f64,
    pub ny: f64,
    pub nn: f64,
}

/// Two cells, ((a, b), (a', b')).
pub type CellPair = ((usize, usize), (usize, usize));

/// The clusters of the users in the cells, and each pair of cells' `CellCross`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Clusters {
    pub clusters: f64,
    pub cross: std::collections::HashMap<CellPair, CellCross>,
}

/// The interaction test on the cells' moments: `cells[a][b]` holds the users in arm `a` of A
/// and arm `b` of B, arm 0 the control of each. None when a cell has fewer than 2 users or
/// the terms' covariance is singular (no spread in the cells that define them).
pub fn interaction(cells: &[Vec<Moments>]) -> Option<Interaction> {
    interaction_with(cells, None)
}

/// `interaction` with, given `clusters`, the cluster-robust covariance of the cell means
/// (statsmodels' `cov_type="cluster"` of the same saturated regression: the sandwich over
/// clusters, times G / (G - 1) (N - 1) / (N - K) with K the cells).
pub fn interaction_with(cells: &[Vec<Moments>], clusters: Option<&Clusters>) -> Option<Interaction> {
    let ra = cells.len();
    let rb = cells.first()?.len();
    if ra < 2 || rb < 2 || cells.iter().any(|r| r.len() != rb) {
        return None;
    }
    // Covariance of two cell means: HC2 gives the cell's sample variance over its n, and 0
    // between cells (no user is in two).
    let mut v: std::collections::HashMap<CellPair, f64> = std::collections::HashMap::new();
    for a in 0..ra {
        for b in 0..rb {
            let m = &cells[a][b];
            v.insert(((a, b), (a, b)), m.variance()? / m.n);
        }
    }
    if let Some(c) = clusters {
        let n: f64 = cells.iter().flatten().map(|m| m.n).sum();
        let k = (ra * rb) as f64;
        if !(c.clusters >= 2.0 && n > k) || cells.iter().flatten().any(|m| m.n < 2.0) {
            return None;
        }
        let factor = c.clusters / (c.clusters - 1.0) * (n - 1.0) / (n - k);
        v.clear();
        for (&((a, b), (a2, b2)), x) in &c.cross {
            let (m, m2) = (&cells[a][b], &cells[a2][b2]);
            if m.n < 2.0 || m2.n < 2.0 {
                return None;
            }
            let (mu, mu2) = (m.mean, m2.mean);
            let scores = x.yy - mu2 * x.yn - mu * x.ny + mu * mu2 * x.nn;
            v.insert(((a, b), (a2, b2)), factor * scores / (m.n * m2.n));
        }
    }
    let mu = |a: usize, b: usize| cells[a][b].mean;
    let index: Vec<(usize, usize)> = (1..ra).flat_map(|a| (1..rb).map(move |b| (a, b))).collect();
    let estimates: Vec<f64> = index.iter().map(|&(a, b)| mu(a, b) - mu(a, 0) - mu(0, b) + mu(0, 0)).collect();
    // Cov(g_ab, g_cd) = sum over the cells both contrasts use, with the product of signs.
    let cell_signs = |(a, b): (usize, usize)| [((a, b), 1.0), ((a, 0), -1.0), ((0, b), -1.0), ((0, 0), 1.0)];
    let k = index.len();
    let mut cov = vec![vec![0.0; k]; k];
    for (i, &x) in index.iter().enumerate() {
        for (j, &y) in index.iter().enumerate() {
            let mut s = 0.0;
            for (cx, sx) in cell_signs(x) {
                for (cy, sy) in cell_signs(y) {
                    s += sx * sy * v.get(&(cx, cy)).copied().unwrap_or(0.0);
                }
            }
            cov[i][j] = s;
        }
    }
    let statistic = quadratic_form_inverse(&cov, &estimates)?;
    let terms = index
        .iter()
        .zip(&estimates)
        .enumerate()
        .map(|(i, (&(a, b), &estimate))| Term { a, b, estimate, se: cov[i][i].sqrt() })
        .collect();
    let df = k as f64;
    Some(Interaction { terms, wald: ChiSquare { statistic, df, p_value: chi2_sf(statistic, df) } })
}

/// x' M^-1 x by Cholesky; None when M is not positive definite (relative to its diagonal).
fn quadratic_form_inverse(m: &[Vec<f64>], x: &[f64]) -> Option<f64> {
    let k = x.len();
    let scale = (0..k).map(|i| m[i][i]).fold(0.0f64, f64::max);
    if !(scale > 0.0 && scale.is_finite()) {
        return None;
    }
    let mut l = vec![vec![0.0; k]; k];
    for i in 0..k {
        for j in 0..=i {
            let s: f64 = m[i][j] - (0..j).map(|p| l[i][p] * l[j][p]).sum::<f64>();
            if i == j {
                if s <= scale * 1e-12 {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    // Solve L y = x; the form is |y|^2.
    let mut y = vec![0.0; k];
    for i in 0..k {
        y[i] = (x[i] - (0..i).map(|p| l[i][p] * y[p]).sum::<f64>()) / l[i][i];
    }
    Some(y.iter().map(|v| v * v).sum())
}

/// A treatment's effect on a group of users: difference of means with the control and its
/// Welch variance. None below 2 users in either arm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effect {
    pub diff: f64,
    pub variance: f64,
}

pub fn effect(control: &Moments, treatment: &Moments) -> Option<Effect> {
    let vc = control.variance()?;
    let vt = treatment.variance()?;
    Some(Effect { diff: treatment.mean - control.mean, variance: vt / treatment.n + vc / control.n })
}

/// Cochran's Q: heterogeneity of effects estimated with known variances (k - 1 degrees of
/// freedom). None below two effects or with an effect of variance 0.
pub fn cochran_q(effects: &[Effect]) -> Option<ChiSquare> {
    if effects.len() < 2 || effects.iter().any(|e| !(e.variance > 0.0)) {
        return None;
    }
    let w: Vec<f64> = effects.iter().map(|e| 1.0 / e.variance).collect();
    let pooled = effects.iter().zip(&w).map(|(e, w)| w * e.diff).sum::<f64>() / w.iter().sum::<f64>();
    let statistic: f64 = effects.iter().zip(&w).map(|(e, w)| w * (e.diff - pooled).powi(2)).sum();
    let df = (effects.len() - 1) as f64;
    Some(ChiSquare { statistic, df, p_value: chi2_sf(statistic, df) })
}

/// Two-sided z-test of a segment's effect against the rest's (independent groups of users).
pub fn versus_rest(segment: &Effect, rest: &Effect) -> Option<f64> {
    let se = (segment.variance + rest.variance).sqrt();
    if !(se > 0.0) {
        return None;
    }
    Some(2.0 * normal_sf(((segment.diff - rest.diff) / se).abs()))
}

/// One attribute's segments for one metric: per segment, the moments of each arm (arm 0 the
/// control), as the test uses them.
pub struct AttributeInput {
    pub segments: Vec<Vec<Moments>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentImpact {
    /// The treatment arm (index in the segment's arms).
    pub arm: usize,
    pub segment: usize,
    pub effect: Option<Effect>,
    pub rest: Option<Effect>,
    pub p_value: Option<f64>,
    /// Benjamini-Hochberg across every segment test of every attribute given.
    pub q_value: Option<f64>,
    /// Cochran's Q p-value of the attribute's segments for this treatment.
    pub heterogeneity_p: Option<f64>,
}

/// Every attribute's segment tests, adjusted together.
pub fn differential_impact(attributes: &[AttributeInput]) -> Vec<Vec<SegmentImpact>> {
    let mut out: Vec<Vec<SegmentImpact>> = attributes
        .iter()
        .map(|attr| {
            let arms = attr.segments.iter().map(|s| s.len()).max().unwrap_or(0);
            let arm_of = |s: &Vec<Moments>, a: usize| s.get(a).copied().unwrap_or_default();
            let mut rows = Vec::new();
            for arm in 1..arms {
                let effects: Vec<Option<Effect>> =
                    attr.segments.iter().map(|s| effect(&arm_of(s, 0), &arm_of(s, arm))).collect();
                let known: Vec<Effect> = effects.iter().flatten().copied().collect();
                let heterogeneity_p = cochran_q(&known).map(|c| c.p_value);
                for (segment, e) in effects.iter().enumerate() {
                    let rest_of = |a: usize| {
                        attr.segments
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| *i != segment)
                            .fold(Moments::default(), |acc, (_, s)| acc.merge(&arm_of(s, a)))
                    };
                    let rest = effect(&rest_of(0), &rest_of(arm));
                    let p_value = match (e, &rest) {
                        (Some(e), Some(r)) => versus_rest(e, r),
                        _ => None,
                    };
                    rows.push(SegmentImpact {
                        arm,
                        segment,
                        effect: *e,
                        rest,
                        p_value,
                        q_value: None,
                        heterogeneity_p,
                    });
                }
            }
            rows
        })
        .collect();
    let ps: Vec<f64> = out.iter().flatten().filter_map(|r| r.p_value).collect();
    let mut qs = benjamini_hochberg(&ps).into_iter();
    for r in out.iter_mut().flatten() {
        if r.p_value.is_some() {
            r.q_value = qs.next();
        }
    }
    out
}

/// What `ab_summary` says of another experiment sharing users: its assignment depends on
/// this one's, or a metric's treatment effect differs by its arm (flagged after adjustment).
pub struct InteractionFinding {
    pub other: String,
    pub metric: Option<String>,
    pub independence_p: Option<f64>,
    /// (variant, other variant, estimate, adjusted p) of a flagged interaction.
    pub interaction: Option<(String, String, f64, f64)>,
}

/// The summary's lines on interactions: nothing at all when nothing was found, so the report
/// of every other experiment is unchanged. The assignments' dependence is reported below the
/// sample ratio check's threshold (like a sample ratio mismatch, it says the enrollment went
/// wrong, not that an effect differs). Names are escaped as everywhere in the report.
pub fn summary_lines(interactions: &[InteractionFinding]) -> String {
    use crate::names::printable;
    use crate::winner::{p_is, SRM_THRESHOLD};
    use std::fmt::Write;
    let mut out = String::new();
    let mut dependent = std::collections::BTreeSet::new();
    for f in interactions {
        if let Some(p) = f.independence_p.filter(|p| *p < SRM_THRESHOLD) {
            if dependent.insert(f.other.clone()) {
                let _ = writeln!(
                    out,
                    "Interactions: assignment depends on experiment \"{}\" (chi-square p {}): one of the two enrolls differently by arm of the other.",
                    printable(&f.other),
                    p_is(p)
                );
            }
        }
    }
    for f in interactions {
        let (Some(metric), Some((variant, other_variant, estimate, p))) = (&f.metric, &f.interaction) else { continue };
        let _ = writeln!(
            out,
            "Interactions: the effect of \"{}\" on {} is {:.4} {} among users in \"{}\" of experiment \"{}\" than among those in its control (adjusted p {}); see ab_interactions.",
            printable(variant),
            printable(metric),
            estimate.abs(),
            if *estimate < 0.0 { "lower" } else { "higher" },
            printable(other_variant),
            printable(&f.other),
            p_is(*p)
        );
    }
    if out.is_empty() {
        out
    } else {
        format!("\n{out}")
    }
}

/// The summary's line when more than `limit` other experiments share users with this one:
/// analysing each costs as much as its own analysis, so the summary names the function that
/// does (by id: a name may need quoting).
pub fn summary_too_many(limit: usize, experiment_id: i64) -> String {
    format!(
        "\nInteractions: more than {limit} other experiments share users with this one, more than the summary checks \
         (ab_testing.summary_interactions_limit); SELECT * FROM ab_interactions({experiment_id}) checks them all.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_to_check_names_the_function() {
        assert_eq!(
            summary_too_many(10, 42),
            "\nInteractions: more than 10 other experiments share users with this one, more than the summary checks \
             (ab_testing.summary_interactions_limit); SELECT * FROM ab_interactions(42) checks them all.\n"
        );
    }

    fn moments(xs: &[f64]) -> Moments {
        let mut m = Moments::default();
        xs.iter().for_each(|&x| m.add(x));
        m
    }

    #[test]
    fn independence_of_a_table() {
        // scipy.stats.chi2_contingency([[10, 20], [30, 40]], correction=False)
        let r = independence(&[vec![10.0, 20.0], vec![30.0, 40.0]]).unwrap();
        assert!((r.statistic - 0.7936507936507936).abs() < 1e-12);
        assert_eq!(r.df, 1.0);
        assert!((r.p_value - 0.37299848361348686).abs() < 1e-12);
        // Empty rows and columns are left out; one row left is no test.
        let r2 = independence(&[vec![10.0, 20.0, 0.0], vec![0.0, 0.0, 0.0], vec![30.0, 40.0, 0.0]]).unwrap();
        assert_eq!(r, r2);
        assert_eq!(independence(&[vec![10.0, 20.0], vec![0.0, 0.0]]), None);
        assert_eq!(independence(&[]), None);
    }

    #[test]
    fn interaction_of_additive_cells_is_zero() {
        let base = [1.0, 2.0, 3.0, 4.0];
        let shifted = |d: f64| moments(&base.iter().map(|x| x + d).collect::<Vec<_>>());
        // Effects add up (A +1, B +2): no interaction.
        let cells = vec![vec![shifted(0.0), shifted(2.0)], vec![shifted(1.0), shifted(3.0)]];
        let r = interaction(&cells).unwrap();
        assert!(r.terms[0].estimate.abs() < 1e-12);
        assert!((r.wald.p_value - 1.0).abs() < 1e-9);
        // A cell of one user, or cells without spread, give no test.
        let mut thin = cells.clone();
        thin[1][1] = moments(&[3.0]);
        assert_eq!(interaction(&thin), None);
        let flat = vec![vec![moments(&[1.0, 1.0]); 2]; 2];
        assert_eq!(interaction(&flat), None);
    }

    #[test]
    fn segment_against_rest_is_the_two_by_two_interaction() {
        let c1 = moments(&[1.0, 2.0, 0.5, 3.0]);
        let t1 = moments(&[2.0, 4.0, 3.5, 3.0, 5.0]);
        let c2 = moments(&[1.0, 1.5, 0.0]);
        let t2 = moments(&[1.0, 2.5, 1.0, 0.5]);
        let p = versus_rest(&effect(&c1, &t1).unwrap(), &effect(&c2, &t2).unwrap()).unwrap();
        let i = interaction(&[vec![c2, c1], vec![t2, t1]]).unwrap();
        assert!((p - i.wald.p_value).abs() < 1e-9 * p, "{p} {}", i.wald.p_value);
    }

    #[test]
    fn adjustment_spans_every_attribute() {
        let seg = |shift: f64| vec![moments(&[1.0, 2.0, 3.0]), moments(&[1.0 + shift, 2.5 + shift, 3.0 + shift])];
        let attrs = vec![
            AttributeInput { segments: vec![seg(0.0), seg(3.0)] },
            AttributeInput { segments: vec![seg(0.1), seg(0.2), seg(0.0)] },
        ];
        let out = differential_impact(&attrs);
        assert_eq!(out[0].len(), 2);
        assert_eq!(out[1].len(), 3);
        let ps: Vec<f64> = out.iter().flatten().map(|r| r.p_value.unwrap()).collect();
        let qs: Vec<f64> = out.iter().flatten().map(|r| r.q_value.unwrap()).collect();
        assert_eq!(qs, benjamini_hochberg(&ps));
        // Two segments: each against the rest is the same test.
        assert!((ps[0] - ps[1]).abs() < 1e-12);
        assert!(out[0][0].heterogeneity_p.is_some());
        // A segment too small for an effect has no test, and is left out of the adjustment.
        let attrs = vec![AttributeInput { segments: vec![seg(0.0), vec![moments(&[1.0]), moments(&[2.0])]] }];
        let out = differential_impact(&attrs);
        assert_eq!(out[0][1].p_value, None);
        assert_eq!(out[0][1].q_value, None);
        assert_eq!(out[0][0].heterogeneity_p, None);
    }

    #[test]
    fn summary_says_nothing_without_findings_and_escapes_names() {
        let quiet = InteractionFinding {
            other: "b".into(),
            metric: Some("m".into()),
            independence_p: Some(0.002),
            interaction: None,
        };
        assert_eq!(summary_lines(&[quiet]), "");
        assert_eq!(summary_lines(&[]), "");
        let found = [
            InteractionFinding {
                other: "rate\nsheet".into(),
                metric: Some("resolved".into()),
                independence_p: Some(1e-5),
                interaction: Some(("cards".into(), "with examples".into(), -0.16472, 2e-6)),
            },
            InteractionFinding {
                other: "rate\nsheet".into(),
                metric: None,
                independence_p: Some(1e-5),
                interaction: None,
            },
            InteractionFinding {
                other: "footer".into(),
                metric: Some("amount".into()),
                independence_p: Some(0.4),
                interaction: Some(("new".into(), "b".into(), 40.0, 0.01)),
            },
        ];
        assert_eq!(
            summary_lines(&found),
            "\nInteractions: assignment depends on experiment \"rate\\u{000A}sheet\" (chi-square p = 1.0e-5): one of the two enrolls differently by arm of the other.\n\
             Interactions: the effect of \"cards\" on resolved is 0.1647 lower among users in \"with examples\" of experiment \"rate\\u{000A}sheet\" than among those in its control (adjusted p = 2.0e-6); see ab_interactions.\n\
             Interactions: the effect of \"new\" on amount is 40.0000 higher among users in \"b\" of experiment \"footer\" than among those in its control (adjusted p = 0.0100); see ab_interactions.\n"
        );
    }
}
