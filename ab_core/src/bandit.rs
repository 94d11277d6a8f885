//! Adaptive allocation: the weight periods of a bandit experiment, the analysis stratified by
//! period, Thompson sampling weights and the sample-ratio check per period.
//!
//! Every user is analysed in the period whose weights assigned them. Within a period the
//! variants are a randomized comparison; across periods both the weights and the users (time)
//! change, so pooling them would confound the two (Simpson's paradox). Each variant's mean is
//! therefore estimated per period and combined with the period's share of all users:
//! mean_v = sum_p w_p mean_vp, var(mean_v) = sum_p w_p^2 s_vp^2 / n_vp, w_p = N_p / N.

use crate::definition::{Direction, MetricType};
use crate::stats::dist::{normal_pdf, normal_sf};
use crate::stats::srm::{chi2_sf, srm_test, SrmResult};
use crate::stats::Moments;

/// A variant's estimate: its period-weighted mean and that mean's variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    pub var: f64,
    /// sum over periods of (w_p^2 s_vp^2 / n_vp)^2 / (n_vp - 1): with `var`, the
    /// Welch-Satterthwaite degrees of freedom of a difference of two estimates.
    pub df_terms: f64,
}

/// Groups consecutive periods so that every variant has at least 2 users in each group (a
/// period too small for a variance joins the next one; the last joins the one before).
/// `arms[v][p]`: moments of variant v in period p. None when some variant has fewer than 2
/// users in all.
pub fn groups(arms: &[Vec<Moments>]) -> Option<Vec<Vec<usize>>> {
    let periods = arms.iter().map(Vec::len).max().unwrap_or(0);
    let n = |v: usize, p: usize| arms[v].get(p).map_or(0.0, |m| m.n);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut counts = vec![0.0; arms.len()];
    for p in 0..periods {
        open.push(p);
        counts.iter_mut().enumerate().for_each(|(v, c)| *c += n(v, p));
        if counts.iter().all(|&c| c >= 2.0) {
            out.push(std::mem::take(&mut open));
            counts.iter_mut().for_each(|c| *c = 0.0);
        }
    }
    if !open.is_empty() {
        out.last_mut()?.extend(open);
    }
    (!out.is_empty()).then_some(out)
}

fn merged(strata: &[Moments], group: &[usize]) -> Moments {
    group.iter().fold(Moments::default(), |acc, &p| acc.merge(&strata.get(p).copied().unwrap_or_default()))
}

/// Period-stratified estimates of every variant's mean (see the module's comment).
pub fn stratified(arms: &[Vec<Moments>]) -> Option<Vec<Estimate>> {
    let groups = groups(arms)?;
    let cells: Vec<Vec<Moments>> = arms.iter().map(|a| groups.iter().map(|g| merged(a, g)).collect()).collect();
    let sizes: Vec<f64> = (0..groups.len()).map(|g| cells.iter().map(|c| c[g].n).sum()).collect();
    let total: f64 = sizes.iter().sum();
    Some(
        cells
            .iter()
            .map(|c| {
                c.iter().zip(&sizes).fold(Estimate { mean: 0.0, var: 0.0, df_terms: 0.0 }, |acc, (m, size)| {
                    let w = size / total;
                    let a = w * w * m.variance().unwrap_or(0.0) / m.n;
                    Estimate {
                        mean: acc.mean + w * m.mean,
                        var: acc.var + a,
                        df_terms: acc.df_terms + a * a / (m.n - 1.0),
                    }
                })
            })
            .collect(),
    )
}

/// The posterior of each variant's mean under a flat prior, as a normal (mean, sd), from the
/// same period-weighted combination. A binary metric uses, per period, the mean and variance
/// of the Beta(1 + converted, 1 + not converted) posterior, so that a variant with no
/// conversion yet still has a spread. None while some variant has no user.
pub fn posteriors(kind: MetricType, arms: &[Vec<Moments>]) -> Option<Vec<(f64, f64)>> {
    let periods = arms.iter().map(Vec::len).max().unwrap_or(0);
    let sizes: Vec<f64> = (0..periods).map(|p| arms.iter().map(|a| a.get(p).map_or(0.0, |m| m.n)).sum()).collect();
    if arms.iter().any(|a| a.iter().map(|m| m.n).sum::<f64>() == 0.0) {
        return None;
    }
    let out = match kind {
        MetricType::Binary => arms
            .iter()
            .map(|a| {
                let (mut mean, mut var) = (0.0, 0.0);
                // A variant absent from a period takes that period's weight from its other periods.
                let covered: f64 =
                    (0..periods).filter(|&p| a.get(p).is_some_and(|m| m.n > 0.0)).map(|p| sizes[p]).sum();
                for (p, m) in a.iter().enumerate().filter(|(_, m)| m.n > 0.0) {
                    let w = sizes[p] / covered;
                    let converted = (m.mean * m.n).round();
                    let (alpha, beta) = (1.0 + converted, 1.0 + m.n - converted);
                    let pm = alpha / (alpha + beta);
                    mean += w * pm;
                    var += w * w * pm * (1.0 - pm) / (alpha + beta + 1.0);
                }
                (mean, var.sqrt())
            })
            .collect(),
        MetricType::Continuous | MetricType::Ratio | MetricType::Quantile => match stratified(arms) {
            Some(est) => est.iter().map(|e| (e.mean, e.var.sqrt())).collect(),
            // Too few users for a variance per period: the pooled moments.
            None => arms
                .iter()
                .map(|a| {
                    let m = a.iter().fold(Moments::default(), |acc, m| acc.merge(m));
                    (m.mean, (m.variance().unwrap_or(0.0) / m.n).sqrt())
                })
                .collect(),
        },
    };
    Some(out)
}

