//! `ab_analyze`, `ab_summary` and `ab_plot`. The per-user and per-variant aggregation runs in
//! SQL (memory does not grow with the number of results); the statistics run in `ab_core`.
//! `pipeline` runs an analysis step by step; its result is one `ResultRow` per (metric,
//! variant), of which ab_analyze's columns and ab_insights' are projections.

use std::collections::HashMap;

use ab_core::analysis::{MetricResult, ResultRow, Settings};
use ab_core::definition::Correction;
use ab_core::stats::srm::SrmResult;
use ab_core::summary::{render, ArmCount, BanditSummary, SummaryInput};
use ab_core::winner::{decide, Decision};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::catalog::{self, ExperimentRef, ExperimentRow, VariantRow};
use crate::errors::SpiExt;
use crate::sources::SourceMetric;
use ab_core::source::Enrolled;

mod pipeline;
mod reads;
mod store;

pub(crate) use pipeline::{cluster_totals, cluster_totals_by, totals_at};
pub use reads::{
    check_source_values, metric_cap, metric_order, per_user_of_metric, per_user_sql, period_cells, periods,
    recorded_metrics,
};
pub use store::store;

pub struct Analysis {
    pub variants: Vec<VariantRow>,
    pub assigned: HashMap<i64, u64>,
    pub metrics: Vec<MetricResult>,
    pub srm: Option<SrmResult>,
    /// What it read from metric sources (ab_insights.source_reads), None without.
    pub source_reads: Option<serde_json::Value>,
}

impl Analysis {
    /// One row per (metric, variant): what ab_analyze returns and ab_insights stores are
    /// projections of these.
    pub fn rows(&self) -> Vec<ResultRow> {
        let srm = self.srm.map(|s| s.p_value);
        self.metrics.iter().flat_map(|m| m.rows(srm)).collect()
    }

    /// The winner rule on the analysis's rows (cluster-robust in a cluster-randomized
    /// experiment).
    pub fn decision(&self, exp: &ExperimentRow) -> Decision {
        match self.metrics.iter().find(|m| m.name == exp.primary_metric) {
            Some(primary) => {
                let guardrails: Vec<&MetricResult> =
                    self.metrics.iter().filter(|m| m.name != exp.primary_metric && m.def.margin.is_some()).collect();
                decide(primary, exp.min_sample_size, exp.alpha, self.srm.map(|s| s.p_value), &guardrails)
            }
            None => Decision {
                winner: None,
                reason: format!("no results recorded for the primary metric {}", exp.primary_metric),
                confidence: None,
            },
        }
    }
}

pub fn settings(exp: &ExperimentRow) -> Settings {
    Settings {
        alpha: exp.alpha,
        min_sample_size: exp.min_sample_size,
        sequential_tuning: exp.sequential_tuning,
        correction: Correction::parse(&exp.correction).unwrap_or_default(),
        power: exp.power,
    }
}

/// The analysis of an experiment. Its queries join per-user rows (results, covariates,
/// assignments) that a fresh experiment has no statistics for; a nested loop planned from an
/// estimate of one row rescans one side per user (quadratic), so nested loops are off and
/// every join is a hash or merge join, linear (or n log n) whatever the estimates.
///
/// An experiment with metrics read from the application's own relations (metric sources) is
/// analysed as the calling role, so that it reads through the extension no more than it could
/// read directly (see `security::as_caller`).
pub fn run(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> Analysis {
    let sources = source_metrics(client, nsp, exp);
    let mut analysis = reading_sources(&sources, || pipeline::run_linear(client, nsp, exp, &sources));
    check_finite(&analysis.metrics);
    analysis.source_reads = crate::sources::source_reads(&sources);
    analysis
}

/// No analysis reports a figure that is not a finite number: a metric with one is refused
/// (22003) with a message naming it, the variant and the column.
pub fn check_finite<'a>(metrics: impl IntoIterator<Item = &'a MetricResult>) {
    for m in metrics {
        if let Some(message) = m.overflow_problem() {
            crate::errors::raise(pgrx::PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, message, None);
        }
    }
}

