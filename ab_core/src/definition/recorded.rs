//! What a definition says about recorded results: the metric names `ab_record_result`
//! accepts, the range of a value, and the errors for names that are not recorded.

use std::borrow::Cow;

use super::short_float;
use crate::error::{Error, Result};
use crate::names::{normalize_name, printable};

/// Checks a metric name as recorded by `ab_record_result` or declared in a definition, and
/// returns it in NFC (see `names`).
pub fn check_metric_name(name: &str) -> Result<Cow<'_, str>> {
    normalize_name("metric_name", name)
}

/// The error for a result or covariate under a name an experiment with `strict_metrics` does
/// not declare.
pub fn undeclared_metric<'a>(experiment: &str, metric: &str, declared: impl Iterator<Item = &'a str> + Clone) -> Error {
    let listed: Vec<String> = declared.clone().map(|n| format!("\"{}\"", printable(n))).collect();
    Error::invalid(format!(
        "metric \"{}\" is not declared by experiment \"{}\"{}",
        printable(metric),
        printable(experiment),
        crate::names::did_you_mean(metric, declared)
    ))
    .with_hint(format!(
        "its metrics are {}; an experiment that declares metrics accepts only those (create it with \"strict_metrics\": false to accept any name)",
        listed.join(", ")
    ))
}

/// The error for a result or covariate under a ratio metric's name.
pub fn ratio_recorded(experiment: &str, metric: &str, numerator: &str, denominator: &str) -> Error {
    Error::invalid(format!(
        "metric \"{}\" of experiment \"{}\" is a ratio (\"{}\" / \"{}\"): it is computed from its numerator and denominator, not recorded",
        printable(metric),
        printable(experiment),
        printable(numerator),
        printable(denominator)
    ))
    .with_hint(format!(
        "record \"{}\" and \"{}\" for the user instead",
        printable(numerator),
        printable(denominator)
    ))
}

/// The error for a result under the name of a metric read from a source.
pub fn source_recorded(experiment: &str, metric: &str) -> Error {
    Error::invalid(format!(
        "metric \"{}\" of experiment \"{}\" is read from a metric source: it is not recorded",
        printable(metric),
        printable(experiment)
    ))
    .with_hint("the analysis reads the source's rows; ab_get_experiment shows the source")
}

/// The error for a binary metric's value other than 0 and 1 (names as stored: they passed
/// the name rules, so they print as they are).
pub fn binary_value(experiment: &str, metric: &str, value: f64) -> Error {
    Error::invalid(format!(
        "metric \"{metric}\" of experiment \"{experiment}\" is binary: metric_value must be 0 or 1, got {value}"
    ))
}

/// The error for a result or covariate under a quantile metric's name.
pub fn quantile_recorded(experiment: &str, metric: &str, of: &str) -> Error {
    Error::invalid(format!(
        "metric \"{}\" of experiment \"{}\" is a quantile of \"{}\": it is computed from that metric's values, not recorded",
        printable(metric),
        printable(experiment),
        printable(of)
    ))
    .with_hint(format!("record \"{}\" for the user instead", printable(of)))
}

/// The error for a result or covariate under a funnel or retention metric's name (`kind`:
/// "funnel" or "retention metric"; `parts`: its steps, or its metric).
pub fn composed_recorded(experiment: &str, metric: &str, kind: &str, parts: &[String]) -> Error {
    let parts: Vec<String> = parts.iter().map(|p| format!("\"{}\"", printable(p))).collect();
    Error::invalid(format!(
        "metric \"{}\" of experiment \"{}\" is a {kind}: it is computed from the times of the results of {}, not recorded",
        printable(metric),
        printable(experiment),
        parts.join(", ")
    ))
    .with_hint(format!("record {} for the user instead", parts.join(" or ")))
}

/// Largest magnitude a recorded value or covariate may have. Every whole number up to it is
/// exact in a float8, and the sums of squares of billions of such values stay finite, so no
/// recorded value can make an analysis overflow.
pub const MAX_ABS_VALUE: f64 = 1e15;

