//! `ab_timeline` and `ab_plot_timeline`: results over time. Day d's row is the comparison as
//! it stood at the end of day d (in the session's TimeZone): the users enrolled by then, each
//! with the value of what they had recorded by then. The statistics are `ab_core::timeline`.

use ab_core::analysis::MetricResult;
use ab_core::definition::{check_metric_name, Aggregation, MetricDef};
use ab_core::names::printable;
use ab_core::stats::Moments;
use ab_core::timeline::{timeline_with, Arm, Cell, ClusterCell, Enrolled};
use pgrx::datum::Date;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;
use std::collections::HashMap;

use crate::catalog::{self, ExperimentRef, ExperimentRow, VariantRow};
use crate::errors::{core_error, raise, required, SpiExt};

pub struct Timeline {
    pub days: Vec<(Date, String)>,
    /// Per metric, one analysis per day.
    pub metrics: Vec<Vec<MetricResult>>,
}

/// The cumulative per-user moments of each (variant, period) cell on each day it changed, in
/// one pass over the metric's results: a user's value changes only on a day the user
/// recorded something, so each (user, day) row adds the change of the user's value (and of
/// its square, and 1 on the user's first day) to its cell, and each cell's running sums are
/// its moments on that day. The sums are numeric, so they add without rounding, and
/// M2 = (n Σv² - (Σv)²) / n suffers no cancellation.
fn cells_sql(nsp: &str, aggregation: Aggregation, cap: Option<f64>, bandit: bool, daily: &str) -> String {
    let value = running_value(aggregation, cap);
    let (period, join) = if bandit {
        ("a.period", format!("JOIN {nsp}.ab_assignments a ON a.experiment_id = $1 AND a.user_id = d.user_id"))
    } else {
        ("0", String::new())
    };
    // A numeric below float8's smallest normal magnitude does not convert (22003): values near
    // 1e-300 are valid results, and their squares' sums are below it. As float8 arithmetic
    // would, such a mean or M2 becomes 0.
    let float8 = |e: &str| format!("(CASE WHEN abs({e}) < 1e-300 THEN 0 ELSE {e} END)::float8");
    let (mean, m2) = (float8("c.s1 / c.n"), float8("(c.n * c.s2 - c.s1 * c.s1) / c.n"));
    format!(
        "SELECT c.variant_id, c.period, c.day, c.n::float8, {mean}, {m2} \
         FROM (SELECT g.variant_id, g.period, g.day, sum(g.dn) OVER k AS n, sum(g.ds1) OVER k AS s1, sum(g.ds2) OVER k AS s2 \
               FROM (SELECT d.variant_id, {period} AS period, d.day, count(*) FILTER (WHERE d.prev IS NULL) AS dn, \
                            sum(d.v::numeric - coalesce(d.prev, 0)::numeric) AS ds1, \
                            sum(d.v::numeric * d.v::numeric - coalesce(d.prev, 0)::numeric * coalesce(d.prev, 0)::numeric) AS ds2 \
                     FROM (SELECT u.variant_id, u.user_id, u.day, u.v, \
                                  lag(u.v) OVER (PARTITION BY u.variant_id, u.user_id ORDER BY u.day) AS prev \
                           FROM (SELECT r.variant_id, r.user_id, r.day, {value} AS v \
                                 FROM ({daily}) r WHERE r.day <= $4 \
                                 WINDOW w AS (PARTITION BY r.variant_id, r.user_id ORDER BY r.day)) u) d \
                     {join} \
                     GROUP BY 1, 2, 3) g \
               WINDOW k AS (PARTITION BY g.variant_id, g.period ORDER BY g.day)) c \
         ORDER BY c.day"
    )
}

/// A user's value at the end of each day, over the rows `r` of `daily` (window `w`: the user's
/// rows up to that day), capped.
fn running_value(aggregation: Aggregation, cap: Option<f64>) -> String {
    let running = match aggregation {
        Aggregation::Mean => "sum(r.total) OVER w / sum(r.n) OVER w",
        Aggregation::Sum => "sum(r.total) OVER w",
        Aggregation::Count => "(sum(r.n) OVER w)::float8",
        Aggregation::Max => "max(r.mx) OVER w",
    };
    // The cap is a finite float8 written in full (Rust prints the shortest exact form).
    match cap {
        Some(cap) => format!("least({running}, '{cap:e}'::float8)"),
        None => running.to_string(),
    }
}

