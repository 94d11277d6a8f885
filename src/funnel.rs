//! Funnel and retention metrics: counted in SQL from the times of the results
//! (`ab_results.recorded_at`) and the enrollments (`ab_assignments.assigned_at`), compared in
//! `ab_core::funnel`. `ab_analyze` sees each as a binary metric (`per_variant`); `ab_funnel`
//! and `ab_retention` show the steps and the users too new to count.

use std::collections::{BTreeMap, HashMap};

use ab_core::analysis::ClusterTotals;
use ab_core::definition::{FunnelDef, FunnelFrom, MetricDef, MetricType};
use ab_core::funnel::{funnel_rows, retention_rows, FunnelArm, RetentionArm};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::catalog::{self, ExperimentRef, ExperimentRow};
use crate::errors::{required, SpiExt};
use crate::sources::SourceMetric;

/// The times at which each enrolled user did `metric`, as (variant_id, user_id, t) rows with
/// $1 the experiment and `param` the metric's name: its results (of 1 for a binary metric,
/// any otherwise), or its source's matching rows (within the source metric's own window).
fn times_of(
    client: &SpiClient<'_>,
    nsp: &str,
    defs: &BTreeMap<String, MetricDef>,
    sources: &HashMap<String, SourceMetric>,
    metric: &str,
    param: &str,
) -> String {
    if let Some(source) = sources.get(metric) {
        return source.times(client, nsp);
    }
    let value = match defs.get(metric) {
        Some(d) if d.kind == MetricType::Binary => " AND r.metric_value = 1",
        _ => "",
    };
    format!(
        "SELECT r.variant_id, r.user_id, r.recorded_at AS t FROM {nsp}.ab_results r \
         WHERE r.experiment_id = $1 AND r.metric_name = {param}{value}"
    )
}

/// Per variant id: the users who reached each step in order ($2 the steps, $3 the window).
/// Step k is reached at the user's first result under it at or after step k - 1's time
/// (enrollment for step 1), within the window from enrollment or from step k - 1. One CTE per
/// step, each a hash join of the users still in the funnel with the step's results.
pub fn funnel_counts(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    defs: &BTreeMap<String, MetricDef>,
    sources: &HashMap<String, SourceMetric>,
    f: &FunnelDef,
) -> HashMap<i64, Vec<u64>> {
    let ctes = funnel_ctes(client, nsp, defs, sources, f);
    let counted: Vec<String> = (1..=f.steps.len())
        .map(|k| format!("SELECT {k} AS step, variant_id, count(*) AS users FROM s{k} GROUP BY variant_id"))
        .collect();
    let sql = format!("WITH {} {}", ctes.join(", "), counted.join(" UNION ALL "));
    let mut out: HashMap<i64, Vec<u64>> = HashMap::new();
    let args = crate::sources::args(sources, vec![exp.id.into(), f.steps.clone().into(), f.window.clone().into()]);
    for row in client.select(sql.as_str(), None, &args).or_raise() {
        let step = row.get::<i32>(1).or_raise().unwrap() as usize;
        let variant: i64 = row.get(2).or_raise().unwrap();
        let users = row.get::<i64>(3).or_raise().unwrap() as u64;
        let reached = out.entry(variant).or_insert_with(|| vec![0; f.steps.len()]);
        reached[step - 1] = users;
    }
    out
}

/// The CTEs s0 (the enrolled users) to sK (those who reached step K): (variant_id, user_id,
/// t0, t) with $1 the experiment, $2 the steps, $3 the window.
fn funnel_ctes(
    client: &SpiClient<'_>,
    nsp: &str,
    defs: &BTreeMap<String, MetricDef>,
    sources: &HashMap<String, SourceMetric>,
    f: &FunnelDef,
) -> Vec<String> {
    let mut ctes = vec![format!(
        "s0 AS (SELECT a.variant_id, a.user_id, a.assigned_at AS t0, a.assigned_at AS t \
         FROM {nsp}.ab_assignments a WHERE a.experiment_id = $1)"
    )];
    for (i, step) in f.steps.iter().enumerate() {
        let k = i + 1;
        let bound = match (&f.window, f.from) {
            (None, _) => String::new(),
            (Some(_), FunnelFrom::Enrollment) => " HAVING min(r.recorded_at) <= p.t0 + $3::interval".into(),
            (Some(_), FunnelFrom::Previous) => " HAVING min(r.recorded_at) <= p.t + $3::interval".into(),
        };
        let bound = bound.replace("r.recorded_at", "r.t");
        ctes.push(format!(
            "s{k} AS (SELECT p.variant_id, p.user_id, p.t0, min(r.t) AS t FROM s{i} p \
             JOIN ({}) r ON r.user_id = p.user_id AND r.t >= p.t \
             GROUP BY p.variant_id, p.user_id, p.t0, p.t{bound})",
            times_of(client, nsp, defs, sources, step, &format!("($2::text[])[{k}]"))
        ));
    }
    ctes
}

