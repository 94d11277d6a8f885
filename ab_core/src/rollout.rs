//! Safe rollouts: the new variant's share of new users follows steps, and every check tests
//! each guardrail (a metric with a margin) and the sample ratio with an always-valid test, so
//! that checking every few minutes does not inflate false alarms.
//!
//! The test is the asymptotic confidence sequence of `stats::sequential` (Waudby-Smith et al.
//! 2023, GrowthBook's form), the one the analysis uses in sequential mode. A guardrail is
//! breached when the lower end of the sequence for its harm (the treatment's difference from
//! the control, in the bad direction) lies above its margin: under a harm of at most the
//! margin that happens, at any of the checks, with probability at most its alpha (the
//! sequence is two-sided, so this one-sided use is conservative). The sample ratio is breached
//! when the sequence for the treatment's share, less the share each period's weights expect,
//! excludes 0. The experiment's alpha is split evenly (Bonferroni) between the guardrails and
//! the sample ratio, so an A/A rollout is rolled back in at most alpha of runs.
//!
//! A rollout's weights change at each step, so the data is stratified by weight period: a
//! period's difference compares only users enrolled under the same weights, and the periods
//! are pooled with inverse-variance weights.

use serde_json::{json, Value};

use crate::definition::Direction;
use crate::stats::sequential::half_width;
use crate::stats::Moments;

/// Where a rollout stands; stored in ab_experiments.allocation with its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Following its steps; `step` is the index of the current one.
    Ramping,
    /// Every user is served the control's config (their assignment is kept).
    RolledBack,
    /// Passed every step, or shipped: the new variant takes every new user.
    Completed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ramping => "ramping",
            State::RolledBack => "rolled_back",
            State::Completed => "completed",
        }
    }

    fn parse(s: &str) -> Option<State> {
        Some(match s {
            "ramping" => State::Ramping,
            "rolled_back" => State::RolledBack,
            "completed" => State::Completed,
            _ => return None,
        })
    }
}

/// `"allocation": {"mode": "rollout", "steps": [...], "step_every": "1 hour"}` and its progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// The new variant's share of new users at each step, in percent; increasing, the last 100.
    pub steps: Vec<f64>,
    /// How long each step lasts before the next, as a PostgreSQL interval.
    pub step_every: String,
    /// Index into `steps` of the step in force (or last in force, once rolled back).
    pub step: usize,
    pub state: State,
}

impl Rollout {
    pub fn to_json(&self) -> Value {
        json!({"mode": "rollout", "steps": self.steps, "step_every": self.step_every,
               "step": self.step, "state": self.state.as_str()})
    }

    /// From ab_experiments.allocation (NULL or any other mode: None).
    pub fn from_json(v: &Value) -> Option<Rollout> {
        if v.get("mode")?.as_str()? != "rollout" {
            return None;
        }
        let steps: Vec<f64> = v.get("steps")?.as_array()?.iter().map(Value::as_f64).collect::<Option<_>>()?;
        let step = v.get("step").and_then(Value::as_u64).unwrap_or(0) as usize;
        Some(Rollout {
            step: step.min(steps.len().saturating_sub(1)),
            steps,
            step_every: v.get("step_every")?.as_str()?.to_string(),
            state: v.get("state").and_then(Value::as_str).and_then(State::parse).unwrap_or(State::Ramping),
        })
    }

