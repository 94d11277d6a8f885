//! `ab_analyze`, `ab_summary` and `ab_welch_test`. The per-user and per-variant aggregation
//! runs in SQL (memory does not grow with the number of results); the statistics run in
//! `ab_core`.

use std::collections::{BTreeMap, HashMap};

use ab_core::analysis::{
    analyze_metric, quantile_levels, ArmInput, ClusterSums, MetricInput, MetricResult, QuantileStat, Settings,
};
use ab_core::bandit::srm_by_period;
use ab_core::definition::{Aggregation, Correction, MetricDef, QuantileLevel};
use ab_core::stats::cuped::CoMoments;
use ab_core::stats::srm::{srm_test, SrmResult};
use ab_core::stats::Moments;
use ab_core::summary::{render, ArmCount, BanditSummary, SummaryInput};
use ab_core::winner::{decide, Decision};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::catalog::{self, ExperimentRef, ExperimentRow, VariantRow};
use crate::errors::SpiExt;
use crate::sources::SourceMetric;
use ab_core::source::Enrolled;

pub struct Analysis {
    pub variants: Vec<VariantRow>,
    pub assigned: HashMap<i64, u64>,
    pub metrics: Vec<MetricResult>,
    pub srm: Option<SrmResult>,
    /// What it read from metric sources (ab_insights.source_reads), None without.
    pub source_reads: Option<serde_json::Value>,
}