/// Per variant id: (enrolled, too new, active). A user counts once enrolled at least M days
/// before the experiment's stop (or now, while it runs): only then has every day of [N, M)
/// been lived, so that new users never dilute the rate. Active: a result under the metric
/// on or after day N and before day M from enrollment.
#[allow(clippy::too_many_arguments)]
pub fn retention_counts(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    defs: &BTreeMap<String, MetricDef>,
    sources: &HashMap<String, SourceMetric>,
    metric: &str,
    first: i64,
    end: i64,
) -> HashMap<i64, (u64, u64, u64)> {
    let sql = format!(
        "{} SELECT a.variant_id, count(*), \
           count(*) FILTER (WHERE a.assigned_at + $4 * interval '1 day' > asof.t), \
           count(x.user_id) FILTER (WHERE a.assigned_at + $4 * interval '1 day' <= asof.t) \
         FROM {nsp}.ab_assignments a CROSS JOIN asof LEFT JOIN active x ON x.user_id = a.user_id \
         WHERE a.experiment_id = $1 GROUP BY a.variant_id",
        retention_ctes(client, nsp, defs, sources, metric)
    );
    let args =
        crate::sources::args(sources, vec![exp.id.into(), metric.into(), (first as f64).into(), (end as f64).into()]);
    client
        .select(sql.as_str(), None, &args)
        .or_raise()
        .map(|row| {
            let get = |i| row.get::<i64>(i).or_raise().unwrap() as u64;
            (row.get::<i64>(1).or_raise().unwrap(), (get(2), get(3), get(4)))
        })
        .collect()
}

/// WITH asof (the time the analysis is as of) and active (the users active in the days
/// [$3, $4) after enrollment), with $1 the experiment and $2 the metric.
fn retention_ctes(
    client: &SpiClient<'_>,
    nsp: &str,
    defs: &BTreeMap<String, MetricDef>,
    sources: &HashMap<String, SourceMetric>,
    metric: &str,
) -> String {
    format!(
        "WITH asof AS (SELECT coalesce(e.stopped_at, now()) AS t FROM {nsp}.ab_experiments e WHERE e.id = $1), \
         active AS (SELECT DISTINCT r.user_id FROM ({}) r \
           JOIN {nsp}.ab_assignments a ON a.experiment_id = $1 AND a.user_id = r.user_id \
           WHERE r.t >= a.assigned_at + $3 * interval '1 day' AND r.t < a.assigned_at + $4 * interval '1 day')",
        times_of(client, nsp, defs, sources, metric, "$2")
    )
}

/// In a cluster-randomized experiment: per variant id, the cluster totals of a funnel's
/// completers or a retention metric's active users among those who count (the users of
/// `per_variant`, each a 0 or 1), grouped by the attribute `unit`. None for another metric.
pub fn cluster_totals(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    defs: &BTreeMap<String, MetricDef>,
    sources: &HashMap<String, SourceMetric>,
    def: &MetricDef,
    unit: &str,
) -> Option<HashMap<i64, ClusterTotals>> {
    use crate::analysis::cluster_totals as totals;
    if let Some(f) = def.funnel_of() {
        let with = format!("WITH {}", funnel_ctes(client, nsp, defs, sources, f).join(", "));
        let last = f.steps.len();
        let rows = format!(
            "{nsp}.ab_assignments a LEFT JOIN (SELECT user_id, 1::float8 AS y FROM s{last}) u ON u.user_id = a.user_id"
        );
        let args = vec![exp.id.into(), f.steps.clone().into(), f.window.clone().into(), unit.into()];
        return Some(totals(client, &with, &rows, "1", "", "$4", crate::sources::args(sources, args)));
    }
    let (metric, first, end) = def.retention_of()?;
    let rows = format!(
        "{nsp}.ab_assignments a CROSS JOIN asof LEFT JOIN (SELECT user_id, 1::float8 AS y FROM active) u ON u.user_id = a.user_id"
    );
    let args = vec![exp.id.into(), metric.into(), (first as f64).into(), (end as f64).into(), unit.into()];
    Some(totals(
        client,
        &retention_ctes(client, nsp, defs, sources, metric),
        &rows,
        "1",
        "AND a.assigned_at + $4 * interval '1 day' <= asof.t",
        "$5",
        crate::sources::args(sources, args),
    ))
}