/// In a cluster-randomized experiment ($5 the unit): each arm's cluster totals
/// (`ab_core::analysis::ClusterTotals`) at the end of each day they changed, in one pass as
/// `cells_sql`: each (user, day) row adds the change of the user's value to its cluster's
/// running totals, each (cluster, day) row the change of the cluster's squares and products
/// to its arm's, and each arm's running sums are its totals on that day. A user counts in x
/// from the first value, or, where a silent user is a 0 (`silent`), from enrollment. A user
/// without the attribute is a cluster of their own.
fn cluster_cells_sql(nsp: &str, aggregation: Aggregation, cap: Option<f64>, silent: bool, daily: &str) -> String {
    let value = running_value(aggregation, cap);
    let (first, enrolled) = if silent {
        (
            "0",
            format!(
                "UNION ALL SELECT a.variant_id, a.attributes->>$5, CASE WHEN a.attributes->>$5 IS NULL THEN a.user_id END, \
                        greatest(a.assigned_at::date - $3::date, 0), 0, 1 \
                 FROM {nsp}.ab_assignments a WHERE a.experiment_id = $1 AND a.assigned_at::date - $3::date <= $4"
            ),
        )
    } else {
        ("(d.prev IS NULL)::int", String::new())
    };
    let float8 = |e: &str| format!("(CASE WHEN abs({e}) < 1e-300 THEN 0 ELSE {e} END)::float8");
    let sums: Vec<String> =
        ["dg", "dn", "dy", "dx", "dyy", "dxx", "dxy"].iter().map(|c| float8(&format!("sum(t.{c}) OVER k"))).collect();
    format!(
        "SELECT t.variant_id, t.day, {} FROM ( \
           SELECT c.variant_id, c.day, count(*) FILTER (WHERE c.x = c.dx AND c.x > 0) AS dg, sum(c.dx) AS dn, \
                  sum(c.dy) AS dy, sum(c.dx) AS dx, sum(c.y * c.y - (c.y - c.dy) * (c.y - c.dy)) AS dyy, \
                  sum(c.x * c.x - (c.x - c.dx) * (c.x - c.dx)) AS dxx, sum(c.x * c.y - (c.x - c.dx) * (c.y - c.dy)) AS dxy \
           FROM (SELECT g.variant_id, g.day, g.dy, g.dx, sum(g.dy) OVER c AS y, sum(g.dx) OVER c AS x \
                 FROM (SELECT e.variant_id, e.cl, e.own, e.day, sum(e.dy) AS dy, sum(e.dx) AS dx \
                       FROM (SELECT d.variant_id, a.attributes->>$5 AS cl, \
                                    CASE WHEN a.attributes->>$5 IS NULL THEN d.user_id END AS own, d.day, \
                                    d.v::numeric - coalesce(d.prev, 0)::numeric AS dy, {first}::numeric AS dx \
                             FROM (SELECT u.variant_id, u.user_id, u.day, u.v, \
                                          lag(u.v) OVER (PARTITION BY u.variant_id, u.user_id ORDER BY u.day) AS prev \
                                   FROM (SELECT r.variant_id, r.user_id, r.day, {value} AS v \
                                         FROM ({daily}) r WHERE r.day <= $4 \
                                         WINDOW w AS (PARTITION BY r.variant_id, r.user_id ORDER BY r.day)) u) d \
                             JOIN {nsp}.ab_assignments a ON a.experiment_id = $1 AND a.user_id = d.user_id \
                             {enrolled}) e \
                       GROUP BY 1, 2, 3, 4) g \
                 WINDOW c AS (PARTITION BY g.variant_id, g.cl, g.own ORDER BY g.day)) c \
           GROUP BY 1, 2) t \
         WINDOW k AS (PARTITION BY t.variant_id ORDER BY t.day) ORDER BY t.day",
        sums.join(", ")
    )
}

/// Per user and day: (variant_id, user_id, day, n, total, mx) of a recorded metric's results.
fn daily_results(nsp: &str) -> String {
    format!(
        "SELECT variant_id, user_id, greatest(recorded_at::date - $3::date, 0) AS day, \
                count(*) AS n, sum(metric_value) AS total, max(metric_value) AS mx \
         FROM {nsp}.ab_results WHERE experiment_id = $1 AND metric_name = $2 GROUP BY 1, 2, 3"
    )
}

fn check_interrupts() {
    pg_sys::check_for_interrupts!();
}

