//! The queries an analysis runs, shared with timelines, breakdowns and bandits: per-user
//! values, caps, quantiles, weight periods, and the checks of values read from sources.

use std::collections::{BTreeMap, HashMap};

use ab_core::analysis::{quantile_levels, ClusterSums, QuantileStat};
use ab_core::definition::{Aggregation, MetricDef, QuantileLevel};
use ab_core::stats::Moments;
use pgrx::spi::SpiClient;

use crate::catalog::{ExperimentRow, VariantRow};
use crate::errors::SpiExt;
use crate::sources::SourceMetric;

/// The source metrics in the analysis's order.
pub(super) fn order_of_sources(
    exp: &ExperimentRow,
    defs: &BTreeMap<String, MetricDef>,
    sources: &HashMap<String, SourceMetric>,
) -> Vec<String> {
    metric_order(exp, defs, &[]).into_iter().filter(|m| sources.contains_key(m)).collect()
}

/// `e` where it keeps the value rule, else 0 (for an aggregate whose result is discarded).
pub(super) fn in_range(e: &str) -> String {
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
/// recorded values each user's count of values at most the estimate. In a cluster-randomized
/// experiment (`unit`), the counts are per cluster of the unit, for either level: the values
/// of one cluster's users are not independent either.
#[allow(clippy::too_many_arguments)]
pub(super) fn quantile_stats(
    client: &SpiClient<'_>,
    nsp: &str,
    experiment_id: i64,
    of: &str,
    nu: f64,
    level: QuantileLevel,
    rows: &str,
    sources: &HashMap<String, SourceMetric>,
    unit: Option<&str>,
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
    // Grouped by user, or by the unit's cluster (a user without one is a cluster alone).
    let (join, group) = match unit {
        None => (String::new(), "u.user_id".to_string()),
        Some(_) => (
            format!(" JOIN {nsp}.ab_assignments a ON a.experiment_id = $1 AND a.user_id = u.user_id"),
            "CASE WHEN a.attributes->>$5 IS NULL THEN 'u' || u.user_id ELSE 'c' || (a.attributes->>$5) END".to_string(),
        ),
    };
    let clusters = format!(
        "SELECT count(*)::float8, coalesce(sum(s), 0), coalesce(sum(s * s), 0), coalesce(sum(c), 0), coalesce(sum(c * c), 0), \
                coalesce(sum(s * c), 0) \
         FROM (SELECT count(*) FILTER (WHERE u.v <= $3)::float8 AS s, count(*)::float8 AS c FROM ({rows}) u{join} \
               WHERE u.variant_id = $4 GROUP BY {group}) x"
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
        let cluster = (level == QuantileLevel::Event || unit.is_some()).then(|| {
            let row = client
                .select(
                    clusters.as_str(),
                    None,
                    &args(vec![experiment_id.into(), of.into(), estimate.into(), variant.into(), unit.into()]),
                )
                .or_raise();
            let row = row.first();
            let get = |i| row.get::<f64>(i).or_raise().unwrap_or(0.0);
            ClusterSums {
                clusters: get(1),
                sum_s: get(2),
                sum_s2: get(3),
                sum_n: get(4),
                sum_n2: get(5),
                sum_sn: get(6),
            }
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