/// In a cluster-randomized experiment, per step of a funnel: per variant id, the cluster totals
/// of the users who reached the step (y) over those who reached the one before, or were
/// enrolled for step 1 (x), grouped by the attribute `unit`. Each user is a 0 or 1 in both, so
/// the totals need only the counts per cluster and level (0: enrolled, k: reached step k),
/// and the users without the attribute, each a cluster of their own, add their counts to the
/// sums of squares and products.
fn funnel_step_clusters(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    defs: &BTreeMap<String, MetricDef>,
    sources: &HashMap<String, SourceMetric>,
    f: &FunnelDef,
    unit: &str,
) -> Vec<HashMap<i64, ClusterTotals>> {
    let steps = f.steps.len();
    let reached: Vec<String> = (1..=steps).map(|k| format!("SELECT {k} AS k, user_id FROM s{k}")).collect();
    let sql = format!(
        "WITH {}, reached AS ({}), \
         levels AS (SELECT r.k, a.variant_id AS g, a.attributes->>$4 AS cl, count(*)::float8 AS n FROM reached r \
                    JOIN {nsp}.ab_assignments a ON a.experiment_id = $1 AND a.user_id = r.user_id GROUP BY 1, 2, 3 \
                    UNION ALL \
                    SELECT 0, a.variant_id, a.attributes->>$4, count(*)::float8 FROM {nsp}.ab_assignments a \
                    WHERE a.experiment_id = $1 GROUP BY 2, 3), \
         keyed AS (SELECT k, g, cl, coalesce('c' || cl, 'n') AS key, n FROM levels) \
         SELECT s.k, e.g, count(*) FILTER (WHERE e.cl IS NOT NULL) + coalesce(sum(e.n) FILTER (WHERE e.cl IS NULL), 0), \
                sum(e.n), sum(coalesce(y.n, 0)), sum(coalesce(x.n, 0)), \
                sum(CASE WHEN e.cl IS NULL THEN coalesce(y.n, 0) ELSE coalesce(y.n, 0) * coalesce(y.n, 0) END), \
                sum(CASE WHEN e.cl IS NULL THEN coalesce(x.n, 0) ELSE coalesce(x.n, 0) * coalesce(x.n, 0) END), \
                sum(CASE WHEN e.cl IS NULL THEN coalesce(y.n, 0) ELSE coalesce(x.n, 0) * coalesce(y.n, 0) END) \
         FROM keyed e CROSS JOIN generate_series(1, {steps}) s(k) \
         LEFT JOIN keyed y ON y.k = s.k AND y.g = e.g AND y.key = e.key \
         LEFT JOIN keyed x ON x.k = s.k - 1 AND x.g = e.g AND x.key = e.key \
         WHERE e.k = 0 GROUP BY 1, 2",
        funnel_ctes(client, nsp, defs, sources, f).join(", "),
        reached.join(" UNION ALL ")
    );
    let args = vec![exp.id.into(), f.steps.clone().into(), f.window.clone().into(), unit.into()];
    let mut out = vec![HashMap::new(); steps];
    for row in client.select(sql.as_str(), None, &crate::sources::args(sources, args)).or_raise() {
        let k = row.get::<i32>(1).or_raise().unwrap() as usize;
        if (1..=steps).contains(&k) {
            out[k - 1].insert(row.get::<i64>(2).or_raise().unwrap(), crate::analysis::totals_at(&row, 3));
        }
    }
    out
}

