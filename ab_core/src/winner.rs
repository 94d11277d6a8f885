//! The winner rule: a treatment wins only when every variant reached the minimum sample
//! size, the assignment is sound (no sample ratio mismatch), the primary metric's
//! Holm-adjusted p-value is below alpha with the effect in the metric's good direction, and
//! the treatment passed the non-inferiority test of every guardrail (every other metric with
//! a `margin`). Otherwise there is no winner, and the reason says why.

use crate::analysis::MetricResult;

/// Below this SRM p-value the assignment is considered broken.
pub const SRM_THRESHOLD: f64 = 0.001;

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub winner: Option<String>,
    pub reason: String,
    pub confidence: Option<f64>,
}

impl Decision {
    fn none(reason: String) -> Decision {
        Decision { winner: None, reason, confidence: None }
    }
}

pub fn fmt_p(p: f64) -> String {
    if p == 0.0 {
        // Below the smallest float8: the tail underflowed.
        "<1e-300".to_string()
    } else if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// "= 0.0123", or "< 1e-300" where the p-value underflowed to 0.
pub fn p_is(p: f64) -> String {
    if p == 0.0 {
        "< 1e-300".to_string()
    } else {
        format!("= {}", fmt_p(p))
    }
}

/// Why `variant` has not passed a guardrail, or None when it passed them all.
fn guardrail_failure(variant: &str, guardrails: &[&MetricResult]) -> Option<String> {
    guardrails.iter().find_map(|g| {
        let arm = g.arms.iter().find(|a| a.variant == variant)?;
        let worse = match g.def.direction {
            crate::definition::Direction::Higher => "lower",
            crate::definition::Direction::Lower => "higher",
        };
        let margin = g.def.margin.unwrap_or(0.0);
        match arm.comparison.and_then(|c| c.non_inferiority) {
            Some(ni) if ni.passed => None,
            Some(ni) => Some(format!(
                "{variant} has not shown that {} is no more than {margin} {worse} than the control's (non-inferiority p {}, adjusted)",
                g.name,
                p_is(ni.p_adjusted)
            )),
            None => Some(format!("{variant} cannot be compared with the control on the guardrail {}", g.name)),
        }
    })
}

pub fn decide(
    primary: &MetricResult,
    min_sample_size: i64,
    alpha: f64,
    srm_p: Option<f64>,
    guardrails: &[&MetricResult],
) -> Decision {
    if let Some(p) = srm_p {
        if p < SRM_THRESHOLD {
            return Decision::none(format!(
                "sample ratio mismatch: the users per variant do not match the traffic allocation (SRM p {}), so the assignment is broken and no result can be trusted",
                p_is(p)
            ));
        }
    }
    if primary.control().is_none() {
        return Decision::none("the experiment has no control variant".into());
    }
    if let Some(why) = primary.arms.iter().find_map(|a| a.no_estimate.clone()) {
        return Decision::none(why);
    }
    let short: Vec<String> = primary
        .arms
        .iter()
        .filter(|a| (a.users as i64) < min_sample_size)
        .map(|a| format!("{} has {}", a.variant, a.users))
        .collect();
    if !short.is_empty() {
        return Decision::none(format!(
            "too few users: {} of the {} users required per variant on {}",
            short.join(", "),
            min_sample_size,
            primary.name
        ));
    }
    let direction = primary.def.direction;
    let tested: Vec<_> = primary.arms.iter().filter_map(|a| a.comparison.map(|c| (a, c))).collect();
    if tested.is_empty() {
        return Decision::none(format!("no treatment could be compared with the control on {}", primary.name));
    }
    let order = |(_, a): &&&(_, crate::analysis::Comparison), (_, b): &&&(_, crate::analysis::Comparison)| {
        a.diff.abs().total_cmp(&b.diff.abs()).then(b.p_adjusted.total_cmp(&a.p_adjusted))
    };
    let better: Vec<_> =
        tested.iter().filter(|(_, c)| c.p_adjusted < alpha && direction.is_improvement(c.diff)).collect();
    let best = better.iter().filter(|(a, _)| guardrail_failure(&a.variant, guardrails).is_none()).max_by(order);
    if best.is_none() {
        // The reason names the treatment that would have won.
        if let Some(why) = better.iter().max_by(order).and_then(|(a, _)| guardrail_failure(&a.variant, guardrails)) {
            return Decision::none(format!(
                "guardrail not passed: {why}; no treatment both beats the control on {} and passes every guardrail",
                primary.name
            ));
        }
    }
    if let Some((arm, c)) = best {
        return Decision {
            winner: Some(arm.variant.clone()),
            reason: format!(
                "{} beats the control on {} ({} is better): difference {:+.4} (CI {:+.4} to {:+.4}), p {} (alpha {})",
                arm.variant,
                primary.name,
                direction.as_str(),
                c.diff,
                c.ci_lower,
                c.ci_upper,
                p_is(c.p_adjusted),
                alpha
            ),
            confidence: Some(1.0 - c.p_adjusted),
        };
    }
    if let Some((arm, c)) = tested.iter().find(|(_, c)| c.p_adjusted < alpha) {
        return Decision::none(format!(
            "no treatment beats the control: {} is significantly worse on {} (p {}); keep the control",
            arm.variant,
            primary.name,
            p_is(c.p_adjusted)
        ));
    }
    let min_p = tested.iter().map(|(_, c)| c.p_adjusted).fold(f64::INFINITY, f64::min);
    Decision::none(format!(
        "not significant: the smallest p-value on {} is {} (alpha {}); the data cannot tell the variants apart",
        primary.name,
        fmt_p(min_p),
        alpha
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{ArmResult, Comparison};
    use crate::definition::{Direction, MetricDef};

    fn arm(name: &str, users: u64, cmp: Option<(f64, f64)>) -> ArmResult {
        ArmResult {
            mean_std_error: None,
            variant: name.into(),
            is_control: cmp.is_none(),
            users,
            mean: Some(1.0),
            std_dev: Some(1.0),
            comparison: cmp.map(|(diff, p)| Comparison {
                test: "welch",
                chance_to_beat_control: 0.5,
                expected_loss: 0.0,
                users_needed: None,
                cuped: None,
                diff,
                ci_lower: diff - 0.1,
                ci_upper: diff + 0.1,
                relative_lift: None,
                relative_ci: None,
                relative_p_value: None,
                non_inferiority: None,
                variance: 0.0025,
                relative_variance: None,
                p_value: p,
                p_adjusted: p,
                significant: p < 0.05,
                effect_size: None,
            }),
            recommendation: String::new(),
            confidence: None,
            no_estimate: None,
        }
    }

    fn metric(direction: Direction, arms: Vec<ArmResult>) -> MetricResult {
        MetricResult { cap: None, name: "m".into(), def: MetricDef { direction, ..Default::default() }, arms }
    }

    #[test]
    fn winner_needs_everything() {
        let m = metric(Direction::Higher, vec![arm("c", 200, None), arm("t", 200, Some((0.5, 0.001)))]);
        let d = decide(&m, 100, 0.05, Some(0.5), &[]);
        assert_eq!(d.winner.as_deref(), Some("t"));
        assert!((d.confidence.unwrap() - 0.999).abs() < 1e-12);

        assert!(decide(&m, 300, 0.05, None, &[]).reason.starts_with("too few users: c has 200, t has 200"));
        assert!(decide(&m, 100, 0.05, Some(0.0001), &[]).reason.starts_with("sample ratio mismatch"));
        assert_eq!(decide(&m, 100, 0.0001, None, &[]).winner, None);

        let lower = metric(Direction::Lower, m.arms.clone());
        let d = decide(&lower, 100, 0.05, None, &[]);
        assert_eq!(d.winner, None);
        assert!(d.reason.contains("significantly worse"), "{}", d.reason);

        let ns = metric(Direction::Higher, vec![arm("c", 200, None), arm("t", 200, Some((0.5, 0.2)))]);
        assert!(decide(&ns, 100, 0.05, None, &[]).reason.starts_with("not significant"));
    }

    #[test]
    fn largest_good_effect_wins() {
        let m = metric(
            Direction::Higher,
            vec![
                arm("c", 200, None),
                arm("a", 200, Some((0.2, 0.001))),
                arm("b", 200, Some((0.4, 0.01))),
                arm("x", 200, Some((-0.9, 0.0))),
            ],
        );
        assert_eq!(decide(&m, 100, 0.05, None, &[]).winner.as_deref(), Some("b"));
    }

    /// A guardrail: escalation_rate with a margin of 0.01, lower is better; each arm's
    /// non-inferiority p-value as given.
    fn guardrail(ni: &[(&str, Option<f64>)]) -> MetricResult {
        let arms = ni
            .iter()
            .map(|&(name, p)| {
                let mut a = arm(name, 500, p.map(|_| (0.0, 0.5)));
                if let (Some(c), Some(p)) = (a.comparison.as_mut(), p) {
                    c.non_inferiority = Some(crate::analysis::NonInferiority {
                        margin: 0.01,
                        p_value: p,
                        p_adjusted: p,
                        passed: p < 0.05,
                    });
                }
                a
            })
            .collect();
        MetricResult {
            cap: None,
            name: "escalation_rate".into(),
            def: MetricDef { direction: Direction::Lower, margin: Some(0.01), ..Default::default() },
            arms,
        }
    }

    #[test]
    fn guardrails_must_pass() {
        // b beats c on the primary metric more than a does.
        let m = metric(
            Direction::Higher,
            vec![arm("c", 500, None), arm("a", 500, Some((0.1, 0.001))), arm("b", 500, Some((0.2, 0.001)))],
        );
        let both = guardrail(&[("c", None), ("a", Some(0.01)), ("b", Some(0.01))]);
        assert_eq!(decide(&m, 100, 0.05, None, &[&both]).winner.as_deref(), Some("b"));
        // b fails its guardrail: a, which passes, wins.
        let b_fails = guardrail(&[("c", None), ("a", Some(0.01)), ("b", Some(0.2))]);
        assert_eq!(decide(&m, 100, 0.05, None, &[&b_fails]).winner.as_deref(), Some("a"));
        // Neither passes: no winner, and the reason names the guardrail.
        let none = guardrail(&[("c", None), ("a", Some(0.3)), ("b", Some(0.2))]);
        let d = decide(&m, 100, 0.05, None, &[&none]);
        assert_eq!(d.winner, None);
        assert!(
            d.reason.starts_with("guardrail not passed: b has not shown that escalation_rate is no more than 0.01 higher than the control's (non-inferiority p = 0.2000, adjusted)"),
            "{}",
            d.reason
        );
        // A guardrail the treatment cannot be compared on is not passed.
        let missing = guardrail(&[("c", None), ("a", None), ("b", None)]);
        let d = decide(&m, 100, 0.05, None, &[&missing]);
        assert!(
            d.reason.contains("b cannot be compared with the control on the guardrail escalation_rate"),
            "{}",
            d.reason
        );
    }
}
