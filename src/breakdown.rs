//! `ab_breakdown`: the analysis split by an attribute the users had when they enrolled (one
//! of the experiment's `breakdowns`, stored in ab_assignments.attributes). The statistics
//! are `ab_core::breakdown`.

use std::collections::{BTreeMap, HashMap};

use ab_core::analysis::{ArmInput, Clustering};
use ab_core::breakdown::{breakdown, Segment};
use ab_core::names::printable;
use ab_core::stats::Moments;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::{self, ExperimentRef};
use crate::errors::{raise, required, SpiExt};

/// Most segments one breakdown reports: beyond that, the attribute is not a category.
const MAX_SEGMENTS: usize = 100;

type Row = (
    Option<String>,
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
    i32,
);

/// Refuses an attribute the experiment does not store, and a bandit experiment.
pub(crate) fn check_attribute(exp: &catalog::ExperimentRow, attribute: &str) {
    if !exp.breakdowns.iter().any(|b| b == attribute) {
        let hint = if exp.breakdowns.is_empty() {
            "it stores none: list the attributes in \"breakdowns\" when creating an experiment".to_string()
        } else {
            let listed: Vec<String> = exp.breakdowns.iter().map(|b| format!("\"{}\"", printable(b))).collect();
            format!("its breakdowns are {}", listed.join(", "))
        };
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "experiment \"{}\" stores no attribute \"{}\" for breakdowns{}",
                printable(&exp.name),
                ab_core::names::printable_at_most(attribute, 200),
                ab_core::names::did_you_mean(attribute, exp.breakdowns.iter().map(|s| s.as_str()))
            ),
            Some(hint),
        );
    }
    check_not_bandit(exp, "breakdowns are");
}

pub(crate) fn check_not_bandit(exp: &catalog::ExperimentRow, what: &str) {
    if exp.bandit.is_some() {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("experiment \"{}\" is a bandit: its {what} not supported yet", printable(&exp.name)),
            Some("a bandit's analysis is stratified by weight period, which segments would cut across".into()),
        );
    }
}

fn rows(r: ExperimentRef<'_>, attribute: Option<&str>) -> Vec<Row> {
    let attribute = required(attribute, "attribute");
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        check_attribute(&exp, attribute);
        let sources = crate::analysis::source_metrics(client, &nsp, &exp);
        crate::analysis::reading_sources(&sources, || analyse(client, &nsp, &exp, attribute, &sources))
    })
}

/// One metric's segments of an attribute: per segment, each variant's assigned users and
/// the moments of the per-user values of those who recorded the metric.
pub(crate) struct MetricSegments {
    pub name: String,
    pub def: ab_core::definition::MetricDef,
    pub cap: Option<f64>,
    pub segments: Vec<Segment>,
}