fn arm_of(variants: &[VariantRow], id: i64) -> usize {
    variants.iter().position(|v| v.id == id).unwrap_or(usize::MAX)
}

/// The metrics a timeline covers: `metric` alone, or every metric `ab_analyze` reports except
/// ratios, in its order.
fn metric_names(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow, metric: Option<&str>) -> Vec<String> {
    let defs = exp.metric_defs();
    let recorded = crate::analysis::recorded_metrics(client, nsp, exp.id, "ab_results");
    let order = crate::analysis::metric_order(exp, &defs, &recorded);
    let Some(metric) = metric else {
        return order
            .into_iter()
            .filter(|m| {
                defs.get(m).is_none_or(|d| d.ratio_of().is_none() && d.quantile_of().is_none() && !d.is_composed())
            })
            .collect();
    };
    let metric = check_metric_name(metric).unwrap_or_else(|e| core_error(e)).into_owned();
    if let Some((num, den)) = defs.get(&metric).and_then(|d| d.ratio_of()) {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("metric \"{}\" is a ratio: the timeline has no ratio metrics yet", printable(&metric)),
            Some(format!("its parts \"{}\" and \"{}\" each have a timeline", printable(num), printable(den))),
        );
    }
    if let Some(d) = defs.get(&metric).filter(|d| d.is_composed()) {
        let kind = if d.funnel.is_some() { "funnel" } else { "retention metric" };
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "metric \"{}\" is a {kind}: the timeline has no funnel or retention metrics yet",
                printable(&metric)
            ),
            Some("ab_funnel and ab_retention show them".into()),
        );
    }
    if defs.get(&metric).and_then(|d| d.quantile_of()).is_some() {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("metric \"{}\" is a quantile: the timeline has no quantile metrics yet", printable(&metric)),
            None,
        );
    }
    if !order.contains(&metric) {
        let listed: Vec<String> = order.iter().map(|n| format!("\"{}\"", printable(n))).collect();
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "experiment \"{}\" has no metric \"{}\"{}",
                printable(&exp.name),
                printable(&metric),
                ab_core::names::did_you_mean(&metric, order.iter().map(|s| s.as_str()))
            ),
            Some(format!("its metrics are {}", listed.join(", "))),
        );
    }
    vec![metric]
}

pub fn run(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow, metric: Option<&str>) -> Timeline {
    let names = metric_names(client, nsp, exp, metric);
    let sources = crate::analysis::source_metrics(client, nsp, exp);
    crate::analysis::reading_sources(&sources, || run_linear(client, nsp, exp, names, &sources))
}

/// The longest timeline: ten years of days.
const MAX_DAYS: usize = 3660;