impl Analysis {
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

/// Per (metric, variant): the per-user values' moments and, with covariates, their
/// co-moments with the covariate (0 for users without one).
struct Observed {
    moments: Moments,
    co: Option<CoMoments>,
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
    let mut analysis = reading_sources(&sources, || run_linear(client, nsp, exp, &sources));
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

/// Runs `f` with nested loops off and, when the experiment reads sources, as the caller.
pub fn reading_sources<R>(sources: &HashMap<String, SourceMetric>, f: impl FnOnce() -> R) -> R {
    crate::security::with_settings(&[(c"enable_nestloop", c"off")], || {
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

fn run_linear(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    sources: &HashMap<String, SourceMetric>,
) -> Analysis {
    // A bandit's period cells read the sources without the check below: checked first.
    let bandit = exp.bandit.is_some() && catalog::has_table(client, nsp, "ab_allocations");
    if bandit {
        check_source_values(client, nsp, exp, sources, None);
    }
    let variants = catalog::variants(client, nsp, exp.id);
    let assigned: HashMap<i64, u64> = client
        .select(
            format!(
                "SELECT variant_id, count(*) FROM {nsp}.ab_assignments WHERE experiment_id = $1 GROUP BY variant_id"
            )
            .as_str(),
            None,
            &[exp.id.into()],
        )
        .or_raise()
        .map(|row| (row.get::<i64>(1).or_raise().unwrap(), row.get::<i64>(2).or_raise().unwrap() as u64))
        .collect();
    let observed_counts: Vec<f64> = variants.iter().map(|v| assigned.get(&v.id).copied().unwrap_or(0) as f64).collect();
    let weights: Vec<f64> = variants.iter().map(|v| v.traffic_allocation).collect();
    let periods = if bandit { Some(periods(client, nsp, exp.id, &variants)) } else { None };
    let srm = match &periods {
        None => srm_test(&observed_counts, &weights).ok(),
        Some(p) => srm_by_period(&p.by_period(&variants)),
    };

    // CUPED is not combined with the period strata of a bandit.
    let has_covariates = !bandit
        && client
            .select(
                format!("SELECT EXISTS (SELECT 1 FROM {nsp}.ab_covariates WHERE experiment_id = $1)").as_str(),
                None,
                &[exp.id.into()],
            )
            .or_raise()
            .first()
            .get_one::<bool>()
            .or_raise()
            .unwrap_or(false);

    let defs = exp.metric_defs();
    // Per-user values come from ab_user_metrics (one row per user and metric), or from the raw
    // results on a schema that has no per-user state yet (before ALTER EXTENSION UPDATE).
    let from_state = catalog::has_table(client, nsp, "ab_user_metrics");
    let per_user_table = if from_state { "ab_user_metrics" } else { "ab_results" };
    let recorded = recorded_metrics(client, nsp, exp.id, per_user_table);

    // One query per metric over one row per user (the unit of randomization), then per
    // variant with mergeable aggregates. From raw results the per-user step is a GROUP BY,
    // which a sharded cluster runs next to the data.
    let mut observed: BTreeMap<String, HashMap<i64, Observed>> = BTreeMap::new();
    // Bandit experiments: per metric, the moments of each (variant, period) cell.
    let mut per_period: BTreeMap<String, HashMap<(i64, usize), Moments>> = BTreeMap::new();
    // Capped metrics: each one's cap as an absolute value (a percentile's value in this data).
    let caps: HashMap<String, f64> = defs
        .iter()
        .filter_map(|(name, def)| {
            def.cap?;
            let per_user = per_user_of_metric(client, nsp, from_state, name, def.aggregation, "$2", None, sources);
            Some((name.clone(), metric_cap(client, exp.id, name, def, &per_user, sources)?))
        })
        .collect();
    let per_user_of = |metric: &str, param: &str| {
        let aggregation = defs.get(metric).map(|d| d.aggregation).unwrap_or_default();
        per_user_of_metric(client, nsp, from_state, metric, aggregation, param, caps.get(metric).copied(), sources)
    };
    // Recorded metrics (none under a source metric's name counts), then those read from sources.
    let mut measured: Vec<String> = recorded.iter().filter(|m| !sources.contains_key(*m)).cloned().collect();
    measured.extend(order_of_sources(exp, &defs, sources));
    for metric in &measured {
        let per_user = per_user_of(metric, "$2");
        let covariate_source = sources.get(metric).filter(|_| !bandit).and_then(|s| s.covariate_per_user(client, nsp));
        // A source metric's values (and its covariate source's) are checked in the same scan
        // (`check_source_values` only runs, to name the value, when one breaks the rule): the
        // largest magnitudes of the uncapped values, and the aggregates fed 0 in place of a
        // value out of range so that they finish (their result is then not used).
        let (per_user, v, cv, range) = match sources.get(metric) {
            Some(s) => {
                let capped = match caps.get(metric) {
                    Some(cap) => format!("least(u.v, '{cap:e}'::float8)"),
                    None => "u.v".to_string(),
                };
                (
                    format!(
                        "SELECT u.variant_id, u.user_id, {capped} AS v, u.v AS raw FROM ({}) u",
                        s.per_user(client, nsp)
                    ),
                    in_range("u.v"),
                    in_range("c.v"),
                    if covariate_source.is_some() { ", max(abs(u.raw)), max(abs(c.v))" } else { ", max(abs(u.raw))" },
                )
            }
            None => (per_user, "u.v".to_string(), "c.v".to_string(), ""),
        };
        let sql = if let Some(cov) = &covariate_source {
            format!(
                "SELECT u.variant_id, {nsp}.ab_comoments({v}, coalesce({cv}, 0)){range} FROM ({per_user}) u \
                 LEFT JOIN ({cov}) c ON c.user_id = u.user_id GROUP BY u.variant_id"
            )
        } else if has_covariates {
            format!(
                "SELECT u.variant_id, {nsp}.ab_comoments({v}, coalesce(c.value, 0)){range} FROM ({per_user}) u \
                 LEFT JOIN {nsp}.ab_covariates c ON c.experiment_id = $1 AND c.metric_name = $2 AND c.user_id = u.user_id \
                 GROUP BY u.variant_id"
            )
        } else {
            format!("SELECT u.variant_id, {nsp}.ab_moments({v}){range} FROM ({per_user}) u GROUP BY u.variant_id")
        };
        let with_covariate = has_covariates || covariate_source.is_some();
        if periods.is_some() {
            let cells = period_cells(client, nsp, exp.id, metric, &per_user, sources);
            let per_variant = observed.entry(metric.clone()).or_default();
            for ((v, _), m) in &cells {
                let o = per_variant.entry(*v).or_insert(Observed { moments: Moments::default(), co: None });
                o.moments = o.moments.merge(m);
            }
            per_period.insert(metric.clone(), cells);
            continue;
        }
        let per_variant = observed.entry(metric.clone()).or_default();
        let args = crate::sources::args(sources, vec![exp.id.into(), metric.as_str().into()]);
        for row in client.select(sql.as_str(), None, &args).or_raise() {
            if !range.is_empty() {
                let covariate = if covariate_source.is_some() { row.get::<f64>(4).or_raise() } else { None };
                let largest = [row.get::<f64>(3).or_raise(), covariate];
                if largest.into_iter().flatten().any(|x| !ab_core::definition::value_in_range(x)) {
                    check_source_values(client, nsp, exp, sources, Some(std::slice::from_ref(metric)));
                }
            }
            let variant: i64 = row.get(1).or_raise().unwrap();
            let m: Vec<Option<f64>> = row.get(2).or_raise().unwrap();
            let m: Vec<f64> = m.into_iter().map(|x| x.unwrap_or(0.0)).collect();
            let (moments, co) = if with_covariate {
                let co = CoMoments { n: m[0], mean_y: m[1], mean_x: m[2], m2_y: m[3], m2_x: m[4], c_xy: m[5] };
                (Moments { n: co.n, mean: co.mean_y, m2: co.m2_y }, Some(co))
            } else {
                (Moments { n: m[0], mean: m[1], m2: m[2] }, None)
            };
            per_variant.insert(variant, Observed { moments, co });
        }
    }

    // Ratio metrics: co-moments of (numerator, denominator) per variant over the users who
    // recorded either; the assigned users who recorded neither are added as zeros below.
    let mut ratios: HashMap<String, HashMap<i64, CoMoments>> = HashMap::new();
    for (name, def) in &defs {
        let Some((num, den)) = def.ratio_of() else { continue };
        let sql = format!(
            "SELECT coalesce(n.variant_id, d.variant_id), {nsp}.ab_comoments(coalesce(n.v, 0), coalesce(d.v, 0)) \
             FROM ({}) n FULL JOIN ({}) d ON d.user_id = n.user_id AND d.variant_id = n.variant_id GROUP BY 1",
            per_user_of(num, "$2"),
            per_user_of(den, "$3")
        );
        let per_variant = ratios.entry(name.clone()).or_default();
        let args = crate::sources::args(sources, vec![exp.id.into(), num.into(), den.into()]);
        for row in client.select(sql.as_str(), None, &args).or_raise() {
            let variant: i64 = row.get(1).or_raise().unwrap();
            let m: Vec<f64> =
                row.get::<Vec<Option<f64>>>(2).or_raise().unwrap().into_iter().map(|x| x.unwrap_or(0.0)).collect();
            per_variant
                .insert(variant, CoMoments { n: m[0], mean_y: m[1], mean_x: m[2], m2_y: m[3], m2_x: m[4], c_xy: m[5] });
        }
    }

    // Quantile metrics: each variant's estimate and order-statistic interval, and for a
    // quantile of every recorded value the per-user counts its variance needs.
    let mut quantiles: HashMap<String, HashMap<i64, QuantileStat>> = HashMap::new();
    for (name, def) in &defs {
        let Some((of, nu, level)) = def.quantile_of() else { continue };
        let aggregation = defs.get(of).map(|d| d.aggregation).unwrap_or_default();
        // (variant_id, user_id, v) rows: per user, or every value.
        let rows = match (sources.get(of), level) {
            (Some(s), QuantileLevel::User) => s.per_user(client, nsp),
            (Some(s), QuantileLevel::Event) => s.rows(client, nsp),
            (None, QuantileLevel::User) => per_user_sql(nsp, from_state, aggregation, "$2", None),
            (None, QuantileLevel::Event) => format!(
                "SELECT r.variant_id, r.user_id, r.metric_value AS v FROM {nsp}.ab_results r \
                 WHERE r.experiment_id = $1 AND r.metric_name = $2"
            ),
        };
        let stats = quantile_stats(client, exp.id, of, nu, level, &rows, sources);
        quantiles.insert(name.clone(), stats);
    }

    // Users who recorded nothing for a metric but have a covariate (they count as 0 for
    // sum, count and binary metrics, and their covariate still enters CUPED).
    let mut silent_cov: HashMap<(String, i64), CoMoments> = HashMap::new();
    let silent_of = |row: pgrx::spi::SpiHeapTupleData<'_>, first: usize| {
        let n = row.get::<i64>(first).or_raise().unwrap() as f64;
        let mean_x: f64 = row.get(first + 1).or_raise().unwrap();
        let var_x: f64 = row.get(first + 2).or_raise().unwrap();
        CoMoments::from_summary(n, 0.0, mean_x, 0.0, var_x, 0.0)
    };
    for (name, source) in sources.iter().filter(|_| !bandit) {
        let Some(cov) = source.covariate_per_user(client, nsp) else { continue };
        let v = in_range("c.v");
        let sql = format!(
            "SELECT c.variant_id, count(*), avg({v}), coalesce(var_samp({v}), 0), max(abs(c.v)) FROM ({cov}) c \
             LEFT JOIN ({}) u ON u.user_id = c.user_id WHERE u.user_id IS NULL GROUP BY c.variant_id",
            source.per_user(client, nsp)
        );
        for row in client.select(sql.as_str(), None, &crate::sources::args(sources, vec![exp.id.into()])).or_raise() {
            if row.get::<f64>(5).or_raise().is_some_and(|x| !ab_core::definition::value_in_range(x)) {
                check_source_values(client, nsp, exp, sources, Some(std::slice::from_ref(name)));
            }
            let variant: i64 = row.get(1).or_raise().unwrap();
            silent_cov.insert((name.clone(), variant), silent_of(row, 2));
        }
    }
    if has_covariates {
        let sql = format!(
            "SELECT c.metric_name, a.variant_id, count(*), avg(c.value), coalesce(var_samp(c.value), 0) \
             FROM {nsp}.ab_covariates c JOIN {nsp}.ab_assignments a ON a.experiment_id = c.experiment_id AND a.user_id = c.user_id \
             WHERE c.experiment_id = $1 AND NOT EXISTS (SELECT 1 FROM {nsp}.{per_user_table} r \
               WHERE r.experiment_id = $1 AND r.metric_name = c.metric_name AND r.user_id = c.user_id) \
             GROUP BY c.metric_name, a.variant_id"
        );
        for row in client.select(sql.as_str(), None, &[exp.id.into()]).or_raise() {
            let key: (String, i64) = (row.get(1).or_raise().unwrap(), row.get(2).or_raise().unwrap());
            if sources.get(&key.0).is_none_or(|s| s.covariate.is_none()) {
                silent_cov.insert(key, silent_of(row, 3));
            }
        }
    }

    let order = metric_order(exp, &defs, &recorded);

    let settings = settings(exp);
    let metrics = order
        .into_iter()
        .map(|name| {
            let def = defs.get(&name).cloned().unwrap_or_default();
            let data = observed.get(&name);
            let arms = variants
                .iter()
                .map(|v| {
                    let assigned = assigned.get(&v.id).copied().unwrap_or(0);
                    let obs = data.and_then(|d| d.get(&v.id));
                    let moments = obs.map(|o| o.moments).unwrap_or_default();
                    let with_covariate =
                        has_covariates || !bandit && sources.get(&name).is_some_and(|s| s.covariate.is_some());
                    let covariate = with_covariate.then(|| {
                        let mut co = obs.and_then(|o| o.co).unwrap_or_default();
                        if def.silent_users_are_zero() {
                            let with_cov = silent_cov.get(&(name.clone(), v.id)).copied().unwrap_or_default();
                            let without = (assigned as f64 - moments.n - with_cov.n).max(0.0);
                            co = co.merge(&with_cov).merge(&CoMoments { n: without, ..Default::default() });
                        }
                        co
                    });
                    let periods = match &periods {
                        None => vec![],
                        Some(p) => (0..p.weights.len())
                            .map(|i| {
                                let cell = per_period.get(&name).and_then(|c| c.get(&(v.id, i))).copied();
                                (p.assigned.get(&(v.id, i)).copied().unwrap_or(0), cell.unwrap_or_default())
                            })
                            .collect(),
                    };
                    let ratio = ratios.get(&name).map(|r| {
                        let co = r.get(&v.id).copied().unwrap_or_default();
                        co.merge(&CoMoments { n: (assigned as f64 - co.n).max(0.0), ..Default::default() })
                    });
                    ArmInput {
                        variant: v.name.clone(),
                        is_control: v.is_control,
                        assigned,
                        observed: moments,
                        covariate,
                        periods,
                        ratio,
                        quantile: quantiles.get(&name).and_then(|q| q.get(&v.id)).copied(),
                    }
                })
                .collect();
            analyze_metric(&settings, &MetricInput { cap: caps.get(&name).copied(), name, def, arms })
        })
        .collect();
    Analysis { variants, assigned, metrics, srm, source_reads: None }
}

/// The source metrics in the analysis's order.
fn order_of_sources(
    exp: &ExperimentRow,
    defs: &BTreeMap<String, MetricDef>,
    sources: &HashMap<String, SourceMetric>,
) -> Vec<String> {
    metric_order(exp, defs, &[]).into_iter().filter(|m| sources.contains_key(m)).collect()
}

/// `e` where it keeps the value rule, else 0 (for an aggregate whose result is discarded).
fn in_range(e: &str) -> String {
    format!("CASE WHEN abs({e}) <= '{:e}'::float8 THEN {e} ELSE 0 END", ab_core::definition::MAX_ABS_VALUE)
}

/// How messages name a source: its registered name, or the relation of an inline one.
fn source_label(r: Option<ab_core::definition::SourceRef>) -> String {
    use ab_core::definition::SourceRef;
    use ab_core::names::printable;
    match r {
        Some(SourceRef::Named(n)) => format!("source \"{}\"", printable(&n)),
        Some(SourceRef::Inline(spec)) => format!("relation \"{}\"", printable(&spec.relation)),
        None => "its source".to_string(),
    }
}

/// Every value an analysis reads from the application's relations keeps the rule of a
/// recorded value (`ab_core::definition::source_value_problem`): each user's value of each
/// source metric, and each user's covariate read from a covariate source. A value outside it
/// (or not a number) would make every statistic meaningless, or overflow; every analysis
/// (`ab_analyze`, `ab_summary`, `ab_bayes`, `ab_plot`, timelines, breakdowns) raises the same
/// 22003 before computing anything. `only` limits the check to the metrics a function reads.
/// Runs as the role that reads the sources.
pub fn check_source_values(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    sources: &HashMap<String, SourceMetric>,
    only: Option<&[String]>,
) {
    let defs = exp.metric_defs();
    let mut names: Vec<&String> = sources.keys().filter(|n| only.is_none_or(|o| o.contains(n))).collect();
    names.sort();
    for name in names {
        let source = &sources[name];
        let def = defs.get(name.as_str()).cloned().unwrap_or_default();
        let reads = [
            ("value", Some(source.per_user(client, nsp)), source_label(def.source_ref())),
            ("covariate", source.covariate_per_user(client, nsp), source_label(def.covariate_ref().map(|c| c.0))),
        ];
        for (what, sql, label) in reads {
            let Some(sql) = sql else { continue };
            // The user's value largest in magnitude, NaN first (it sorts above every number).
            let largest = client
                .select(
                    format!("SELECT (SELECT u.v FROM ({sql}) u ORDER BY abs(u.v) DESC NULLS LAST LIMIT 1)").as_str(),
                    Some(1),
                    &crate::sources::args(sources, vec![exp.id.into()]),
                )
                .or_raise()
                .first()
                .get_one::<f64>()
                .or_raise();
            if let Some(message) =
                largest.and_then(|x| ab_core::definition::source_value_problem(name, what, &label, x))
            {
                crate::errors::raise(
                    pgrx::PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                    message,
                    Some("filter the source's rows (a filter on the value column), or correct the rows".into()),
                );
            }
        }
    }
}

/// The metrics an analysis reports, in its order: the primary metric, then the declared ones,
/// then any other recorded metric (`defs` always holds the primary one).
pub fn metric_order(exp: &ExperimentRow, defs: &BTreeMap<String, MetricDef>, recorded: &[String]) -> Vec<String> {
    let mut order = vec![exp.primary_metric.clone()];
    order.extend(defs.keys().filter(|k| **k != exp.primary_metric).cloned());
    order.extend(recorded.iter().filter(|k| !defs.contains_key(*k)).cloned());
    order
}

/// The metric names recorded in `table` (ab_results or ab_user_metrics) for an experiment, by
/// a loose index scan on (experiment_id, metric_name): one index descent per name, however
/// many results there are. Citus runs recursive CTEs only with a filter on the distribution
/// column: there each shard lists its own names.
pub fn recorded_metrics(client: &SpiClient<'_>, nsp: &str, experiment_id: i64, table: &str) -> Vec<String> {
    let sql = if crate::citus::is_distributed(client, nsp) {
        format!("SELECT DISTINCT metric_name FROM {nsp}.{table} WHERE experiment_id = $1 ORDER BY 1")
    } else {
        format!(
            "WITH RECURSIVE m(name) AS ( \
                   SELECT min(metric_name) FROM {nsp}.{table} WHERE experiment_id = $1 \
                   UNION ALL \
                   SELECT (SELECT min(r.metric_name) FROM {nsp}.{table} r \
                           WHERE r.experiment_id = $1 AND r.metric_name > m.name) \
                   FROM m WHERE m.name IS NOT NULL) \
                 SELECT name FROM m WHERE name IS NOT NULL"
        )
    };
    client
        .select(sql.as_str(), None, &[experiment_id.into()])
        .or_raise()
        .map(|row| row.get::<String>(1).or_raise().unwrap())
        .collect()
}

/// A quantile metric's statistic per variant: the quantile `nu` of metric `of`'s per-user
/// values (`percentile_cont`: linear between the closest ranks, as numpy's default) or of
/// its every recorded value, the values at the order-statistic interval's levels, and for
/// recorded values each user's count of values at most the estimate.
fn quantile_stats(
    client: &SpiClient<'_>,
    experiment_id: i64,
    of: &str,
    nu: f64,
    level: QuantileLevel,
    rows: &str,
    sources: &HashMap<String, SourceMetric>,
) -> HashMap<i64, QuantileStat> {
    let args = |base| crate::sources::args(sources, base);
    let sql = format!("SELECT u.variant_id, count(*), count(DISTINCT u.user_id) FROM ({rows}) u GROUP BY 1");
    let counts: Vec<(i64, f64, u64)> = client
        .select(sql.as_str(), None, &args(vec![experiment_id.into(), of.into()]))
        .or_raise()
        .map(|row| {
            (
                row.get::<i64>(1).or_raise().unwrap(),
                row.get::<i64>(2).or_raise().unwrap() as f64,
                row.get::<i64>(3).or_raise().unwrap() as u64,
            )
        })
        .collect();
    let percentiles = format!(
        "SELECT percentile_cont(ARRAY[$3, $4, $5]::float8[]) WITHIN GROUP (ORDER BY u.v) FROM ({rows}) u WHERE u.variant_id = $6"
    );
    let clusters = format!(
        "SELECT coalesce(sum(s), 0), coalesce(sum(s * s), 0), coalesce(sum(c), 0), coalesce(sum(c * c), 0), coalesce(sum(s * c), 0) \
         FROM (SELECT count(*) FILTER (WHERE u.v <= $3)::float8 AS s, count(*)::float8 AS c FROM ({rows}) u \
               WHERE u.variant_id = $4 GROUP BY u.user_id) x"
    );
    let mut out = HashMap::new();
    for (variant, n, users) in counts {
        let (lo, hi) = quantile_levels(nu, n);
        let q: Vec<Option<f64>> = client
            .select(
                percentiles.as_str(),
                None,
                &args(vec![experiment_id.into(), of.into(), nu.into(), lo.into(), hi.into(), variant.into()]),
            )
            .or_raise()
            .first()
            .get_one::<Vec<Option<f64>>>()
            .or_raise()
            .unwrap_or_default();
        let [Some(estimate), Some(lower), Some(upper)] = q[..] else { continue };
        let cluster = (level == QuantileLevel::Event).then(|| {
            let row = client
                .select(
                    clusters.as_str(),
                    None,
                    &args(vec![experiment_id.into(), of.into(), estimate.into(), variant.into()]),
                )
                .or_raise();
            let row = row.first();
            let get = |i| row.get::<f64>(i).or_raise().unwrap_or(0.0);
            ClusterSums { sum_s: get(1), sum_s2: get(2), sum_n: get(3), sum_n2: get(4), sum_sn: get(5) }
        });
        out.insert(variant, QuantileStat { users, n, nu, estimate, lower, upper, cluster });
    }
    out
}

/// A metric's cap as an absolute value: its `value`, or its `percentile` of the per-user
/// values of every user who recorded the metric (percentile_cont: linear between the
/// closest ranks, as numpy's default), and at least 0 where users who recorded nothing count
/// as 0 (no per-user value is then above the cap). None for an uncapped metric, or a
/// percentile of nothing.
pub fn metric_cap(
    client: &SpiClient<'_>,
    experiment_id: i64,
    name: &str,
    def: &MetricDef,
    per_user: &str,
    sources: &HashMap<String, SourceMetric>,
) -> Option<f64> {
    let cap = def.cap?;
    if cap.value.is_some() {
        return cap.value;
    }
    let sql = format!("SELECT percentile_cont($3) WITHIN GROUP (ORDER BY u.v) FROM ({per_user}) u");
    let value = client
        .select(
            sql.as_str(),
            None,
            &crate::sources::args(sources, vec![experiment_id.into(), name.into(), cap.percentile?.into()]),
        )
        .or_raise()
        .first()
        .get_one::<f64>()
        .or_raise()?;
    Some(if def.silent_users_are_zero() { value.max(0.0) } else { value })
}

/// One row per user recording the metric named by parameter `param` in experiment $1:
/// (variant_id, user_id, v), v the user's value under the metric's aggregation, at most `cap`.
pub fn per_user_sql(nsp: &str, from_state: bool, aggregation: Aggregation, param: &str, cap: Option<f64>) -> String {
    capped(per_user_uncapped(nsp, from_state, aggregation, param), cap)
}

/// `per_user_sql` for a recorded metric, its source's read for a source metric.
#[allow(clippy::too_many_arguments)]
pub fn per_user_of_metric(
    client: &SpiClient<'_>,
    nsp: &str,
    from_state: bool,
    metric: &str,
    aggregation: Aggregation,
    param: &str,
    cap: Option<f64>,
    sources: &HashMap<String, SourceMetric>,
) -> String {
    match sources.get(metric) {
        Some(s) => capped(s.per_user(client, nsp), cap),
        None => per_user_sql(nsp, from_state, aggregation, param, cap),
    }
}

/// Per-user rows (variant_id, user_id, v) with v at most `cap`.
fn capped(sql: String, cap: Option<f64>) -> String {
    match cap {
        // The cap is a finite float8 written in full (Rust prints the shortest exact form).
        Some(cap) => format!("SELECT u.variant_id, u.user_id, least(u.v, '{cap:e}'::float8) AS v FROM ({sql}) u"),
        None => sql,
    }
}

fn per_user_uncapped(nsp: &str, from_state: bool, aggregation: Aggregation, param: &str) -> String {
    if from_state {
        let v = match aggregation {
            Aggregation::Mean => "s.total / s.n::float8",
            Aggregation::Sum => "s.total",
            Aggregation::Count => "s.n::float8",
            Aggregation::Max => "s.max",
        };
        format!(
            "SELECT s.variant_id, s.user_id, {v} AS v FROM {nsp}.ab_user_metrics s \
             WHERE s.experiment_id = $1 AND s.metric_name = {param}"
        )
    } else {
        let agg = match aggregation {
            Aggregation::Mean => "avg(r.metric_value)",
            Aggregation::Sum => "sum(r.metric_value)",
            Aggregation::Count => "count(*)::float8",
            Aggregation::Max => "max(r.metric_value)",
        };
        format!(
            "SELECT r.variant_id, r.user_id, {agg} AS v FROM {nsp}.ab_results r \
             WHERE r.experiment_id = $1 AND r.metric_name = {param} GROUP BY r.variant_id, r.user_id"
        )
    }
}

/// Moments of each (variant, weight period) cell of a bandit experiment's metric.
pub fn period_cells(
    client: &SpiClient<'_>,
    nsp: &str,
    experiment_id: i64,
    metric: &str,
    per_user: &str,
    sources: &HashMap<String, SourceMetric>,
) -> HashMap<(i64, usize), Moments> {
    let sql = format!(
        "SELECT u.variant_id, a.period, {nsp}.ab_moments(u.v) FROM ({per_user}) u \
         JOIN {nsp}.ab_assignments a ON a.experiment_id = $1 AND a.user_id = u.user_id \
         GROUP BY u.variant_id, a.period"
    );
    client
        .select(sql.as_str(), None, &crate::sources::args(sources, vec![experiment_id.into(), metric.into()]))
        .or_raise()
        .map(|row| {
            let variant: i64 = row.get(1).or_raise().unwrap();
            let period: i32 = row.get(2).or_raise().unwrap();
            let m: Vec<Option<f64>> = row.get(3).or_raise().unwrap();
            let m: Vec<f64> = m.into_iter().map(|x| x.unwrap_or(0.0)).collect();
            ((variant, period as usize), Moments { n: m[0], mean: m[1], m2: m[2] })
        })
        .collect()
}

/// The weight periods of a bandit experiment: each period's weights (in variant order) and
/// the users each (variant, period) assigned.
pub struct Periods {
    pub weights: Vec<Vec<f64>>,
    pub assigned: HashMap<(i64, usize), u64>,
}

impl Periods {
    /// Per period: (users per variant, weights), in variant order.
    pub fn by_period(&self, variants: &[VariantRow]) -> Vec<(Vec<f64>, Vec<f64>)> {
        self.weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let users = variants.iter().map(|v| self.assigned.get(&(v.id, i)).copied().unwrap_or(0) as f64);
                (users.collect(), w.clone())
            })
            .collect()
    }
}

/// Periods are numbered from 0, one more at each reweighting: 100000 of them would take a
/// reweighting every 10 minutes for two years.
const MAX_PERIOD: i32 = 99_999;

/// A stored period number as an index; one written by hand outside 0..=MAX_PERIOD is refused
/// rather than sizing the analysis's arrays by it.
fn period_index(experiment_id: i64, period: i32) -> usize {
    if !(0..=MAX_PERIOD).contains(&period) {
        crate::errors::raise(
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("experiment {experiment_id} has a weight period numbered {period}, outside 0 to {MAX_PERIOD}"),
            Some("ab_allocations and ab_assignments hold it: correct the rows written by hand".into()),
        );
    }
    period as usize
}

pub fn periods(client: &SpiClient<'_>, nsp: &str, experiment_id: i64, variants: &[VariantRow]) -> Periods {
    let mut weights: Vec<Vec<f64>> = Vec::new();
    let sql = format!("SELECT period, weights FROM {nsp}.ab_allocations WHERE experiment_id = $1 ORDER BY period");
    for row in client.select(sql.as_str(), None, &[experiment_id.into()]).or_raise() {
        let period = period_index(experiment_id, row.get::<i32>(1).or_raise().unwrap());
        let w = row.get::<pgrx::JsonB>(2).or_raise().map(|j| j.0).unwrap_or_default();
        weights.resize(period + 1, vec![]);
        weights[period] = variants.iter().map(|v| w.get(&v.name).and_then(|x| x.as_f64()).unwrap_or(0.0)).collect();
    }
    let assigned = client
        .select(
            format!(
                "SELECT variant_id, period, count(*) FROM {nsp}.ab_assignments WHERE experiment_id = $1 \
                 GROUP BY variant_id, period"
            )
            .as_str(),
            None,
            &[experiment_id.into()],
        )
        .or_raise()
        .map(|row| {
            let period = period_index(experiment_id, row.get::<i32>(2).or_raise().unwrap());
            ((row.get::<i64>(1).or_raise().unwrap(), period), row.get::<i64>(3).or_raise().unwrap() as u64)
        })
        .collect::<HashMap<_, _>>();
    // Assignments under a period with no stored weights (rows written by hand) count in
    // their own period with no weights: the sample ratio check then flags them.
    let last = assigned.keys().map(|(_, p)| *p).max().unwrap_or(0);
    if weights.len() <= last {
        weights.resize(last + 1, vec![]);
    }
    for w in &mut weights {
        if w.is_empty() {
            *w = vec![0.0; variants.len()];
        }
    }
    Periods { weights, assigned }
}

/// Stores an analysis in ab_insights; rows of one run share the transaction time.
pub fn store(client: &mut SpiClient<'_>, nsp: &str, experiment_id: i64, analysis: &Analysis) {
    // The relative and guardrail columns came with 0.9.0: a 0.9.0 library on an older schema
    // stores what that schema has.
    let full = catalog::has_column(client, nsp, "ab_insights", "non_inferior");
    let (mut extra, extra_params) = if full {
        (
            ", relative_lift_ci_lower, relative_lift_ci_upper, relative_lift_p_value, margin, non_inferiority_p_value, non_inferior"
                .to_string(),
            ", $29::float8[], $30::float8[], $31::float8[], $32::float8[], $33::float8[], $34::bool[]".to_string(),
        )
    } else {
        (String::new(), String::new())
    };
    // 0.12.0: what the analysis read from sources, and who ran it (the views over ab_insights
    // show its rows only to roles that may read those sources).
    let readers = full && catalog::has_column(client, nsp, "ab_insights", "source_reads");
    let consts = if readers {
        extra.push_str(", source_reads, computed_by");
        ", $35::jsonb, $36::name"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO {nsp}.ab_insights (experiment_id, computed_at, metric_name, variant, is_control, users, mean, \
         std_dev, diff, ci_lower, ci_upper, relative_lift, p_value, significant, effect_size, recommendation, confidence, \
         metric_type, test, p_value_adjusted, chance_to_beat_control, expected_loss, users_needed, srm_p_value, \
         cuped_diff, cuped_ci_lower, cuped_ci_upper, cuped_p_value, cuped_variance_reduction{extra}) \
         SELECT $1, now(), r.*{consts} FROM unnest($2::text[], $3::text[], $4::bool[], $5::int8[], $6::float8[], $7::float8[], \
           $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::bool[], $14::float8[], $15::text[], \
           $16::float8[], $17::text[], $18::text[], $19::float8[], $20::float8[], $21::float8[], $22::int8[], $23::float8[], \
           $24::float8[], $25::float8[], $26::float8[], $27::float8[], $28::float8[]{extra_params}) AS r"
    );
    let rows: Vec<Row> = analysis.metrics.iter().flat_map(|m| rows_of(m, analysis.srm)).collect();
    macro_rules! col {
        ($i:tt) => {
            rows.iter().map(|r| r.$i.clone()).collect::<Vec<_>>().into()
        };
    }
    let confidence: Vec<Option<f64>> =
        analysis.metrics.iter().flat_map(|m| m.arms.iter().map(|a| a.confidence)).collect();
    let recommendation: Vec<String> =
        analysis.metrics.iter().flat_map(|m| m.arms.iter().map(|a| a.recommendation.clone())).collect();
    let mut args: Vec<pgrx::datum::DatumWithOid> = vec![
        experiment_id.into(),
        col!(0),
        col!(1),
        col!(2),
        col!(3),
        col!(4),
        col!(5),
        col!(6),
        col!(7),
        col!(8),
        col!(9),
        col!(10),
        col!(11),
        col!(12),
        recommendation.into(),
        confidence.into(),
        col!(13),
        col!(14),
        col!(15),
        col!(16),
        col!(17),
        col!(18),
        col!(19),
        col!(20),
        col!(21),
        col!(22),
        col!(23),
        col!(24),
    ];
    if full {
        args.extend([col!(25), col!(26), col!(27), col!(28), col!(29), col!(30)]);
    }
    if readers {
        let computed_by =
            unsafe { std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), false)) };
        args.push(analysis.source_reads.clone().map(pgrx::JsonB).into());
        args.push(computed_by.to_string_lossy().into_owned().into());
    }
    client.update(sql.as_str(), None, &args).or_raise();
}

