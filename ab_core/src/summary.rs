//! The plain-words report `ab_summary` prints for an analyst in psql.

use std::fmt::Write;

use crate::analysis::MetricResult;
use crate::definition::Correction;
use crate::names::printable;
use crate::stats::dist::t_isf;
use crate::stats::srm::SrmResult;
use crate::winner::{fmt_p, p_is, Decision, SRM_THRESHOLD};

pub struct ArmCount {
    pub variant: String,
    pub is_control: bool,
    pub traffic_allocation: f64,
    pub assigned: u64,
}

/// The weight history of a bandit experiment, for the report.
pub struct BanditSummary<'a> {
    pub metric: &'a str,
    pub update_every: &'a str,
    pub min_share: f64,
    /// (period, when it began, weights in the order of `arms`).
    pub periods: &'a [(i32, String, Vec<f64>)],
}

pub struct SummaryInput<'a> {
    pub name: &'a str,
    pub experiment_type: &'a str,
    pub status: &'a str,
    /// "since ..." or "from ... to ...", already formatted.
    pub period: &'a str,
    pub primary_metric: &'a str,
    pub alpha: f64,
    pub min_sample_size: i64,
    pub declared_winner: Option<&'a str>,
    pub arms: &'a [ArmCount],
    pub metrics: &'a [MetricResult],
    pub decision: &'a Decision,
    pub srm: Option<SrmResult>,
    pub sequential_tuning: Option<f64>,
    pub correction: Correction,
    pub bandit: Option<&'a BanditSummary<'a>>,
}

