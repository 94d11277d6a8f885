//! `ab_bayes`: the Bayesian read of an analysis, with a Gaussian prior on each effect (the
//! argument's, else the metric's `prior`, else flat). The statistics are `ab_core::stats::bayes`.

use ab_core::stats::bayes::{check_prior, posterior, Prior};
use pgrx::prelude::*;

use crate::catalog::{self, ExperimentRef};
use crate::errors::{invalid, required};
use crate::jsonb::RawJsonb;

type Row = (
    String,
    String,
    bool,
    String,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

fn parse_prior(prior: RawJsonb) -> Prior {
    let prior =
        prior.try_value_at_most("prior", 1 << 16).unwrap_or_else(|e| invalid(format!("prior cannot be read: {e}")));
    if !prior.is_object() {
        invalid(format!(
            "prior must be an object such as {{\"mean\": 0, \"sd\": 0.05, \"relative\": true}}, got {}",
            ab_core::targeting::json_type(&prior)
        ));
    }
    let p: Prior = serde_json::from_value(prior).unwrap_or_else(|e| {
        invalid(format!("prior must be an object such as {{\"mean\": 0, \"sd\": 0.05, \"relative\": true}}: {e}"))
    });
    check_prior(&p).unwrap_or_else(|e| invalid(format!("prior: {e}")));
    p
}

fn bayes(r: ExperimentRef<'_>, prior: Option<RawJsonb>) -> Vec<Row> {
    let given = prior.map(parse_prior);
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        let analysis = crate::analysis::run(client, &nsp, &exp);
        let mut rows = Vec::new();
        for m in &analysis.metrics {
            let prior = given.or(m.def.prior);
            let relative = prior.is_some_and(|p| p.relative);
            let effect = if relative { "relative" } else { "absolute" }.to_string();
            for a in &m.arms {
                let data = a.comparison.and_then(|c| {
                    if relative {
                        Some((c.relative_lift?, c.relative_variance?))
                    } else {
                        Some((c.diff, c.variance))
                    }
                });
                let post = data.and_then(|(estimate, var)| {
                    posterior(estimate, var, prior.map(|p| (p.mean, p.sd)), exp.alpha, m.def.direction)
                });
                rows.push((
                    m.name.clone(),
                    a.variant.clone(),
                    a.is_control,
                    effect.clone(),
                    prior.map(|p| p.mean),
                    prior.map(|p| p.sd),
                    post.map(|p| p.mean),
                    post.map(|p| p.sd),
                    post.map(|p| p.ci_lower),
                    post.map(|p| p.ci_upper),
                    post.map(|p| p.chance_to_beat_control),
                    post.map(|p| p.risk_of_shipping),
                    post.map(|p| p.risk_of_keeping_control),
                ));
            }
        }
        rows
    })
}

/// Per metric and treatment: the posterior of its effect on the metric under a Gaussian
/// prior, with a credible interval, the chance to beat the control and the expected loss of
/// shipping the treatment and of keeping the control. NULL on the control's rows.
#[pg_extern(stable, parallel_safe)]
fn ab_bayes(
    experiment: Option<&str>,
    prior: default!(Option<RawJsonb>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(metric_name, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(effect, String),
        name!(prior_mean, Option<f64>),
        name!(prior_sd, Option<f64>),
        name!(posterior_mean, Option<f64>),
        name!(posterior_sd, Option<f64>),
        name!(credible_lower, Option<f64>),
        name!(credible_upper, Option<f64>),
        name!(chance_to_beat_control, Option<f64>),
        name!(risk_of_shipping, Option<f64>),
        name!(risk_of_keeping_control, Option<f64>),
    ),
> {
    TableIterator::new(bayes(ExperimentRef::Name(required(experiment, "experiment")), prior))
}

#[pg_extern(name = "ab_bayes", stable, parallel_safe)]
fn ab_bayes_by_id(
    experiment: Option<i64>,
    prior: default!(Option<RawJsonb>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(metric_name, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(effect, String),
        name!(prior_mean, Option<f64>),
        name!(prior_sd, Option<f64>),
        name!(posterior_mean, Option<f64>),
        name!(posterior_sd, Option<f64>),
        name!(credible_lower, Option<f64>),
        name!(credible_upper, Option<f64>),
        name!(chance_to_beat_control, Option<f64>),
        name!(risk_of_shipping, Option<f64>),
        name!(risk_of_keeping_control, Option<f64>),
    ),
> {
    TableIterator::new(bayes(ExperimentRef::Id(required(experiment, "experiment")), prior))
}