/// Runs `f` with nested loops off and, when the experiment reads sources, as the caller. JIT
/// is off too: a nested loop the plan cannot avoid (one row of the catalog joined to the
/// rest) then costs as if disabled, far above `jit_above_cost`, and compiling the query took
/// longer than running it (0.3-0.4 s for a retention count that runs in 2 ms).
pub fn reading_sources<R>(sources: &HashMap<String, SourceMetric>, f: impl FnOnce() -> R) -> R {
    crate::security::with_settings(&[(c"enable_nestloop", c"off"), (c"jit", c"off")], || {
        if sources.is_empty() {
            f()
        } else {
            crate::security::as_caller(f)
        }
    })
}

/// The experiment's metrics read from sources, checked against the catalog.
pub fn source_metrics(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> HashMap<String, SourceMetric> {
    let defs = exp.metric_defs();
    if defs.values().all(|d| d.source.is_none()) {
        return HashMap::new();
    }
    // The stop, and the first and last enrollment, as ISO 8601 in UTC (exact to the microsecond).
    let iso = |column: &str| format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    let row = client
        .select(
            format!(
                "SELECT {}, (SELECT ARRAY[{}, {}] FROM {nsp}.ab_assignments WHERE experiment_id = $1) \
                 FROM {nsp}.ab_experiments WHERE id = $1",
                iso("stopped_at"),
                iso("min(assigned_at)"),
                iso("max(assigned_at)")
            )
            .as_str(),
            Some(1),
            &[exp.id.into()],
        )
        .or_raise();
    let row = row.first();
    let until: Option<String> = row.get(1).or_raise();
    let enrolled = match row.get::<Vec<Option<String>>>(2).or_raise().as_deref() {
        Some([Some(first), Some(last)]) => Some(Enrolled { first: first.clone(), last: last.clone() }),
        _ => None,
    };
    let reads = crate::sources::Reads::new(exp.id);
    defs.iter()
        .filter_map(|(name, def)| {
            let m = crate::sources::source_metric(
                client,
                nsp,
                name,
                def,
                until.clone(),
                enrolled.clone(),
                Some(reads.clone()),
            )?;
            Some((name.clone(), m))
        })
        .collect()
}

/// ab_analyze's 31 columns, in order.
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
    String,
    Option<String>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<i64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<bool>,
);

/// ab_analyze's columns: the one place they are chosen from a result row. (pgrx table
/// functions return at most 32 columns: a function showing other figures of the same rows,
/// keyed by metric and variant, is another projection of `ResultRow`.)
fn analyze_columns(r: ResultRow) -> AnalyzeRow {
    (
        r.metric_name,
        r.variant,
        r.is_control,
        r.users,
        r.mean,
        r.std_dev,
        r.diff,
        r.ci_lower,
        r.ci_upper,
        r.relative_lift,
        r.p_value,
        r.significant,
        r.effect_size,
        r.metric_type,
        r.test,
        r.p_value_adjusted,
        r.chance_to_beat_control,
        r.expected_loss,
        r.users_needed,
        r.srm_p_value,
        r.cuped_diff,
        r.cuped_ci_lower,
        r.cuped_ci_upper,
        r.cuped_p_value,
        r.cuped_variance_reduction,
        r.relative_lift_ci_lower,
        r.relative_lift_ci_upper,
        r.relative_lift_p_value,
        r.margin,
        r.non_inferiority_p_value,
        r.non_inferior,
    )
}

fn analyze(r: ExperimentRef<'_>) -> Vec<AnalyzeRow> {
    let analysis = Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        let analysis = run(client, &nsp, &exp);
        if transaction_writable() {
            store(client, &nsp, exp.id, &analysis);
        }
        analysis
    });
    analysis.rows().into_iter().map(analyze_columns).collect()
}

/// Whether this transaction may write: not on a hot standby, not in a read-only transaction.
/// Analysts query replicas, so an analysis there is returned without being stored.
pub fn transaction_writable() -> bool {
    // SAFETY: plain reads of backend-local state.
    unsafe { !pg_sys::XactReadOnly && !pg_sys::RecoveryInProgress() }
}