    /// The rollout moved by hand to `share` percent of new users (a percentage flag's switch):
    /// a step inserted after the current one, the later steps above it kept; 100 completes
    /// it. Only a ramping rollout moves, and only up: users keep their variant, so a lower
    /// share would change nothing for those already given the new one.
    pub fn moved_to(&self, share: f64) -> Result<Rollout, String> {
        if self.state != State::Ramping {
            return Err(format!("the rollout is {}, not ramping", self.state.as_str().replace('_', " ")));
        }
        let now = self.treatment_share();
        if !(share > now && share <= 100.0 && crate::bucketing::basis_points(share).is_some()) {
            return Err(format!(
                "share is {share}, must be above the current {now} and at most 100, with at most two decimals"
            ));
        }
        let mut steps: Vec<f64> = self.steps[..=self.step].to_vec();
        steps.push(share);
        steps.extend(self.steps[self.step + 1..].iter().filter(|s| **s > share));
        if steps.len() > crate::definition::MAX_STEPS {
            return Err(format!("a rollout has at most {} steps", crate::definition::MAX_STEPS));
        }
        let state = if share == 100.0 { State::Completed } else { State::Ramping };
        Ok(Rollout { steps, step: self.step + 1, state, step_every: self.step_every.clone() })
    }

    /// The new variant's share of new users now, in percent: the step's, all once completed,
    /// none while rolled back.
    pub fn treatment_share(&self) -> f64 {
        match self.state {
            State::Ramping => self.steps[self.step],
            State::RolledBack => 0.0,
            State::Completed => 100.0,
        }
    }
}

/// One guardrail's data: for each weight period, the control's and the new variant's values.
pub struct GuardrailInput {
    pub metric: String,
    pub direction: Direction,
    pub margin: f64,
    pub periods: Vec<(Moments, Moments)>,
}

/// What one test found: the figures a rollback records.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The metric's name, or "sample_ratio".
    pub guardrail: String,
    /// Users in the periods compared.
    pub users: f64,
    /// Guardrails: the harm (how much worse the new variant is, in the metric's units);
    /// sample ratio: the new variant's share less the expected one.
    pub estimate: f64,
    /// Guardrails: the always-valid lower bound of the harm; sample ratio: the half-width of
    /// the sequence around the estimate.
    pub bound: f64,
    /// Guardrails: the margin; sample ratio: 0.
    pub limit: f64,
    pub breached: bool,
}

impl Finding {
    pub fn to_json(&self) -> Value {
        json!({"guardrail": self.guardrail, "users": self.users, "estimate": self.estimate,
               "bound": self.bound, "limit": self.limit, "breached": self.breached})
    }

    /// Why the rollout was rolled back, in a sentence.
    pub fn reason(&self) -> String {
        if self.guardrail == SAMPLE_RATIO {
            format!(
                "sample ratio mismatch: the new variant's share of {} users is off by {:.4} (always-valid bound {:.4})",
                self.users, self.estimate, self.bound
            )
        } else {
            format!(
                "guardrail \"{}\" breached: harm {:.6} with always-valid lower bound {:.6} above the margin {} ({} users)",
                self.guardrail, self.estimate, self.bound, self.limit, self.users
            )
        }
    }
}

pub const SAMPLE_RATIO: &str = "sample_ratio";

/// The stratified difference (treatment - control) and its variance over the periods where
/// both arms have two users or more; None when no period has.
fn stratified(periods: &[(Moments, Moments)]) -> Option<(f64, f64, f64)> {
    let (mut weighted, mut precision, mut users) = (0.0, 0.0, 0.0);
    for (c, t) in periods {
        let (Some(vc), Some(vt)) = (c.variance(), t.variance()) else { continue };
        let mut var = vc / c.n + vt / t.n;
        users += c.n + t.n;
        if var <= 0.0 {
            // Each arm constant (every candidate failing, no control failing): the spread of
            // both arms taken together, which the difference itself makes positive.
            let n = c.n + t.n;
            let pooled = (c.n * t.n / n * (t.mean - c.mean).powi(2)) / (n - 1.0);
            var = pooled * (1.0 / c.n + 1.0 / t.n);
        }
        if var <= 0.0 {
            // Every value equal in both arms: no difference and no spread, skip.
            continue;
        }
        weighted += (t.mean - c.mean) / var;
        precision += 1.0 / var;
    }
    (precision > 0.0).then(|| (weighted / precision, 1.0 / precision, users))
}