fn run_linear(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    names: Vec<String>,
    sources: &HashMap<String, crate::sources::SourceMetric>,
) -> Timeline {
    crate::analysis::check_source_values(client, nsp, exp, sources, Some(&names));
    let first: Option<String> = client
        .select(
            format!("SELECT to_char(min(assigned_at)::date, 'YYYY-MM-DD') FROM {nsp}.ab_assignments WHERE experiment_id = $1")
                .as_str(),
            None,
            &[exp.id.into()],
        )
        .or_raise()
        .first()
        .get_one::<String>()
        .or_raise();
    let Some(first) = first else { return Timeline { days: vec![], metrics: vec![] } };
    // The last day a timeline can show: the experiment's stop, or today. A row dated later
    // (a clock gone wrong, a placeholder such as 9999-12-31) belongs to a day that has not
    // happened, and counting days up to it would make millions of analyses.
    let bound = client
        .select(
            format!(
                "SELECT greatest(least(coalesce(stopped_at, now()), now())::date - $2::date, 0) \
                 FROM {nsp}.ab_experiments WHERE id = $1"
            )
            .as_str(),
            Some(1),
            &[exp.id.into(), first.as_str().into()],
        )
        .or_raise()
        .first()
        .get_one::<i32>()
        .or_raise()
        .unwrap_or(0) as usize;
    // An enrollment dated centuries ago (written by hand) would ask for as many daily analyses.
    if bound + 1 > MAX_DAYS {
        crate::errors::raise(
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("a timeline covers at most {MAX_DAYS} days, and this one would cover {}", bound + 1),
            Some(format!("its first enrollment is {first}: check ab_assignments.assigned_at")),
        );
    }
    let variants = catalog::variants(client, nsp, exp.id);
    let bandit = exp.bandit.is_some() && catalog::has_table(client, nsp, "ab_allocations");
    let periods = if bandit { crate::analysis::periods(client, nsp, exp.id, &variants).weights.len() } else { 0 };
    let period = if bandit { "period" } else { "0" };
    let sql = format!(
        "SELECT variant_id, {period}, greatest(assigned_at::date - $2::date, 0), count(*) FROM {nsp}.ab_assignments \
         WHERE experiment_id = $1 GROUP BY 1, 2, 3 ORDER BY 3"
    );
    let enrolled: Vec<Enrolled> = client
        .select(sql.as_str(), None, &[exp.id.into(), first.as_str().into()])
        .or_raise()
        .map(|row| {
            pg_sys::check_for_interrupts!();
            Enrolled {
                arm: arm_of(&variants, row.get::<i64>(1).or_raise().unwrap()),
                period: row.get::<i32>(2).or_raise().unwrap() as usize,
                day: row.get::<i32>(3).or_raise().unwrap() as usize,
                users: row.get::<i64>(4).or_raise().unwrap() as u64,
            }
        })
        .filter(|e| e.day <= bound)
        .collect();
    let defs = exp.metric_defs();
    type Metric = (String, MetricDef, Option<f64>, Vec<Cell>, Vec<ClusterCell>);
    let mut per_metric: Vec<Metric> = Vec::new();
    for name in names {
        let def = defs.get(&name).cloned().unwrap_or_default();
        let from_state = catalog::has_table(client, nsp, "ab_user_metrics");
        let cap = match def.cap {
            None => None,
            Some(_) => {
                let per_user = crate::analysis::per_user_of_metric(
                    client,
                    nsp,
                    from_state,
                    &name,
                    def.aggregation,
                    "$2",
                    None,
                    sources,
                );
                crate::analysis::metric_cap(client, exp.id, &name, &def, &per_user, sources)
            }
        };
        let daily = match sources.get(&name) {
            Some(s) => s.daily(client, nsp, &first),
            None => daily_results(nsp),
        };
        let sql = cells_sql(nsp, def.aggregation, cap, bandit, &daily);
        let cells = client
            .select(
                sql.as_str(),
                None,
                &crate::sources::args(
                    sources,
                    vec![exp.id.into(), name.as_str().into(), first.as_str().into(), (bound as i32).into()],
                ),
            )
            .or_raise()
            .map(|row| {
                pg_sys::check_for_interrupts!();
                Cell {
                    arm: arm_of(&variants, row.get::<i64>(1).or_raise().unwrap()),
                    period: row.get::<i32>(2).or_raise().unwrap() as usize,
                    day: row.get::<i32>(3).or_raise().unwrap() as usize,
                    moments: Moments {
                        n: row.get::<f64>(4).or_raise().unwrap(),
                        mean: row.get::<f64>(5).or_raise().unwrap(),
                        m2: row.get::<f64>(6).or_raise().unwrap(),
                    },
                }
            })
            .collect();
        let clusters = match exp.randomization_unit.as_deref() {
            None => vec![],
            Some(unit) => {
                let sql = cluster_cells_sql(nsp, def.aggregation, cap, def.silent_users_are_zero(), &daily);
                let args = vec![
                    exp.id.into(),
                    name.as_str().into(),
                    first.as_str().into(),
                    (bound as i32).into(),
                    unit.into(),
                ];
                client
                    .select(sql.as_str(), None, &crate::sources::args(sources, args))
                    .or_raise()
                    .map(|row| {
                        pg_sys::check_for_interrupts!();
                        ClusterCell {
                            arm: arm_of(&variants, row.get::<i64>(1).or_raise().unwrap()),
                            day: row.get::<i32>(2).or_raise().unwrap() as usize,
                            totals: crate::analysis::totals_at(&row, 3),
                        }
                    })
                    .collect()
            }
        };
        per_metric.push((name, def, cap, cells, clusters));
    }
    let last = enrolled
        .iter()
        .map(|e| e.day)
        .chain(per_metric.iter().flat_map(|m| m.3.iter().map(|c| c.day)))
        .max()
        .unwrap_or(0)
        .min(bound);
    let days = client
        .select(
            "SELECT $1::date + i, to_char($1::date + i, 'YYYY-MM-DD') FROM generate_series(0, $2) i ORDER BY i",
            None,
            &[first.as_str().into(), (last as i32).into()],
        )
        .or_raise()
        .map(|row| (row.get::<Date>(1).or_raise().unwrap(), row.get::<String>(2).or_raise().unwrap()))
        .collect();
    let settings = crate::analysis::settings(exp);
    let arms: Vec<Arm> = variants.iter().map(|v| Arm { variant: v.name.clone(), is_control: v.is_control }).collect();
    let metrics = per_metric
        .iter()
        .map(|(name, def, cap, cells, clusters)| {
            timeline_with(
                &settings,
                name,
                def,
                *cap,
                &arms,
                periods,
                last + 1,
                cells,
                &enrolled,
                clusters,
                check_interrupts,
            )
        })
        .collect::<Vec<Vec<MetricResult>>>();
    crate::analysis::check_finite(metrics.iter().flatten());
    Timeline { days, metrics }
}