/// Every metric's segments (ratio and quantile metrics left out), in the analysis's order;
/// named segments in order, then the users who did not give the attribute.
pub(crate) fn metric_segments(
    client: &pgrx::spi::SpiClient<'_>,
    nsp: &str,
    exp: &catalog::ExperimentRow,
    attribute: &str,
    sources: &HashMap<String, crate::sources::SourceMetric>,
) -> Vec<MetricSegments> {
    let variants = catalog::variants(client, nsp, exp.id);
    let sql = format!(
        "SELECT a.attributes ->> $2, a.variant_id, count(*) FROM {nsp}.ab_assignments a \
         WHERE a.experiment_id = $1 GROUP BY 1, 2"
    );
    // Segment value (None: not given) -> variant -> users assigned.
    let mut assigned: BTreeMap<Option<String>, HashMap<i64, u64>> = BTreeMap::new();
    for row in client.select(sql.as_str(), None, &[exp.id.into(), attribute.into()]).or_raise() {
        let value: Option<String> = row.get(1).or_raise();
        let n = row.get::<i64>(3).or_raise().unwrap() as u64;
        assigned.entry(value).or_default().insert(row.get::<i64>(2).or_raise().unwrap(), n);
    }
    if assigned.len() > MAX_SEGMENTS {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "attribute \"{}\" has {} values among the enrolled users, a breakdown shows at most {MAX_SEGMENTS}",
                printable(attribute),
                assigned.len()
            ),
            Some("break the analysis down by an attribute with fewer values".into()),
        );
    }
    let defs = exp.metric_defs();
    let from_state = catalog::has_table(client, nsp, "ab_user_metrics");
    let table = if from_state { "ab_user_metrics" } else { "ab_results" };
    let recorded = crate::analysis::recorded_metrics(client, nsp, exp.id, table);
    let order = crate::analysis::metric_order(exp, &defs, &recorded);
    crate::analysis::check_source_values(client, nsp, exp, sources, Some(&order));
    let mut out = Vec::new();
    for name in order {
        let def = defs.get(&name).cloned().unwrap_or_default();
        if def.ratio_of().is_some() || def.quantile_of().is_some() || def.is_composed() {
            continue;
        }
        let per_user_of = |cap| {
            crate::analysis::per_user_of_metric(client, nsp, from_state, &name, def.aggregation, "$2", cap, sources)
        };
        let cap = match def.cap {
            None => None,
            Some(_) => crate::analysis::metric_cap(client, exp.id, &name, &def, &per_user_of(None), sources),
        };
        let per_user = per_user_of(cap);
        let sql = format!(
            "SELECT a.attributes ->> $3, u.variant_id, {nsp}.ab_moments(u.v) FROM ({per_user}) u \
             JOIN {nsp}.ab_assignments a ON a.experiment_id = $1 AND a.user_id = u.user_id GROUP BY 1, 2"
        );
        let mut observed: HashMap<(Option<String>, i64), Moments> = HashMap::new();
        for row in client
            .select(
                sql.as_str(),
                None,
                &crate::sources::args(sources, vec![exp.id.into(), name.as_str().into(), attribute.into()]),
            )
            .or_raise()
        {
            let m: Vec<f64> =
                row.get::<Vec<Option<f64>>>(3).or_raise().unwrap().into_iter().map(|x| x.unwrap_or(0.0)).collect();
            observed.insert(
                (row.get(1).or_raise(), row.get::<i64>(2).or_raise().unwrap()),
                Moments { n: m[0], mean: m[1], m2: m[2] },
            );
        }
        let clusters = exp.randomization_unit.as_deref().map(|unit| {
            // The segment's users in their clusters, as ab_analyze reads them (a silent user
            // is a 0 where the metric counts one).
            let rows = if def.silent_users_are_zero() {
                format!(
                    "{nsp}.ab_assignments a LEFT JOIN (SELECT u.user_id, u.v::float8 AS y FROM ({per_user}) u) u \
                     ON u.user_id = a.user_id"
                )
            } else {
                format!(
                    "(SELECT u.user_id, u.v::float8 AS y FROM ({per_user}) u) u \
                     JOIN {nsp}.ab_assignments a ON a.user_id = u.user_id"
                )
            };
            let args = vec![exp.id.into(), name.as_str().into(), attribute.into(), unit.into()];
            crate::analysis::cluster_totals_by(
                client,
                "",
                &rows,
                "1",
                "",
                "$4",
                "a.attributes ->> $3",
                crate::sources::args(sources, args),
            )
        });
        let values = assigned.keys().filter(|v| v.is_some()).chain(assigned.keys().filter(|v| v.is_none()));
        let segments = values
            .map(|value| Segment {
                value: value.clone(),
                arms: variants
                    .iter()
                    .map(|v| ArmInput {
                        variant: v.name.clone(),
                        is_control: v.is_control,
                        assigned: assigned[value].get(&v.id).copied().unwrap_or(0),
                        observed: observed.get(&(value.clone(), v.id)).copied().unwrap_or_default(),
                        covariate: None,
                        periods: vec![],
                        ratio: None,
                        quantile: None,
                    })
                    .collect(),
                clustering: clusters.as_ref().map(|totals| {
                    Clustering::Robust(
                        variants
                            .iter()
                            .map(|v| totals.get(&(value.clone(), v.id)).copied().unwrap_or_default())
                            .collect(),
                    )
                }),
            })
            .collect();
        out.push(MetricSegments { name, def, cap, segments });
    }
    out
}

fn analyse(
    client: &pgrx::spi::SpiClient<'_>,
    nsp: &str,
    exp: &catalog::ExperimentRow,
    attribute: &str,
    sources: &HashMap<String, crate::sources::SourceMetric>,
) -> Vec<Row> {
    let settings = crate::analysis::settings(exp);
    let mut out = Vec::new();
    for MetricSegments { name, def, cap, segments } in metric_segments(client, nsp, exp, attribute, sources) {
        let (results, comparisons) = breakdown(&settings, &name, &def, cap, segments);
        crate::analysis::check_finite(results.iter().map(|s| &s.result));
        for s in results {
            for (a, p_adjusted) in s.result.arms.iter().zip(s.p_adjusted) {
                let c = a.comparison;
                out.push((
                    s.value.clone(),
                    name.clone(),
                    a.variant.clone(),
                    a.is_control,
                    a.users as i64,
                    a.mean,
                    c.map(|c| c.diff),
                    c.map(|c| c.ci_lower),
                    c.map(|c| c.ci_upper),
                    c.and_then(|c| c.relative_lift),
                    c.map(|c| c.p_value),
                    p_adjusted,
                    p_adjusted.map(|p| p < exp.alpha),
                    comparisons as i32,
                ));
            }
        }
    }
    out
}

/// Per value of an attribute stored at enrollment, metric and variant: the comparison with
/// the control among the users with that value, p-values adjusted across every segment.
#[pg_extern(stable, parallel_safe)]
fn ab_breakdown(
    experiment: Option<&str>,
    attribute: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(value, Option<String>),
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
        name!(comparisons, i32),
    ),
> {
    TableIterator::new(rows(ExperimentRef::Name(required(experiment, "experiment")), attribute))
}

#[pg_extern(name = "ab_breakdown", stable, parallel_safe)]
fn ab_breakdown_by_id(
    experiment: Option<i64>,
    attribute: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(value, Option<String>),
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
        name!(comparisons, i32),
    ),
> {
    TableIterator::new(rows(ExperimentRef::Id(required(experiment, "experiment")), attribute))
}
