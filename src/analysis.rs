//! `ab_analyze`, `ab_summary` and `ab_welch_test`. The per-user and per-variant aggregation
//! runs in SQL (memory does not grow with the number of results); the statistics run in
//! `ab_core`.

use std::collections::{BTreeMap, HashMap};

use ab_core::analysis::{analyze_metric, ArmInput, MetricInput, MetricResult, Settings};
use ab_core::definition::MetricDef;
use ab_core::stats::welch::{welch_test, Sample};
use ab_core::stats::Moments;
use ab_core::summary::{render, ArmCount, SummaryInput};
use ab_core::winner::{decide, Decision};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::catalog::{self, ExperimentRef, ExperimentRow, VariantRow};
use crate::errors::{core_error, SpiExt};

pub struct Analysis {
    pub variants: Vec<VariantRow>,
    pub assigned: HashMap<i64, u64>,
    pub metrics: Vec<MetricResult>,
}

impl Analysis {
    pub fn decision(&self, exp: &ExperimentRow) -> Decision {
        match self.metrics.iter().find(|m| m.name == exp.primary_metric) {
            Some(primary) => decide(primary, exp.min_sample_size, exp.alpha, None),
            None => Decision {
                winner: None,
                reason: format!("no results recorded for the primary metric {}", exp.primary_metric),
                confidence: None,
            },
        }
    }
}

fn metric_defs(exp: &ExperimentRow) -> BTreeMap<String, MetricDef> {
    let mut defs: BTreeMap<String, MetricDef> = serde_json::from_value(exp.metrics.clone()).unwrap_or_default();
    defs.entry(exp.primary_metric.clone()).or_default();
    defs
}