type Row = (
    Date,
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
    Option<String>,
);

fn rows(r: ExperimentRef<'_>, metric: Option<&str>) -> Vec<Row> {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        let t = run(client, &nsp, &exp, metric);
        let mut out = Vec::new();
        for days in &t.metrics {
            for ((day, _), m) in t.days.iter().zip(days) {
                for a in &m.arms {
                    let c = a.comparison;
                    out.push((
                        *day,
                        m.name.clone(),
                        a.variant.clone(),
                        a.is_control,
                        a.users as i64,
                        a.mean,
                        c.map(|c| c.diff),
                        c.map(|c| c.ci_lower),
                        c.map(|c| c.ci_upper),
                        c.and_then(|c| c.relative_lift),
                        c.map(|c| c.p_value),
                        c.map(|c| c.p_adjusted),
                        c.map(|c| c.significant),
                        c.map(|c| c.test.to_string()),
                    ));
                }
            }
        }
        out
    })
}

/// Per day since the first enrollment, metric and variant: the analysis of the data as it
/// stood at the end of that day (cumulative), for dashboards.
#[pg_extern(stable, parallel_safe)]
fn ab_timeline(
    experiment: Option<&str>,
    metric: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(day, Date),
        name!(metric_name, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(users, i64),
        name!(mean, Option<f64>),
        name!(diff, Option<f64>),
        name!(ci_lower, Option<f64>),
        name!(ci_upper, Option<f64>),
        name!(relative_lift, Option<f64>),
        name!(p_value, Option<f64>),
        name!(p_value_adjusted, Option<f64>),
        name!(significant, Option<bool>),
        name!(test, Option<String>),
    ),
> {
    TableIterator::new(rows(ExperimentRef::Name(required(experiment, "experiment")), metric))
}

#[pg_extern(name = "ab_timeline", stable, parallel_safe)]
fn ab_timeline_by_id(
    experiment: Option<i64>,
    metric: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(day, Date),
        name!(metric_name, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(users, i64),
        name!(mean, Option<f64>),
        name!(diff, Option<f64>),
        name!(ci_lower, Option<f64>),
        name!(ci_upper, Option<f64>),
        name!(relative_lift, Option<f64>),
        name!(p_value, Option<f64>),
        name!(p_value_adjusted, Option<f64>),
        name!(significant, Option<bool>),
        name!(test, Option<String>),
    ),
> {
    TableIterator::new(rows(ExperimentRef::Id(required(experiment, "experiment")), metric))
}

fn plot(r: ExperimentRef<'_>, metric: Option<&str>) -> String {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        let metric = metric.map(str::to_string).unwrap_or_else(|| exp.primary_metric.clone());
        let t = run(client, &nsp, &exp, Some(&metric));
        let labels: Vec<String> = t.days.iter().map(|(_, s)| s.clone()).collect();
        let results = t.metrics.first().map(|m| m.as_slice()).unwrap_or(&[]);
        let name = results.first().map(|m| m.name.clone()).unwrap_or(metric);
        ab_core::plot::timeline_plot(&exp.name, &name, &labels, results)
    })
}

/// An SVG line chart of each treatment's cumulative difference from the control on a metric
/// (the primary one by default), day by day, with its CI as a band.
#[pg_extern(stable, parallel_safe)]
fn ab_plot_timeline(experiment: Option<&str>, metric: default!(Option<&str>, "NULL")) -> String {
    plot(ExperimentRef::Name(required(experiment, "experiment")), metric)
}

#[pg_extern(name = "ab_plot_timeline", stable, parallel_safe)]
fn ab_plot_timeline_by_id(experiment: Option<i64>, metric: default!(Option<&str>, "NULL")) -> String {
    plot(ExperimentRef::Id(required(experiment, "experiment")), metric)
}