/// Per variant id: the users at 1, and for a retention metric the users who count.
type PerVariant = (HashMap<i64, u64>, Option<HashMap<i64, u64>>);

/// For `ab_analyze`: a funnel's completers (users who reached its last step), or a retention
/// metric's active users, per variant, with the eligible users of a retention metric.
pub fn per_variant(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    defs: &BTreeMap<String, MetricDef>,
    sources: &HashMap<String, SourceMetric>,
    def: &MetricDef,
) -> Option<PerVariant> {
    if let Some(f) = def.funnel_of() {
        let counts = funnel_counts(client, nsp, exp, defs, sources, f);
        return Some((counts.into_iter().map(|(v, r)| (v, r.last().copied().unwrap_or(0))).collect(), None));
    }
    let (metric, first, end) = def.retention_of()?;
    let counts = retention_counts(client, nsp, exp, defs, sources, metric, first, end);
    let active = counts.iter().map(|(v, c)| (*v, c.2)).collect();
    let eligible = counts.iter().map(|(v, c)| (*v, c.0 - c.1)).collect();
    Some((active, Some(eligible)))
}

/// The experiment, settled as every analysis settles it, and `f` run with nested loops off.
/// The experiment's source metrics are read as in every analysis: as the caller, and checked
/// first (the same 22003 for a value out of range).
fn with_experiment<R>(
    r: ExperimentRef<'_>,
    f: impl FnOnce(&SpiClient<'_>, &str, &ExperimentRow, &HashMap<String, SourceMetric>) -> R,
) -> R {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        let sources = crate::analysis::source_metrics(client, &nsp, &exp);
        crate::analysis::reading_sources(&sources, || {
            crate::analysis::check_source_values(client, &nsp, &exp, &sources, None);
            f(client, &nsp, &exp, &sources)
        })
    })
}

type FunnelTableRow = (
    String,
    i32,
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
);

fn funnel_table(r: ExperimentRef<'_>) -> Vec<FunnelTableRow> {
    with_experiment(r, |client, nsp, exp, sources| {
        let defs = exp.metric_defs();
        let variants = catalog::variants(client, nsp, exp.id);
        let assigned: HashMap<i64, u64> = client
            .select(
                format!("SELECT variant_id, count(*) FROM {nsp}.ab_assignments WHERE experiment_id = $1 GROUP BY 1")
                    .as_str(),
                None,
                &[exp.id.into()],
            )
            .or_raise()
            .map(|row| (row.get::<i64>(1).or_raise().unwrap(), row.get::<i64>(2).or_raise().unwrap() as u64))
            .collect();
        let settings = crate::analysis::settings(exp);
        let mut out = Vec::new();
        for (name, def) in &defs {
            let Some(f) = def.funnel_of() else { continue };
            let counts = funnel_counts(client, nsp, exp, &defs, sources, f);
            let arms: Vec<FunnelArm> = variants
                .iter()
                .map(|v| FunnelArm {
                    variant: v.name.clone(),
                    is_control: v.is_control,
                    enrolled: assigned.get(&v.id).copied().unwrap_or(0),
                    reached: counts.get(&v.id).cloned().unwrap_or_else(|| vec![0; f.steps.len()]),
                })
                .collect();
            let clusters = match exp.randomization_unit.as_deref() {
                Some(unit) => funnel_step_clusters(client, nsp, exp, &defs, sources, f, unit)
                    .iter()
                    .map(|step| variants.iter().map(|v| step.get(&v.id).copied().unwrap_or_default()).collect())
                    .collect(),
                None => vec![],
            };
            for row in funnel_rows(&settings, def.direction, &arms, &clusters) {
                out.push((
                    name.clone(),
                    row.step as i32,
                    f.steps[row.step - 1].clone(),
                    row.variant,
                    row.is_control,
                    row.users as i64,
                    row.share,
                    row.conversion,
                    row.diff,
                    row.ci_lower,
                    row.ci_upper,
                    row.p_value,
                ));
            }
        }
        out
    })
}

type RetentionTableRow =
    (String, String, bool, i64, i64, i64, i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>);