/// P(step or normal CDF) that a draw from (mean, sd) is below x.
fn below(x: f64, (mean, sd): (f64, f64)) -> f64 {
    if sd > 0.0 {
        normal_sf((mean - x) / sd)
    } else if x > mean {
        1.0
    } else if x < mean {
        0.0
    } else {
        0.5
    }
}

/// The probability that each variant is the best, for independent normal posteriors:
/// P(v best) = integral of pdf_v(x) * prod_{u != v} P(X_u < x) dx (Simpson's rule over
/// +-9 standard deviations of v). This is the probability with which Thompson sampling sends a
/// new user to v. Normalized to sum to 1.
pub fn chance_best(posteriors: &[(f64, f64)], direction: Direction) -> Vec<f64> {
    let post: Vec<(f64, f64)> =
        posteriors.iter().map(|&(m, s)| (if direction == Direction::Lower { -m } else { m }, s)).collect();
    const STEPS: usize = 3600;
    const SPAN: f64 = 9.0;
    let h = 2.0 * SPAN / STEPS as f64;
    let raw: Vec<f64> = post
        .iter()
        .enumerate()
        .map(|(v, &(mv, sv))| {
            let others =
                |x: f64| post.iter().enumerate().filter(|(u, _)| *u != v).map(|(_, &p)| below(x, p)).product::<f64>();
            if sv <= 0.0 {
                return others(mv);
            }
            let mut sum = 0.0;
            for i in 0..=STEPS {
                let z = -SPAN + i as f64 * h;
                let coef = if i == 0 || i == STEPS {
                    1.0
                } else if i % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                sum += coef * normal_pdf(z) * others(mv + sv * z);
            }
            sum * h / 3.0
        })
        .collect();
    let total: f64 = raw.iter().sum();
    if total > 0.0 && total.is_finite() {
        raw.iter().map(|p| p / total).collect()
    } else {
        vec![1.0 / post.len() as f64; post.len()]
    }
}

/// New weights in basis points summing to `total_bp`: each variant gets `min_share` percent of
/// the enrolled traffic, and the rest is shared in proportion to its chance of being best.
/// Rounded by largest remainder, so a variant's weight is within one basis point of its share.
pub fn weights(chance: &[f64], min_share: f64, total_bp: u32) -> Vec<u32> {
    let k = chance.len() as f64;
    let floor = (min_share / 100.0).min(1.0 / k);
    let exact: Vec<f64> = chance.iter().map(|c| (floor + (1.0 - k * floor) * c) * total_bp as f64).collect();
    let mut bp: Vec<u32> = exact.iter().map(|x| x.floor() as u32).collect();
    let mut left = total_bp.saturating_sub(bp.iter().sum());
    let mut order: Vec<usize> = (0..bp.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        bp[i] += 1;
        left -= 1;
    }
    bp
}