/// Tests one guardrail at `alpha` (its share of the experiment's): None until some period has
/// two users with values in each arm.
pub fn check_guardrail(g: &GuardrailInput, alpha: f64, tuning: f64) -> Option<Finding> {
    let (diff, se2, users) = stratified(&g.periods)?;
    let harm = match g.direction {
        Direction::Higher => -diff,
        Direction::Lower => diff,
    };
    let lower = harm - half_width(se2, users, alpha, tuning);
    Some(Finding {
        guardrail: g.metric.clone(),
        users,
        estimate: harm,
        bound: lower,
        limit: g.margin,
        breached: lower > g.margin,
    })
}

/// Tests the sample ratio: per period (control users, new variant's users, the new variant's
/// expected share of the two, 0 to 1). Periods where one arm takes everything carry no
/// information. None before any user.
pub fn check_sample_ratio(periods: &[(f64, f64, f64)], alpha: f64, tuning: f64) -> Option<Finding> {
    let (mut dev, mut var, mut n) = (0.0, 0.0, 0.0);
    for &(c, t, p) in periods {
        if p <= 0.0 || p >= 1.0 {
            continue;
        }
        let users = c + t;
        dev += t - users * p;
        var += users * p * (1.0 - p);
        n += users;
    }
    if n < 1.0 || var <= 0.0 {
        return None;
    }
    let (estimate, se2) = (dev / n, var / (n * n));
    let w = half_width(se2, n, alpha, tuning);
    Some(Finding {
        guardrail: SAMPLE_RATIO.into(),
        users: n,
        estimate,
        bound: w,
        limit: 0.0,
        breached: estimate.abs() > w,
    })
}