/// One row per metric and variant: per-user statistics and the Welch comparison with the
/// control (NULL on the control's row). Stores the rows in ab_insights where the transaction
/// can write (not in a read-only transaction, not on a hot standby).
#[pg_extern(volatile, parallel_unsafe)]
fn ab_analyze(
    experiment: &str,
) -> TableIterator<
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
        name!(metric_type, String),
        name!(test, Option<String>),
        name!(p_value_adjusted, Option<f64>),
        name!(chance_to_beat_control, Option<f64>),
        name!(expected_loss, Option<f64>),
        name!(users_needed, Option<i64>),
        name!(srm_p_value, Option<f64>),
        name!(cuped_diff, Option<f64>),
        name!(cuped_ci_lower, Option<f64>),
        name!(cuped_ci_upper, Option<f64>),
        name!(cuped_p_value, Option<f64>),
        name!(cuped_variance_reduction, Option<f64>),
        name!(relative_lift_ci_lower, Option<f64>),
        name!(relative_lift_ci_upper, Option<f64>),
        name!(relative_lift_p_value, Option<f64>),
        name!(margin, Option<f64>),
        name!(non_inferiority_p_value, Option<f64>),
        name!(non_inferior, Option<bool>),
    ),
> {
    TableIterator::new(analyze(ExperimentRef::Name(experiment)))
}

#[pg_extern(name = "ab_analyze", volatile, parallel_unsafe)]
fn ab_analyze_by_id(
    experiment: i64,
) -> TableIterator<
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
        name!(metric_type, String),
        name!(test, Option<String>),
        name!(p_value_adjusted, Option<f64>),
        name!(chance_to_beat_control, Option<f64>),
        name!(expected_loss, Option<f64>),
        name!(users_needed, Option<i64>),
        name!(srm_p_value, Option<f64>),
        name!(cuped_diff, Option<f64>),
        name!(cuped_ci_lower, Option<f64>),
        name!(cuped_ci_upper, Option<f64>),
        name!(cuped_p_value, Option<f64>),
        name!(cuped_variance_reduction, Option<f64>),
        name!(relative_lift_ci_lower, Option<f64>),
        name!(relative_lift_ci_upper, Option<f64>),
        name!(relative_lift_p_value, Option<f64>),
        name!(margin, Option<f64>),
        name!(non_inferiority_p_value, Option<f64>),
        name!(non_inferior, Option<bool>),
    ),
> {
    TableIterator::new(analyze(ExperimentRef::Id(experiment)))
}

fn summary(r: ExperimentRef<'_>) -> String {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
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
        let history: Vec<(i32, String, Vec<f64>)> = match &exp.bandit {
            Some(_) if catalog::has_table(client, &nsp, "ab_allocations") => client
                .select(
                    format!(
                        "SELECT period, to_char(started_at, 'YYYY-MM-DD HH24:MI:SS TZ'), weights \
                         FROM {nsp}.ab_allocations WHERE experiment_id = $1 ORDER BY period"
                    )
                    .as_str(),
                    None,
                    &[exp.id.into()],
                )
                .or_raise()
                .map(|row| {
                    let w = row.get::<pgrx::JsonB>(3).or_raise().map(|j| j.0).unwrap_or_default();
                    (
                        row.get::<i32>(1).or_raise().unwrap(),
                        row.get::<String>(2).or_raise().unwrap(),
                        analysis
                            .variants
                            .iter()
                            .map(|v| w.get(&v.name).and_then(|x| x.as_f64()).unwrap_or(0.0))
                            .collect(),
                    )
                })
                .collect(),
            _ => vec![],
        };
        let bandit = exp.bandit.as_ref().map(|b| BanditSummary {
            metric: &b.metric,
            update_every: &b.update_every,
            min_share: b.min_share,
            periods: &history,
        });
        let adjusted = crate::adjusted::summary_section(client, &nsp, &exp);
        let report = render(&SummaryInput {
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
            srm: analysis.srm,
            sequential_tuning: exp.sequential_tuning,
            correction: Correction::parse(&exp.correction).unwrap_or_default(),
            bandit: bandit.as_ref(),
        });
        let interactions = if crate::SUMMARY_INTERACTIONS.get() {
            crate::impact::summary_section(client, &nsp, &exp)
        } else {
            String::new()
        };
        report + &adjusted + &interactions
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

fn plot(r: ExperimentRef<'_>) -> String {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        let analysis = run(client, &nsp, &exp);
        ab_core::plot::forest_plot(&exp.name, &analysis.metrics)
    })
}

/// An SVG forest plot of each treatment's difference from the control, with its CI against
/// zero, per metric: a browser renders it as is.
#[pg_extern(stable, parallel_safe)]
fn ab_plot(experiment: &str) -> String {
    plot(ExperimentRef::Name(experiment))
}

#[pg_extern(name = "ab_plot", stable, parallel_safe)]
fn ab_plot_by_id(experiment: i64) -> String {
    plot(ExperimentRef::Id(experiment))
}