/// Sample ratio mismatch per period: each period's users per variant against the weights in
/// force then, the chi-square statistics and degrees of freedom summed over the periods.
/// `periods[p] = (users per variant, weights)`. None when no period has users.
pub fn srm_by_period(periods: &[(Vec<f64>, Vec<f64>)]) -> Option<SrmResult> {
    let (mut chi2, mut df) = (0.0, 0.0);
    for (observed, weights) in periods {
        if observed.iter().sum::<f64>() == 0.0 {
            continue;
        }
        // A period that sends every user to one variant (a rollout's rolled-back or last step)
        // carries no information while its users are all there.
        if weights.iter().zip(observed).filter(|(w, o)| **w > 0.0 || **o > 0.0).count() < 2 {
            continue;
        }
        let r = srm_test(observed, weights).ok()?;
        if r.p_value == 0.0 && r.chi2.is_infinite() {
            return Some(r);
        }
        chi2 += r.chi2;
        df += weights.iter().zip(observed).filter(|(w, o)| **w > 0.0 || **o > 0.0).count() as f64 - 1.0;
    }
    (df > 0.0).then(|| SrmResult { chi2, p_value: chi2_sf(chi2, df) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(values: &[f64]) -> Moments {
        let mut m = Moments::default();
        values.iter().for_each(|&x| m.add(x));
        m
    }

    #[test]
    fn one_period_is_the_plain_mean() {
        let arms = vec![vec![m(&[1.0, 2.0, 3.0])], vec![m(&[2.0, 4.0])]];
        let e = stratified(&arms).unwrap();
        assert!((e[0].mean - 2.0).abs() < 1e-12 && (e[0].var - 1.0 / 3.0).abs() < 1e-12);
        assert!((e[1].mean - 3.0).abs() < 1e-12 && (e[1].var - 1.0).abs() < 1e-12);
    }

    #[test]
    fn small_periods_join_their_neighbours() {
        let arms = vec![
            vec![m(&[1.0]), m(&[1.0, 2.0]), m(&[5.0]), m(&[2.0])],
            vec![m(&[1.0, 2.0]), m(&[2.0]), m(&[1.0, 1.0]), m(&[3.0])],
        ];
        assert_eq!(groups(&arms).unwrap(), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(groups(&[vec![m(&[1.0])], vec![m(&[1.0, 2.0])]]), None);
        // A short last period joins the one before.
        let arms = vec![vec![m(&[1.0, 2.0]), m(&[1.0])], vec![m(&[3.0, 4.0]), m(&[])]];
        assert_eq!(groups(&arms).unwrap(), vec![vec![0, 1]]);
    }

    #[test]
    fn chance_best_of_two_is_the_normal_tail() {
        let c = chance_best(&[(0.0, 0.3), (0.5, 0.4)], Direction::Higher);
        let exact = normal_sf(-0.5 / 0.5);
        assert!((c[1] - exact).abs() < 1e-9, "{c:?} {exact}");
        let c = chance_best(&[(0.0, 0.3), (0.5, 0.4)], Direction::Lower);
        assert!((c[0] - exact).abs() < 1e-9);
        // Point masses: the larger mean is best for certain.
        assert_eq!(chance_best(&[(1.0, 0.0), (2.0, 0.0)], Direction::Higher), vec![0.0, 1.0]);
    }

    #[test]
    fn weights_keep_the_floor_and_the_total() {
        let w = weights(&[0.0, 0.0, 1.0], 5.0, 10_000);
        assert_eq!(w, vec![500, 500, 9000]);
        let w = weights(&[0.2, 0.3, 0.5], 10.0, 5_000);
        assert_eq!(w.iter().sum::<u32>(), 5_000);
        assert!(w.iter().all(|&x| x >= 500));
        let w = weights(&[1.0 / 3.0; 3], 5.0, 10_000);
        assert_eq!(w.iter().sum::<u32>(), 10_000);
        assert!(w.iter().all(|&x| (3333..=3334).contains(&x)));
    }

    #[test]
    fn srm_sums_the_periods() {
        let one = srm_test(&[48.0, 52.0], &[50.0, 50.0]).unwrap();
        let two = srm_test(&[15.0, 85.0], &[10.0, 90.0]).unwrap();
        let r = srm_by_period(&[(vec![48.0, 52.0], vec![50.0, 50.0]), (vec![15.0, 85.0], vec![10.0, 90.0])]).unwrap();
        assert!((r.chi2 - (one.chi2 + two.chi2)).abs() < 1e-12);
        assert!((r.p_value - chi2_sf(one.chi2 + two.chi2, 2.0)).abs() < 1e-12);
        // Pooled, the same users look badly mismatched against the last weights.
        assert!(srm_test(&[63.0, 137.0], &[10.0, 90.0]).unwrap().p_value < 1e-6);
        assert!(r.p_value > 0.1);
    }

    #[test]
    fn a_period_with_one_possible_variant_is_left_out() {
        let both = srm_by_period(&[(vec![50.0, 50.0], vec![50.0, 50.0]), (vec![7.0, 0.0], vec![100.0, 0.0])]).unwrap();
        let alone = srm_by_period(&[(vec![50.0, 50.0], vec![50.0, 50.0])]).unwrap();
        assert_eq!(both.p_value, alone.p_value);
        // A user on the variant with no weight is still a mismatch.
        assert_eq!(srm_by_period(&[(vec![7.0, 1.0], vec![100.0, 0.0])]).unwrap().p_value, 0.0);
        assert!(srm_by_period(&[(vec![7.0, 0.0], vec![100.0, 0.0])]).is_none());
    }
}