/// Every test of one check, each at alpha / (guardrails + 1); the first breach found (in the
/// order given, the sample ratio last) decides the rollback.
pub fn check(guardrails: &[GuardrailInput], sample_ratio: &[(f64, f64, f64)], alpha: f64, tuning: f64) -> Vec<Finding> {
    let each = alpha / (guardrails.len() as f64 + 1.0);
    let mut out: Vec<Finding> = guardrails.iter().filter_map(|g| check_guardrail(g, each, tuning)).collect();
    out.extend(check_sample_ratio(sample_ratio, each, tuning));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    #[test]
    fn state_round_trips() {
        let r = Rollout { steps: vec![5.0, 50.0, 100.0], step_every: "1 hour".into(), step: 1, state: State::Ramping };
        assert_eq!(Rollout::from_json(&r.to_json()), Some(r.clone()));
        assert_eq!(r.treatment_share(), 50.0);
        let back = Rollout { state: State::RolledBack, ..r.clone() };
        assert_eq!(back.treatment_share(), 0.0);
        assert_eq!(Rollout::from_json(&json!({"mode": "bandit"})), None);
    }

    /// The guardrail's bound is the closed form: harm - half_width, with half_width as in
    /// Waudby-Smith et al. (eq. for the asymptotic CS with rho tuned at N*).
    #[test]
    fn guardrail_bound_is_the_closed_form() {
        let c = Moments::from_summary(1000.0, 10.0, 4.0);
        let t = Moments::from_summary(1000.0, 9.0, 4.0);
        let g = GuardrailInput { metric: "m".into(), direction: Direction::Higher, margin: 0.5, periods: vec![(c, t)] };
        let f = check_guardrail(&g, 0.05, 5000.0).unwrap();
        let se2: f64 = 4.0 / 1000.0 + 4.0 / 1000.0;
        let n = 2000.0;
        let l = -2.0 * 0.05f64.ln();
        let rho2 = (l + (l + 1.0).ln()) / 5000.0;
        let w = (se2 * n * 2.0 * (n * rho2 + 1.0) / (n * n * rho2) * ((n * rho2 + 1.0).sqrt() / 0.05).ln()).sqrt();
        assert!((f.estimate - 1.0).abs() < 1e-12);
        assert!((f.bound - (1.0 - w)).abs() < 1e-12, "{} vs {}", f.bound, 1.0 - w);
        assert_eq!(f.breached, 1.0 - w > 0.5);
        // Lower is better: the same data is an improvement, no breach.
        let g = GuardrailInput { direction: Direction::Lower, ..g };
        let f = check_guardrail(&g, 0.05, 5000.0).unwrap();
        assert!(f.estimate < 0.0 && !f.breached);
    }

    #[test]
    fn periods_are_pooled_by_inverse_variance() {
        let p1 = (Moments::from_summary(100.0, 1.0, 1.0), Moments::from_summary(100.0, 2.0, 1.0));
        let p2 = (Moments::from_summary(300.0, 5.0, 1.0), Moments::from_summary(300.0, 5.0, 1.0));
        let (d, se2, users) = stratified(&[p1, p2]).unwrap();
        // Weights 50 and 150: (1 * 50 + 0 * 150) / 200.
        assert!((d - 0.25).abs() < 1e-12 && (se2 - 1.0 / 200.0).abs() < 1e-15 && users == 800.0);
        assert_eq!(stratified(&[(Moments::constant(1.0, 1.0), Moments::constant(5.0, 1.0))]), None);
    }

    #[test]
    fn sample_ratio_ignores_periods_without_choice() {
        assert_eq!(check_sample_ratio(&[(0.0, 500.0, 1.0)], 0.05, 5000.0), None);
        let f = check_sample_ratio(&[(950.0, 50.0, 0.05), (500.0, 500.0, 0.5)], 0.05, 5000.0).unwrap();
        assert!(f.estimate.abs() < 1e-12 && !f.breached);
        let f = check_sample_ratio(&[(800.0, 200.0, 0.05)], 0.05, 5000.0).unwrap();
        assert!(f.breached && (f.estimate - 0.15).abs() < 1e-12, "{f:?}");
    }

    /// `n` draws of N(mu, 1) as moments: the mean and the centered sum of squares drawn from
    /// their distributions (chi-square by its normal approximation, n is large here).
    fn batch(rng: &mut Rng, n: f64, mu: f64) -> Moments {
        if n < 2.0 {
            return Moments::default();
        }
        let m2 = ((n - 1.0) + (2.0 * (n - 1.0)).sqrt() * rng.normal()).max(0.0);
        Moments { n, mean: mu + rng.normal() / n.sqrt(), m2 }
    }

    /// One simulated rollout: steps of 5, 25, 50 and 100 percent, a quarter of the checks
    /// each, `users_per_check` new users between checks, a guardrail whose margin is 0.05 (the
    /// values' sd is 1); returns the check (1-based) that rolled back, if any.
    fn simulate(rng: &mut Rng, harm: f64, checks: usize, users_per_check: f64) -> Option<usize> {
        let shares = [0.05, 0.25, 0.5, 1.0];
        let per_step = checks / shares.len();
        let mut periods: Vec<(Moments, Moments)> = vec![Default::default(); shares.len()];
        let mut counts = vec![(0.0, 0.0, 0.0); shares.len()];
        for k in 0..checks {
            let step = (k / per_step).min(shares.len() - 1);
            let p = shares[step];
            let sd = (users_per_check * p * (1.0 - p)).sqrt();
            let t = (users_per_check * p + sd * rng.normal()).round().clamp(0.0, users_per_check);
            let c = users_per_check - t;
            // Higher is better; the new variant is worse by `harm`.
            periods[step].0 = periods[step].0.merge(&batch(rng, c, 0.0));
            periods[step].1 = periods[step].1.merge(&batch(rng, t, -harm));
            counts[step] = (counts[step].0 + c, counts[step].1 + t, p);
            let g = GuardrailInput {
                metric: "m".into(),
                direction: Direction::Higher,
                margin: 0.05,
                periods: periods.clone(),
            };
            if check(&[g], &counts, 0.05, 5000.0).iter().any(|f| f.breached) {
                return Some(k + 1);
            }
        }
        None
    }

    /// A/A, checked after every batch of users: rolled back in at most alpha of runs
    /// (0.05 of 400 runs is 20; the binomial 99.9% upper limit under 0.05 is 33).
    #[test]
    fn harmless_change_rarely_rolled_back() {
        let mut rng = Rng(20261206);
        let runs = 400;
        let rolled_back = (0..runs).filter(|_| simulate(&mut rng, 0.0, 40, 2000.0).is_some()).count();
        eprintln!("A/A: {rolled_back} of {runs} rolled back");
        assert!(rolled_back <= 33, "{rolled_back} of {runs}");
    }

    /// A change worse by twice the margin is rolled back within 30 checks (60000 users; seen:
    /// median 18) in 95% of runs. Seen for the A/A test: 3 of 400.
    #[test]
    fn harmful_change_rolled_back() {
        let mut rng = Rng(7);
        let runs = 200;
        let mut at: Vec<usize> = (0..runs).map(|_| simulate(&mut rng, 0.1, 40, 2000.0).unwrap_or(usize::MAX)).collect();
        at.sort();
        let p95 = at[(0.95 * runs as f64).ceil() as usize - 1];
        eprintln!("harmful: 95% rolled back by check {p95}, median {}", at[runs / 2]);
        assert!(p95 <= 30, "95% of runs rolled back only by check {p95}");
    }

    #[test]
    fn moved_by_hand_only_up_from_a_ramping_step() {
        let r = Rollout { steps: vec![5.0, 25.0, 100.0], step_every: "1 hour".into(), step: 0, state: State::Ramping };
        let m = r.moved_to(10.0).unwrap();
        assert_eq!(
            (m.steps.clone(), m.step, m.state, m.treatment_share()),
            (vec![5.0, 10.0, 25.0, 100.0], 1, State::Ramping, 10.0)
        );
        let m = m.moved_to(50.0).unwrap();
        assert_eq!((m.steps.clone(), m.step), (vec![5.0, 10.0, 50.0, 100.0], 2));
        let done = m.moved_to(100.0).unwrap();
        assert_eq!((done.state, done.treatment_share()), (State::Completed, 100.0));
        assert!(m.moved_to(50.0).unwrap_err().contains("must be above the current 50"));
        assert!(m.moved_to(3.0).unwrap_err().contains("must be above"));
        assert!(m.moved_to(60.001).unwrap_err().contains("two decimals"));
        assert!(m.moved_to(f64::NAN).unwrap_err().contains("must be above"));
        assert!(done.moved_to(100.0).unwrap_err().contains("the rollout is completed"));
        let back = Rollout { state: State::RolledBack, ..m.clone() };
        assert!(back.moved_to(80.0).unwrap_err().contains("rolled back, not ramping"));
        let full = Rollout { steps: (1..=20).map(|k| k as f64 * 5.0).collect(), step: 0, ..m };
        assert!(full.moved_to(7.0).unwrap_err().contains("at most 20 steps"));
    }

    #[test]
    fn a_guardrail_constant_in_each_arm_is_still_tested() {
        // Every candidate user fails, no control user does: no spread within either arm.
        let ones = Moments { n: 500.0, mean: 1.0, m2: 0.0 };
        let zeros = Moments { n: 500.0, mean: 0.0, m2: 0.0 };
        let g = GuardrailInput {
            metric: "failed".into(),
            direction: Direction::Lower,
            margin: 0.05,
            periods: vec![(zeros, ones)],
        };
        let f = check_guardrail(&g, 0.05, crate::definition::DEFAULT_SEQUENTIAL_TUNING).unwrap();
        assert!(f.breached && f.estimate == 1.0 && f.bound > 0.05, "{f:?}");
        // Equal in both arms: nothing to test yet.
        let g = GuardrailInput { periods: vec![(zeros, zeros)], ..g };
        assert!(check_guardrail(&g, 0.05, crate::definition::DEFAULT_SEQUENTIAL_TUNING).is_none());
    }
}