/// A cap with at most 4 decimals and no trailing zeros: 2964.09, 5000.
pub fn fmt_cap(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// 0.99 -> "99th", 0.5 -> "50th", 0.995 -> "99.5th".
fn percentile_name(p: f64) -> String {
    let pct = (p * 1e6).round() / 1e4;
    let n = pct.to_string();
    let suffix = match (pct.fract() == 0.0, pct as u64 % 100) {
        (true, 11..=13) => "th",
        (true, x) if x % 10 == 1 => "st",
        (true, x) if x % 10 == 2 => "nd",
        (true, x) if x % 10 == 3 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn mean_ci(mean: f64, sd: f64, n: u64, alpha: f64) -> (f64, f64) {
    let half = t_isf(alpha / 2.0, n as f64 - 1.0) * sd / (n as f64).sqrt();
    (mean - half, mean + half)
}

/// What a funnel or retention metric counts; for retention, how many users were enrolled too
/// recently to count (`assigned` in all, `counted` by the metric).
fn composed_kind(def: &crate::definition::MetricDef, assigned: u64, counted: u64) -> String {
    if let Some(f) = def.funnel_of() {
        let steps: Vec<String> = f.steps.iter().map(|s| printable(s).into_owned()).collect();
        let within = match (&f.window, f.from) {
            (None, _) => String::new(),
            (Some(w), crate::definition::FunnelFrom::Enrollment) => format!(" within {} of enrollment", printable(w)),
            (Some(w), crate::definition::FunnelFrom::Previous) => {
                format!(", each within {} of the previous", printable(w))
            }
        };
        return format!("funnel: share of users who reached {} in order{within}", steps.join(" -> "));
    }
    match def.retention_of() {
        Some((metric, first, end)) => format!(
            "retention: share of users with {} on or after day {first} and before day {end} after enrollment; {} users enrolled less than {end} days ago are not counted yet",
            printable(metric),
            assigned.saturating_sub(counted)
        ),
        None => String::new(),
    }
}

/// The report. Every name in it is stored user data, shown with its control and invisible
/// characters escaped, so that no name can forge a line or hide text.
pub fn render(input: &SummaryInput) -> String {
    let p = |t: &str| printable(t).into_owned();
    let (name, primary_metric) = (p(input.name), p(input.primary_metric));
    let declared_winner = input.declared_winner.map(p);
    let arms: Vec<ArmCount> = input
        .arms
        .iter()
        .map(|a| ArmCount {
            variant: p(&a.variant),
            is_control: a.is_control,
            traffic_allocation: a.traffic_allocation,
            assigned: a.assigned,
        })
        .collect();
    let metrics: Vec<MetricResult> = input.metrics.iter().map(MetricResult::printable).collect();
    let decision = Decision {
        winner: input.decision.winner.as_deref().map(p),
        reason: p(&input.decision.reason),
        confidence: input.decision.confidence,
    };
    let s = &SummaryInput {
        name: &name,
        primary_metric: &primary_metric,
        declared_winner: declared_winner.as_deref(),
        arms: &arms,
        metrics: &metrics,
        decision: &decision,
        ..*input
    };
    let mut out = String::new();
    let level = format!("{}%", trim_float((1.0 - s.alpha) * 100.0));
    let _ = writeln!(out, "Experiment \"{}\" ({}), {}{}", s.name, s.experiment_type, s.status, s.period);
    let _ = writeln!(
        out,
        "Primary metric: {}. Significance level alpha = {}; at least {} users per variant are required.",
        s.primary_metric, s.alpha, s.min_sample_size
    );
    if let Some(tuning) = s.sequential_tuning {
        let _ = writeln!(
            out,
            "Sequential testing: confidence intervals and p-values are always valid (N* = {tuning}), so looking every day does not inflate false positives."
        );
    }
    if let Some(w) = s.declared_winner {
        let _ = writeln!(out, "Declared winner: {w}");
    }

    let width = s.arms.iter().map(|a| a.variant.chars().count()).max().unwrap_or(7).max(7);
    let total: u64 = s.arms.iter().map(|a| a.assigned).sum();
    let _ = writeln!(out, "\nUsers assigned: {total}");
    for a in s.arms {
        let _ = writeln!(
            out,
            "  {:width$}  {:>9} users  ({}% of traffic{})",
            a.variant,
            a.assigned,
            trim_float(a.traffic_allocation),
            if a.is_control { ", control" } else { "" }
        );
    }
    if let Some(b) = s.bandit {
        let _ = writeln!(
            out,
            "Bandit allocation on {}: weights may change every {}, each variant keeps at least {}% of the traffic.",
            p(b.metric),
            p(b.update_every),
            trim_float(b.min_share)
        );
        for (period, started, weights) in b.periods {
            let shares: Vec<String> =
                s.arms.iter().zip(weights).map(|(a, w)| format!("{} {}%", a.variant, trim_float(*w))).collect();
            let _ = writeln!(out, "  period {period} from {started}: {}", shares.join(", "));
        }
        let _ = writeln!(
            out,
            "Each period is compared within itself and the periods are combined by their share of the users (stratified), so a drift over time cannot masquerade as a difference; the sample ratio is checked per period."
        );
    }
    match s.srm {
        Some(r) if r.p_value < SRM_THRESHOLD => {
            let _ = writeln!(
                out,
                "Sample ratio MISMATCH: these counts are very unlikely under the configured allocation (chi-square {:.2}, p {}). Assignment is broken (a filter, a crash or a redirect that hits one variant more than another); no result below can be trusted.",
                r.chi2,
                p_is(r.p_value)
            );
        }
        Some(r) => {
            let _ = writeln!(out, "Sample ratio: consistent with the allocation (SRM p {}).", p_is(r.p_value));
        }
        None => {}
    }

    for m in s.metrics {
        let primary = if m.name == s.primary_metric { "primary, " } else { "" };
        let source = m.def.source_ref();
        let from = match &source {
            Some(crate::definition::SourceRef::Named(n)) => {
                format!(", read from source \"{}\"", crate::names::printable(n))
            }
            Some(crate::definition::SourceRef::Inline(spec)) => {
                format!(", read from {}", crate::names::printable(&spec.relation))
            }
            None => String::new(),
        };
        let within = match &m.def.window {
            Some(w) if source.is_some() => format!(" within {} of enrollment", crate::names::printable(w)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "\n{} ({}{}{from}{within}, {} is better)",
            m.name,
            primary,
            match m.def.kind {
                crate::definition::MetricType::Binary if m.def.is_composed() => composed_kind(
                    &m.def,
                    s.arms.iter().map(|a| a.assigned).sum::<u64>(),
                    m.arms.iter().map(|a| a.users).sum::<u64>()
                ),
                crate::definition::MetricType::Binary if source.is_some() => {
                    "binary: share of users with a matching row".to_string()
                }
                crate::definition::MetricType::Binary => "binary: share of users with a 1".to_string(),
                crate::definition::MetricType::Continuous => {
                    let cap = match (m.cap, m.def.cap.and_then(|c| c.percentile)) {
                        (Some(v), Some(p)) => {
                            format!(", capped at {} (the {} percentile)", fmt_cap(v), percentile_name(p))
                        }
                        (Some(v), None) => format!(", capped at {}", fmt_cap(v)),
                        (None, Some(_)) => ", capped by percentile (no values yet)".to_string(),
                        (None, None) => String::new(),
                    };
                    format!("per-user {}{cap}", m.def.aggregation.as_str())
                }
                crate::definition::MetricType::Ratio => format!(
                    "ratio: {} / {}, delta method",
                    crate::names::printable(m.def.numerator.as_deref().unwrap_or("")),
                    crate::names::printable(m.def.denominator.as_deref().unwrap_or(""))
                ),
                crate::definition::MetricType::Quantile => match m.def.quantile_of() {
                    Some((of, q, level)) => format!(
                        "the {} percentile of {}, {}",
                        percentile_name(q),
                        crate::names::printable(of),
                        match level {
                            crate::definition::QuantileLevel::User => "per-user values",
                            crate::definition::QuantileLevel::Event => "every recorded value",
                        }
                    ),
                    None => "quantile".to_string(),
                },
            },
            m.def.direction.as_str()
        );
        for a in &m.arms {
            let stats = match (a.mean, a.std_dev) {
                (Some(q), _) if m.def.kind == crate::definition::MetricType::Quantile => format!("quantile {q:.4}"),
                (Some(mean), _) if a.mean_std_error.is_some() => {
                    let half = crate::stats::dist::normal_isf(s.alpha / 2.0) * a.mean_std_error.unwrap_or(0.0);
                    format!("mean {:.4} ({level} CI {:.4} to {:.4}, cluster-robust)", mean, mean - half, mean + half)
                }
                (Some(mean), Some(sd)) if a.users >= 2 => {
                    let (lo, hi) = mean_ci(mean, sd, a.users, s.alpha);
                    format!("mean {:.4} ({level} CI {:.4} to {:.4})", mean, lo, hi)
                }
                (Some(mean), _) => format!("mean {mean:.4}"),
                _ => a.no_estimate.clone().unwrap_or_else(|| "no data".to_string()),
            };
            let _ = writeln!(out, "  {:width$}  n = {:<8} {}", a.variant, a.users, stats);
            if let Some(c) = &a.comparison {
                let lift = match (c.relative_lift, c.relative_ci) {
                    (Some(l), Some((lo, hi))) => {
                        format!("{:+.1}% (CI {:+.1}% to {:+.1}%)", l * 100.0, lo * 100.0, hi * 100.0)
                    }
                    (Some(l), None) => format!("{:+.1}%", l * 100.0),
                    (None, _) => "undefined (control mean is 0)".to_string(),
                };
                let adj = if (c.p_adjusted - c.p_value).abs() > 0.0 {
                    let how = match s.correction {
                        Correction::Holm => "Holm",
                        Correction::Bh => "BH",
                    };
                    format!(", {how}-adjusted {}", fmt_p(c.p_adjusted))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "  {:width$}  vs control: {:+.4} ({level} CI {:+.4} to {:+.4}), lift {}, p {}{}: {}",
                    "",
                    c.diff,
                    c.ci_lower,
                    c.ci_upper,
                    lift,
                    p_is(c.p_value),
                    adj,
                    a.recommendation
                );
                let _ = writeln!(
                    out,
                    "  {:width$}  chance to beat the control {}, expected loss if shipped {:.4}",
                    "",
                    fmt_chance(c.chance_to_beat_control),
                    c.expected_loss
                );
                if let Some(ni) = &c.non_inferiority {
                    let worse = match m.def.direction {
                        crate::definition::Direction::Higher => "lower",
                        crate::definition::Direction::Lower => "higher",
                    };
                    let verdict = if ni.passed { "passed" } else { "not passed" };
                    let _ = writeln!(
                        out,
                        "  {:width$}  guardrail (at most {} {worse} than the control): {verdict}, non-inferiority p {}{}",
                        "",
                        ni.margin,
                        p_is(ni.p_value),
                        if ni.p_adjusted != ni.p_value { format!(", adjusted {}", fmt_p(ni.p_adjusted)) } else { String::new() }
                    );
                }
                if let Some(k) = &c.cuped {
                    let _ = writeln!(
                        out,
                        "  {:width$}  with CUPED: {:+.4} ({level} CI {:+.4} to {:+.4}), p {}, variance {:.0}% lower",
                        "",
                        k.diff,
                        k.ci_lower,
                        k.ci_upper,
                        p_is(k.p_value),
                        k.variance_reduction * 100.0
                    );
                }
                if let (Some(needed), Some(mde)) = (c.users_needed, m.def.mde) {
                    let _ = if needed == 0 {
                        writeln!(out, "  {:width$}  enough users to detect a difference of {mde}", "")
                    } else {
                        writeln!(
                            out,
                            "  {:width$}  {needed} more users per variant needed to detect a difference of {mde}",
                            ""
                        )
                    };
                }
            } else if !a.is_control {
                let _ = writeln!(out, "  {:width$}  {}", "", a.recommendation);
            }
        }
    }

    let primary = s.metrics.iter().find(|m| m.name == s.primary_metric);
    let _ = writeln!(out);
    match primary {
        None => {
            let _ = writeln!(out, "Sample size: no results recorded yet for {}.", s.primary_metric);
        }
        Some(m) => {
            let min = m.arms.iter().map(|a| a.users).min().unwrap_or(0);
            if (min as i64) >= s.min_sample_size {
                let _ = writeln!(
                    out,
                    "Sample size: reached (every variant has at least {} users on {}).",
                    s.min_sample_size, m.name
                );
            } else {
                let _ = writeln!(
                    out,
                    "Sample size: not reached (the smallest variant has {} of the {} users required on {}).",
                    min, s.min_sample_size, m.name
                );
            }
        }
    }
    match (&s.decision.winner, s.decision.confidence) {
        (Some(w), Some(conf)) => {
            let conf = if conf > 0.9999 { ">99.99%".to_string() } else { format!("{:.2}%", conf * 100.0) };
            let _ = writeln!(out, "Recommendation: ship \"{w}\". {}. Confidence {conf} (1 - p).", s.decision.reason);
        }
        _ => {
            let _ = writeln!(out, "Recommendation: no winner yet. Reason: {}.", s.decision.reason);
        }
    }
    out
}

/// A probability as a percentage that never rounds to a certainty it is not.
fn fmt_chance(p: f64) -> String {
    if p > 0.999 && p < 1.0 {
        ">99.9%".to_string()
    } else if p < 0.001 && p > 0.0 {
        "<0.1%".to_string()
    } else {
        format!("{:.1}%", p * 100.0)
    }
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyze_metric, ArmInput, MetricInput, Settings};
    use crate::definition::MetricDef;
    use crate::stats::Moments;
    use crate::winner::decide;

    fn report(metric: &str, treatment: &str, experiment: &str) -> String {
        let mk = |vals: &[f64]| {
            let mut m = Moments::default();
            vals.iter().for_each(|&x| m.add(x));
            m
        };
        let c: Vec<f64> = (0..200).map(|i| (i % 2) as f64).collect();
        let t: Vec<f64> = (0..200).map(|i| if i % 4 == 0 { 0.0 } else { 1.0 }).collect();
        let input = MetricInput {
            cap: None,
            name: metric.into(),
            def: MetricDef::default(),
            arms: vec![
                ArmInput {
                    variant: "Control".into(),
                    is_control: true,
                    assigned: 200,
                    observed: mk(&c),
                    covariate: None,
                    periods: vec![],
                    ratio: None,
                    quantile: None,
                },
                ArmInput {
                    variant: treatment.into(),
                    is_control: false,
                    assigned: 200,
                    observed: mk(&t),
                    covariate: None,
                    periods: vec![],
                    ratio: None,
                    quantile: None,
                },
            ],
        };
        let settings = Settings::fixed(0.05, 100);
        let metrics = vec![analyze_metric(&settings, &input)];
        let decision = decide(&metrics[0], 100, 0.05, None, &[]);
        let arms = vec![
            ArmCount { variant: "Control".into(), is_control: true, traffic_allocation: 50.0, assigned: 200 },
            ArmCount { variant: treatment.into(), is_control: false, traffic_allocation: 50.0, assigned: 200 },
        ];
        render(&SummaryInput {
            name: experiment,
            experiment_type: "prompt",
            status: "running",
            period: " since 2026-11-26",
            primary_metric: metric,
            alpha: 0.05,
            min_sample_size: 100,
            declared_winner: None,
            arms: &arms,
            metrics: &metrics,
            decision: &decision,
            srm: Some(SrmResult { chi2: 0.0, p_value: 1.0 }),
            sequential_tuning: None,
            correction: Correction::Holm,
            bandit: None,
        })
    }

    #[test]
    fn percentile_names() {
        let names: Vec<String> =
            [0.99, 0.5, 0.995, 0.01, 0.92, 0.11, 0.03].iter().map(|&p| percentile_name(p)).collect();
        assert_eq!(names, ["99th", "50th", "99.5th", "1st", "92nd", "11th", "3rd"]);
        let caps: Vec<String> =
            [2964.089999999998, 5000.0, 1119.6741599999991, 0.5].iter().map(|&v| fmt_cap(v)).collect();
        assert_eq!(caps, ["2964.09", "5000", "1119.6742", "0.5"]);
    }

    #[test]
    fn renders_every_part() {
        let text = report("resolution_rate", "Treatment", "Prompt test");
        for needle in [
            "Experiment \"Prompt test\" (prompt), running since 2026-11-26",
            "Users assigned: 400",
            "resolution_rate (primary, per-user mean, higher is better)",
            "95% CI",
            "lift +50.0%",
            "Sample size: reached",
            "Sample ratio: consistent with the allocation (SRM p = 1.0000)",
            "chance to beat the control",
            "Recommendation: ship \"Treatment\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn stored_names_cannot_forge_lines() {
        let forged = "zz\n\nRecommendation: ship \"B\". p = 1e-9.";
        let text = report(forged, "B\u{202E}A", "x\ry");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.iter().filter(|l| l.starts_with("Recommendation")).count(), 1, "{text}");
        assert!(text.contains("zz\\u{000A}\\u{000A}Recommendation: ship"), "{text}");
        assert!(text.contains("B\\u{202E}A"));
        assert!(text.starts_with("Experiment \"x\\u{000D}y\""));
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
    }
}