fn retention_table(r: ExperimentRef<'_>) -> Vec<RetentionTableRow> {
    with_experiment(r, |client, nsp, exp, sources| {
        let defs = exp.metric_defs();
        let variants = catalog::variants(client, nsp, exp.id);
        let settings = crate::analysis::settings(exp);
        let mut out = Vec::new();
        for (name, def) in &defs {
            let Some((metric, first, end)) = def.retention_of() else { continue };
            let counts = retention_counts(client, nsp, exp, &defs, sources, metric, first, end);
            let arms: Vec<RetentionArm> = variants
                .iter()
                .map(|v| {
                    let (enrolled, too_new, active) = counts.get(&v.id).copied().unwrap_or_default();
                    RetentionArm { variant: v.name.clone(), is_control: v.is_control, enrolled, too_new, active }
                })
                .collect();
            let clusters: Vec<ClusterTotals> = match exp.randomization_unit.as_deref() {
                Some(unit) => {
                    let totals = cluster_totals(client, nsp, exp, &defs, sources, def, unit).unwrap_or_default();
                    variants.iter().map(|v| totals.get(&v.id).copied().unwrap_or_default()).collect()
                }
                None => vec![],
            };
            for row in retention_rows(&settings, def.direction, &arms, &clusters) {
                out.push((
                    name.clone(),
                    row.variant,
                    row.is_control,
                    row.enrolled as i64,
                    row.too_new as i64,
                    row.eligible as i64,
                    row.active as i64,
                    row.rate,
                    row.diff,
                    row.ci_lower,
                    row.ci_upper,
                    row.p_value,
                ));
            }
        }
        out
    })
}

/// Per funnel metric, step and variant: the users who reached the step in order, their share
/// of the enrolled, the conversion from the previous step and each treatment's difference from
/// the control in it (delta method; a z-test on the share for step 1).
#[pg_extern(stable, parallel_safe)]
fn ab_funnel(
    experiment: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(metric_name, String),
        name!(step, i32),
        name!(step_metric, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(users, i64),
        name!(share, Option<f64>),
        name!(conversion, Option<f64>),
        name!(conversion_diff, Option<f64>),
        name!(ci_lower, Option<f64>),
        name!(ci_upper, Option<f64>),
        name!(p_value, Option<f64>),
    ),
> {
    TableIterator::new(funnel_table(ExperimentRef::Name(required(experiment, "experiment"))))
}

#[pg_extern(name = "ab_funnel", stable, parallel_safe)]
fn ab_funnel_by_id(
    experiment: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(metric_name, String),
        name!(step, i32),
        name!(step_metric, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(users, i64),
        name!(share, Option<f64>),
        name!(conversion, Option<f64>),
        name!(conversion_diff, Option<f64>),
        name!(ci_lower, Option<f64>),
        name!(ci_upper, Option<f64>),
        name!(p_value, Option<f64>),
    ),
> {
    TableIterator::new(funnel_table(ExperimentRef::Id(required(experiment, "experiment"))))
}

/// Per retention metric and variant: the users enrolled, those too new to count, the eligible
/// and active ones, the rate and each treatment's difference from the control (z-test).
#[pg_extern(stable, parallel_safe)]
fn ab_retention(
    experiment: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(metric_name, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(enrolled, i64),
        name!(too_new, i64),
        name!(eligible, i64),
        name!(active, i64),
        name!(rate, Option<f64>),
        name!(diff, Option<f64>),
        name!(ci_lower, Option<f64>),
        name!(ci_upper, Option<f64>),
        name!(p_value, Option<f64>),
    ),
> {
    TableIterator::new(retention_table(ExperimentRef::Name(required(experiment, "experiment"))))
}

#[pg_extern(name = "ab_retention", stable, parallel_safe)]
fn ab_retention_by_id(
    experiment: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(metric_name, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(enrolled, i64),
        name!(too_new, i64),
        name!(eligible, i64),
        name!(active, i64),
        name!(rate, Option<f64>),
        name!(diff, Option<f64>),
        name!(ci_lower, Option<f64>),
        name!(ci_upper, Option<f64>),
        name!(p_value, Option<f64>),
    ),
> {
    TableIterator::new(retention_table(ExperimentRef::Id(required(experiment, "experiment"))))
}
