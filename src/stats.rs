//! The statistics as plain SQL functions over summary numbers, for analysts who bring their
//! own aggregates: each is a thin wrapper over `ab_core::stats`.

use ab_core::definition::Correction;
use ab_core::stats::multiple::{benjamini_hochberg, holm};
use ab_core::stats::power::sample_size;
use ab_core::stats::proportion::proportion_test;
use ab_core::stats::srm::srm_test;
use ab_core::stats::welch::{welch_test, Sample};
use pgrx::prelude::*;

use crate::errors::{core_error, invalid};

/// The elements of a one-dimensional array; a matrix is refused rather than read flat.
fn one_dimensional<T: pgrx::datum::UnboxDatum>(array: Array<'_, T>, what: &str) -> Vec<Option<T::As<'static>>>
where
    for<'a> T::As<'a>: Into<T::As<'static>>,
{
    let values: Vec<Option<T::As<'static>>> = array.iter().map(|v| v.map(Into::into)).collect();
    let dims = unsafe { pgrx::array::RawArray::from_array(array) }.map_or(1, |r| r.dims().len());
    if dims > 1 {
        invalid(format!("{what} must be a one-dimensional array, got {dims} dimensions"));
    }
    values
}

/// Welch's two-sample t-test from summary statistics (diff = b - a).
#[pg_extern(immutable, strict, parallel_safe)]
fn ab_welch_test(
    n_a: i64,
    mean_a: f64,
    var_a: f64,
    n_b: i64,
    mean_b: f64,
    var_b: f64,
    alpha: default!(f64, 0.05),
) -> TableIterator<
    'static,
    (
        name!(t_stat, Option<f64>),
        name!(df, Option<f64>),
        name!(p_value, f64),
        name!(diff, f64),
        name!(ci_lower, f64),
        name!(ci_upper, f64),
    ),
> {
    let a = Sample { n: n_a as f64, mean: mean_a, variance: var_a };
    let b = Sample { n: n_b as f64, mean: mean_b, variance: var_b };
    let r = welch_test(&a, &b, alpha).unwrap_or_else(|e| core_error(e));
    TableIterator::once((r.t, r.df, r.p_value, r.diff, r.ci_lower, r.ci_upper))
}

/// Two-proportion z-test: pooled z for the p-value, the score CI of diff = b - a (it inverts the same test).
#[pg_extern(immutable, strict, parallel_safe)]
fn ab_proportion_test(
    x_a: i64,
    n_a: i64,
    x_b: i64,
    n_b: i64,
    alpha: default!(f64, 0.05),
) -> TableIterator<
    'static,
    (name!(z_stat, Option<f64>), name!(p_value, f64), name!(diff, f64), name!(ci_lower, f64), name!(ci_upper, f64)),
> {
    let r = proportion_test(x_a as f64, n_a as f64, x_b as f64, n_b as f64, alpha).unwrap_or_else(|e| core_error(e));
    TableIterator::once((r.z, r.p_value, r.diff, r.ci_lower, r.ci_upper))
}

/// Sample ratio mismatch: chi-square goodness of fit of observed counts against weights.
#[pg_extern(immutable, strict, parallel_safe)]
fn ab_srm_test(
    observed: Array<'_, i64>,
    weights: Array<'_, f64>,
) -> TableIterator<'static, (name!(chi2, f64), name!(p_value, f64))> {
    let observed = one_dimensional(observed, "observed");
    let weights = one_dimensional(weights, "weights");
    if observed.iter().any(Option::is_none) || weights.iter().any(Option::is_none) {
        invalid("observed and weights must not contain NULL");
    }
    let observed: Vec<f64> = observed.into_iter().map(|o| o.unwrap() as f64).collect();
    let weights: Vec<f64> = weights.into_iter().flatten().collect();
    let r = srm_test(&observed, &weights).unwrap_or_else(|e| core_error(e));
    TableIterator::once((r.chi2, r.p_value))
}

/// Users per arm needed to detect an absolute difference `mde` (two-sided, equal allocation).
#[pg_extern(immutable, strict, parallel_safe)]
fn ab_sample_size(std_dev: f64, mde: f64, alpha: default!(f64, 0.05), power: default!(f64, 0.8)) -> i64 {
    sample_size(std_dev, mde, alpha, power).unwrap_or_else(|e| core_error(e)) as i64
}

/// Adjusted p-values in input order: 'holm' (Holm-Bonferroni) or 'bh' (Benjamini-Hochberg).
#[pg_extern(immutable, strict, parallel_safe)]
fn ab_adjust_p_values(p_values: Array<'_, f64>, method: default!(&str, "'holm'")) -> Vec<f64> {
    let p_values = one_dimensional(p_values, "p_values");
    let Some(method) = Correction::parse(method) else {
        invalid(format!("method \"{method}\" is not one of holm, bh"));
    };
    let p: Vec<f64> = p_values
        .into_iter()
        .map(|p| match p {
            Some(p) if (0.0..=1.0).contains(&p) => p,
            Some(p) => invalid(format!("p-values must be between 0 and 1, got {p}")),
            None => invalid("p_values must not contain NULL"),
        })
        .collect();
    match method {
        Correction::Holm => holm(&p),
        Correction::Bh => benjamini_hochberg(&p),
    }
}