/// One output row of ab_analyze, in column order.
type Row = (
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

fn rows_of(m: &MetricResult, srm: Option<SrmResult>) -> Vec<Row> {
    m.arms
        .iter()
        .map(|a| {
            let c = a.comparison;
            let k = c.and_then(|c| c.cuped);
            (
                m.name.clone(),
                a.variant.clone(),
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
                m.def.kind.as_str().to_string(),
                c.map(|c| c.test.to_string()),
                c.map(|c| c.p_adjusted),
                c.map(|c| c.chance_to_beat_control),
                c.map(|c| c.expected_loss),
                c.and_then(|c| c.users_needed).map(|n| n.min(i64::MAX as u64) as i64),
                srm.map(|s| s.p_value),
                k.map(|k| k.diff),
                k.map(|k| k.ci_lower),
                k.map(|k| k.ci_upper),
                k.map(|k| k.p_value),
                k.map(|k| k.variance_reduction),
                c.and_then(|c| c.relative_ci).map(|r| r.0),
                c.and_then(|c| c.relative_ci).map(|r| r.1),
                c.and_then(|c| c.relative_p_value),
                m.def.margin,
                c.and_then(|c| c.non_inferiority).map(|n| n.p_value),
                c.and_then(|c| c.non_inferiority).map(|n| n.passed),
            )
        })
        .collect()
}

fn analyze(r: ExperimentRef<'_>) -> Vec<Row> {
    let analysis = Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let analysis = run(client, &nsp, &exp);
        if transaction_writable() {
            store(client, &nsp, exp.id, &analysis);
        }
        analysis
    });
    analysis.metrics.iter().flat_map(|m| rows_of(m, analysis.srm)).collect()
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
            srm: analysis.srm,
            sequential_tuning: exp.sequential_tuning,
            correction: Correction::parse(&exp.correction).unwrap_or_default(),
            bandit: bandit.as_ref(),
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

fn plot(r: ExperimentRef<'_>) -> String {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
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