/// Whether a value keeps the rule of every value an analysis reads: a number no larger in
/// magnitude than `MAX_ABS_VALUE` (NaN and the infinities are not).
pub fn value_in_range(x: f64) -> bool {
    x.abs() <= MAX_ABS_VALUE
}

/// A float8 as PostgreSQL prints the special ones.
fn shown_value(x: f64) -> String {
    match x {
        _ if x.is_nan() => "NaN".to_string(),
        f64::INFINITY => "Infinity".to_string(),
        f64::NEG_INFINITY => "-Infinity".to_string(),
        _ => short_float(x),
    }
}

/// Checks a recorded value (`what` names the argument).
pub fn check_value(what: &str, x: f64) -> Result<()> {
    if !value_in_range(x) {
        return Err(Error::invalid(format!(
            "{what} is {}, must be a finite number between -1e15 and 1e15",
            shown_value(x)
        )));
    }
    Ok(())
}

/// The same rule for a user's value read from the application's relations: `x` is the
/// largest in magnitude (NaN first) of a source metric's per-user values (`what` "value") or
/// of its covariate's ("covariate"); `source` names where it was read. The message when `x`
/// breaks the rule, which every analysis raises alike.
pub fn source_value_problem(metric: &str, what: &str, source: &str, x: f64) -> Option<String> {
    (!value_in_range(x)).then(|| {
        format!(
            "metric \"{}\": a user's {what} read from {source} is {}, outside the range of a metric value (-1e15 to 1e15)",
            printable(metric),
            shown_value(x)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_bounded() {
        assert!(check_value("metric_value", 1e15).is_ok() && check_value("metric_value", -1e15).is_ok());
        assert_eq!(
            check_value("metric_value", 1e154).unwrap_err().message,
            "metric_value is 1e154, must be a finite number between -1e15 and 1e15"
        );
        assert!(check_value("value", f64::NAN).is_err());
    }

    /// A value read from a source keeps the rule of a recorded value, with a message naming
    /// the metric, what was read and where, and the value as PostgreSQL prints it.
    #[test]
    fn source_values_keep_the_recorded_rule() {
        for ok in [0.0, 1e15, -1e15, 1e-300] {
            assert_eq!(source_value_problem("m", "value", "source \"s\"", ok), None);
        }
        for (x, shown) in [
            (1e16, "1e16"),
            (-1.5e15, "-1.5e15"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1e200, "1e200"),
        ] {
            assert_eq!(
                source_value_problem("amount", "covariate", "relation \"rp.before\"", x).unwrap(),
                format!(
                    "metric \"amount\": a user's covariate read from relation \"rp.before\" is {shown}, \
                     outside the range of a metric value (-1e15 to 1e15)"
                )
            );
            assert!(check_value("metric_value", x).is_err());
        }
    }

    #[test]
    fn errors_for_names_that_are_not_recorded() {
        let e = undeclared_metric("Escalation threshold", "escalaterd", ["escalated", "token_usage"].into_iter());
        assert_eq!(
            e.message,
            "metric \"escalaterd\" is not declared by experiment \"Escalation threshold\" (did you mean \"escalated\"?)"
        );
        assert!(e.hint.unwrap().starts_with("its metrics are \"escalated\", \"token_usage\";"));
        let e = ratio_recorded("x", "per_call", "tokens", "calls");
        assert!(e.message.contains("is a ratio (\"tokens\" / \"calls\")"));
        assert_eq!(e.hint.as_deref(), Some("record \"tokens\" and \"calls\" for the user instead"));
        assert!(source_recorded("x", "funded").message.contains("is read from a metric source"));
        assert_eq!(quantile_recorded("x", "p90", "rt").hint.as_deref(), Some("record \"rt\" for the user instead"));
        let e = composed_recorded("x", "funded", "funnel", &["a".into(), "b".into()]);
        assert_eq!(e.message, "metric \"funded\" of experiment \"x\" is a funnel: it is computed from the times of the results of \"a\", \"b\", not recorded");
        assert_eq!(check_metric_name("cafe\u{301}").unwrap(), "caf\u{e9}");
    }
}
