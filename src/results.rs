//! `ab_record_result`: one observation, attributed to the user's assigned variant.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::assignment::check_id;
use crate::cache;
use crate::catalog::ExperimentRef;
use crate::errors::{core_error, invalid, raise, SpiExt};

/// A float as SQL prints it (NaN, Infinity, -Infinity for the non-finite ones).
fn sql_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        x.to_string()
    }
}

fn null(what: &str) -> ! {
    raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{what} must not be NULL"), None)
}

fn record(
    r: ExperimentRef<'_>,
    metric_name: Option<&str>,
    metric_value: Option<f64>,
    user_id: Option<&str>,
    session_id: Option<&str>,
) -> bool {
    let metric_name = metric_name.unwrap_or_else(|| null("metric_name"));
    let metric_value = metric_value.unwrap_or_else(|| null("metric_value"));
    let user_id = user_id.unwrap_or_else(|| null("user_id"));
    ab_core::definition::check_metric_name(metric_name).unwrap_or_else(|e| core_error(e));
    if !metric_value.is_finite() {
        invalid(format!("metric_value must be a finite number, got {}", sql_float(metric_value)));
    }
    check_id("user_id", user_id);
    if let Some(s) = session_id {
        check_id("session_id", s);
    }
    let cache::Handle { exp, plans, .. } = cache::lookup(r);
    if !exp.running {
        return false;
    }
    if metric_value != 0.0 && metric_value != 1.0 && exp.binary_metrics.iter().any(|m| m == metric_name) {
        invalid(format!(
            "metric \"{metric_name}\" of experiment \"{}\" is binary: metric_value must be 0 or 1, got {metric_value}",
            exp.name
        ));
    }
    Spi::connect_mut(|client| {
        let args = [exp.id.into(), user_id.into(), metric_name.into(), metric_value.into(), session_id.into()];
        client.update(&plans.record_result, None, &args).or_raise().len() == 1
    })
}

/// Records a metric value for a user; true when stored against the user's variant, false
/// (storing nothing) when the experiment is not running or the user has no assignment.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_record_result(
    experiment: Option<&str>,
    metric_name: Option<&str>,
    metric_value: Option<f64>,
    user_id: Option<&str>,
    session_id: default!(Option<&str>, "NULL"),
) -> bool {
    let experiment = experiment.unwrap_or_else(|| null("experiment"));
    record(ExperimentRef::Name(experiment), metric_name, metric_value, user_id, session_id)
}

#[pg_extern(name = "ab_record_result", volatile, parallel_unsafe)]
fn ab_record_result_by_id(
    experiment: Option<i64>,
    metric_name: Option<&str>,
    metric_value: Option<f64>,
    user_id: Option<&str>,
    session_id: default!(Option<&str>, "NULL"),
) -> bool {
    let experiment = experiment.unwrap_or_else(|| null("experiment"));
    record(ExperimentRef::Id(experiment), metric_name, metric_value, user_id, session_id)
}

fn record_covariate(r: ExperimentRef<'_>, metric_name: Option<&str>, user_id: Option<&str>, value: Option<f64>) {
    let metric_name = metric_name.unwrap_or_else(|| null("metric_name"));
    let user_id = user_id.unwrap_or_else(|| null("user_id"));
    let value = value.unwrap_or_else(|| null("value"));
    ab_core::definition::check_metric_name(metric_name).unwrap_or_else(|e| core_error(e));
    check_id("user_id", user_id);
    if !value.is_finite() {
        invalid(format!("value must be a finite number, got {}", sql_float(value)));
    }
    let cache::Handle { exp, plans, .. } = cache::lookup(r);
    Spi::connect_mut(|client| {
        client
            .update(&plans.record_covariate, None, &[exp.id.into(), user_id.into(), metric_name.into(), value.into()])
            .or_raise();
    })
}

/// Records a user's pre-experiment value of a covariate for a metric (CUPED). A later call
/// for the same user and metric replaces it. Works in any status, before or after assignment.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_record_covariate(experiment: Option<&str>, metric_name: Option<&str>, user_id: Option<&str>, value: Option<f64>) {
    let experiment = experiment.unwrap_or_else(|| null("experiment"));
    record_covariate(ExperimentRef::Name(experiment), metric_name, user_id, value)
}

#[pg_extern(name = "ab_record_covariate", volatile, parallel_unsafe)]
fn ab_record_covariate_by_id(
    experiment: Option<i64>,
    metric_name: Option<&str>,
    user_id: Option<&str>,
    value: Option<f64>,
) {
    let experiment = experiment.unwrap_or_else(|| null("experiment"));
    record_covariate(ExperimentRef::Id(experiment), metric_name, user_id, value)
}