pub fn run(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> Analysis {
    let variants = catalog::variants(client, nsp, exp.id);
    let assigned: HashMap<i64, u64> = client
        .select(
            format!("SELECT variant_id, count(*) FROM {nsp}.ab_assignments WHERE experiment_id = $1 GROUP BY variant_id")
                .as_str(),
            None,
            &[exp.id.into()],
        )
        .or_raise()
        .map(|row| (row.get::<i64>(1).or_raise().unwrap(), row.get::<i64>(2).or_raise().unwrap() as u64))
        .collect();

    let defs = metric_defs(exp);
    let names: Vec<String> = defs.keys().cloned().collect();
    let aggs: Vec<String> = defs.values().map(|d| d.aggregation.as_str().to_string()).collect();
    // Per user first (the unit of randomization), then per variant.
    let sql = format!(
        "WITH defs AS (SELECT * FROM unnest($2::text[], $3::text[]) AS d(metric_name, aggregation)), \
         per_user AS ( \
           SELECT r.metric_name, r.variant_id, r.user_id, avg(r.metric_value) AS mean_v, \
                  sum(r.metric_value) AS sum_v, count(*)::float8 AS count_v, max(r.metric_value) AS max_v \
           FROM {nsp}.ab_results r WHERE r.experiment_id = $1 \
           GROUP BY r.metric_name, r.variant_id, r.user_id) \
         SELECT p.metric_name, p.variant_id, count(*), avg(x.v), coalesce(var_samp(x.v), 0) \
         FROM per_user p LEFT JOIN defs d ON d.metric_name = p.metric_name \
         CROSS JOIN LATERAL (SELECT CASE coalesce(d.aggregation, 'mean') WHEN 'sum' THEN p.sum_v \
              WHEN 'count' THEN p.count_v WHEN 'max' THEN p.max_v ELSE p.mean_v END) AS x(v) \
         GROUP BY p.metric_name, p.variant_id"
    );
    let mut observed: BTreeMap<String, HashMap<i64, Moments>> = BTreeMap::new();
    for row in client.select(sql.as_str(), None, &[exp.id.into(), names.into(), aggs.into()]).or_raise() {
        let metric: String = row.get(1).or_raise().unwrap();
        let variant: i64 = row.get(2).or_raise().unwrap();
        let n = row.get::<i64>(3).or_raise().unwrap() as f64;
        let mean: f64 = row.get(4).or_raise().unwrap();
        let var: f64 = row.get(5).or_raise().unwrap();
        observed.entry(metric).or_default().insert(variant, Moments::from_summary(n, mean, var));
    }

    // The primary metric first, then the declared ones, then any other recorded metric.
    let mut order = vec![exp.primary_metric.clone()];
    order.extend(defs.keys().filter(|k| **k != exp.primary_metric).cloned());
    order.extend(observed.keys().filter(|k| !defs.contains_key(*k)).cloned());

    let settings = Settings { alpha: exp.alpha, min_sample_size: exp.min_sample_size };
    let metrics = order
        .into_iter()
        .map(|name| {
            let def = defs.get(&name).copied().unwrap_or_default();
            let data = observed.get(&name);
            let arms = variants
                .iter()
                .map(|v| ArmInput {
                    variant: v.name.clone(),
                    is_control: v.is_control,
                    assigned: assigned.get(&v.id).copied().unwrap_or(0),
                    observed: data.and_then(|d| d.get(&v.id)).copied().unwrap_or_default(),
                })
                .collect();
            analyze_metric(&settings, &MetricInput { name, def, arms })
        })
        .collect();
    Analysis { variants, assigned, metrics }
}

/// Stores an analysis in ab_insights; rows of one run share the transaction time.
pub fn store(client: &mut SpiClient<'_>, nsp: &str, experiment_id: i64, analysis: &Analysis) {
    let sql = format!(
        "INSERT INTO {nsp}.ab_insights (experiment_id, computed_at, metric_name, variant, is_control, users, mean, \
         std_dev, diff, ci_lower, ci_upper, relative_lift, p_value, significant, effect_size, recommendation, confidence) \
         VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    );
    for m in &analysis.metrics {
        for a in &m.arms {
            let c = a.comparison;
            client
                .update(
                    sql.as_str(),
                    None,
                    &[
                        experiment_id.into(),
                        m.name.as_str().into(),
                        a.variant.as_str().into(),
                        a.is_control.into(),
                        (a.users as i64).into(),
                        a.mean.into(),
                        a.std_dev.into(),
                        c.map(|c| c.diff).into(),
                        c.map(|c| c.ci_lower).into(),
                        c.map(|c| c.ci_upper).into(),
                        c.and_then(|c| c.relative_lift).into(),
                        c.map(|c| c.p_value).into(),
                        c.map(|c| c.significant).into(),
                        c.and_then(|c| c.effect_size).into(),
                        a.recommendation.as_str().into(),
                        a.confidence.into(),
                    ],
                )
                .or_raise();
        }
    }
}

type AnalyzeRow = (
    String,
    String,
    bool,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<bool>,
    Option<f64>,
);

fn analyze(r: ExperimentRef<'_>) -> TableIterator<'static, AnalyzeRow> {
    let analysis = Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let analysis = run(client, &nsp, &exp);
        store(client, &nsp, exp.id, &analysis);
        analysis
    });
    let rows: Vec<AnalyzeRow> = analysis
        .metrics
        .into_iter()
        .flat_map(|m| {
            let name = m.name;
            m.arms.into_iter().map(move |a| {
                let c = a.comparison;
                (
                    name.clone(),
                    a.variant,
                    a.is_control,
                    a.users as i64,
                    a.mean,
                    a.std_dev,
                    c.map(|c| c.diff),
                    c.map(|c| c.ci_lower),
                    c.map(|c| c.ci_upper),
                    c.and_then(|c| c.relative_lift),
                    c.map(|c| c.p_value),
                    c.map(|c| c.significant),
                    c.and_then(|c| c.effect_size),
                )
            })
        })
        .collect();
    TableIterator::new(rows)
}

/// One row per metric and variant: per-user statistics and the Welch comparison with the
/// control (NULL on the control's row). Stores the rows in ab_insights.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_analyze(experiment: &str) -> TableIterator<
    'static,
    (
        name!(metric_name, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(users, i64),
        name!(mean, Option<f64>),
        name!(std_dev, Option<f64>),
        name!(diff, Option<f64>),
        name!(ci_lower, Option<f64>),
        name!(ci_upper, Option<f64>),
        name!(relative_lift, Option<f64>),
        name!(p_value, Option<f64>),
        name!(significant, Option<bool>),
        name!(effect_size, Option<f64>),
    ),
> {
    analyze(ExperimentRef::Name(experiment))
}

#[pg_extern(name = "ab_analyze", volatile, parallel_unsafe)]
fn ab_analyze_by_id(experiment: i64) -> TableIterator<
    'static,
    (
        name!(metric_name, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(users, i64),
        name!(mean, Option<f64>),
        name!(std_dev, Option<f64>),
        name!(diff, Option<f64>),
        name!(ci_lower, Option<f64>),
        name!(ci_upper, Option<f64>),
        name!(relative_lift, Option<f64>),
        name!(p_value, Option<f64>),
        name!(significant, Option<bool>),
        name!(effect_size, Option<f64>),
    ),
> {
    analyze(ExperimentRef::Id(experiment))
}

fn summary(r: ExperimentRef<'_>) -> String {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let analysis = run(client, &nsp, &exp);
        let decision = analysis.decision(&exp);
        let arms: Vec<ArmCount> = analysis
            .variants
            .iter()
            .map(|v| ArmCount {
                variant: v.name.clone(),
                is_control: v.is_control,
                traffic_allocation: v.traffic_allocation,
                assigned: analysis.assigned.get(&v.id).copied().unwrap_or(0),
            })
            .collect();
        let period = match (&exp.started_at, &exp.stopped_at) {
            (Some(s), Some(e)) => format!(" (ran from {s} to {e})"),
            (Some(s), None) => format!(" since {s}"),
            _ => String::new(),
        };
        render(&SummaryInput {
            name: &exp.name,
            experiment_type: &exp.experiment_type,
            status: &exp.status,
            period: &period,
            primary_metric: &exp.primary_metric,
            alpha: exp.alpha,
            min_sample_size: exp.min_sample_size,
            declared_winner: exp.winner.as_deref(),
            arms: &arms,
            metrics: &analysis.metrics,
            decision: &decision,
        })
    })
}

/// The report an analyst reads: users per variant, each metric's means with CIs, lift,
/// p-values, sample-size status and the recommendation, in plain words.
#[pg_extern(stable, parallel_safe)]
fn ab_summary(experiment: &str) -> String {
    summary(ExperimentRef::Name(experiment))
}

#[pg_extern(name = "ab_summary", stable, parallel_safe)]
fn ab_summary_by_id(experiment: i64) -> String {
    summary(ExperimentRef::Id(experiment))
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

