//! `ab_adjusted`: each metric with `covariates`, adjusted for them (Lin's regression
//! adjustment, `ab_core::stats::regression`). Two aggregate passes per metric over one row
//! per analysed user (variant, value, covariates): per-arm means and centered
//! cross-products, then, with the first pass's fits, per-arm sums of e^2 z z' (per cluster
//! sums of e z with a cluster design). Nothing per user reaches Rust.

use std::collections::HashMap;

use ab_core::analysis::adjusted::{self, AdjustedArm, AdjustedRow};
use ab_core::definition::{Adjustment, MetricDef, MAX_STRATUM_LEVELS};
use ab_core::stats::regression::{ArmStats, Meat};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::analysis::{metric_cap, metric_order, per_user_of_metric, reading_sources, source_metrics};
use crate::catalog::{self, ExperimentRef, ExperimentRow, VariantRow};
use crate::errors::SpiExt;
use crate::sources::SourceMetric;

/// A float8 literal SQL reads back exactly (finite: fits of finite values).
fn lit(x: f64) -> String {
    format!("'{x:e}'::float8")
}

/// One metric's design: the SQL of its rows (g variant id, y, x1..xp) and its text
/// parameters ($3: metric names, attribute names and levels, referenced by index).
struct Design {
    sql: String,
    texts: Vec<String>,
    p: usize,
    first_is_value: bool,
}

fn design(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    name: &str,
    def: &MetricDef,
    list: &[Adjustment],
    from_state: bool,
    sources: &HashMap<String, SourceMetric>,
) -> Design {
    let uncapped = per_user_of_metric(client, nsp, from_state, name, def.aggregation, "$2", None, sources);
    let cap = metric_cap(client, exp.id, name, def, &uncapped, sources);
    let per_user = per_user_of_metric(client, nsp, from_state, name, def.aggregation, "$2", cap, sources);
    let mut texts: Vec<String> = Vec::new();
    let mut text = |s: &str| {
        texts.push(s.to_string());
        format!("($3::text[])[{}]", texts.len())
    };
    let mut joins = String::new();
    let mut xs: Vec<String> = Vec::new();
    for (j, c) in list.iter().enumerate() {
        match c {
            Adjustment::PreValue(m) => match sources.get(m).and_then(|s| s.covariate_per_user(client, nsp)) {
                Some(cov) => {
                    joins.push_str(&format!(" LEFT JOIN ({cov}) c{j} ON c{j}.user_id = a.user_id"));
                    xs.push(format!("coalesce(c{j}.v, 0)::float8"));
                }
                None => {
                    let m = text(m);
                    joins.push_str(&format!(
                        " LEFT JOIN {nsp}.ab_covariates c{j} ON c{j}.experiment_id = $1 AND c{j}.metric_name = {m} \
                         AND c{j}.user_id = a.user_id"
                    ));
                    xs.push(format!("coalesce(c{j}.value, 0)::float8"));
                }
            },
            Adjustment::Stratum(s) => {
                let levels: Vec<Option<String>> = client
                    .select(
                        format!(
                            "SELECT DISTINCT attributes->>$2 FROM {nsp}.ab_assignments WHERE experiment_id = $1 \
                             ORDER BY 1 NULLS LAST LIMIT {}",
                            MAX_STRATUM_LEVELS + 2
                        )
                        .as_str(),
                        None,
                        &[exp.id.into(), s.attribute.as_str().into()],
                    )
                    .or_raise()
                    .map(|row| row.get::<String>(1).or_raise())
                    .collect();
                if levels.len() > MAX_STRATUM_LEVELS {
                    crate::errors::raise(
                        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                        format!(
                            "covariate attribute \"{}\" of metric \"{}\" takes more than {MAX_STRATUM_LEVELS} values in experiment \"{}\": too many strata to adjust for",
                            ab_core::names::printable(&s.attribute),
                            ab_core::names::printable(name),
                            ab_core::names::printable(&exp.name)
                        ),
                        Some("adjust for a coarser attribute, or break the results down with ab_breakdown".into()),
                    );
                }
                let attr = text(&s.attribute);
                // One indicator per level but the first: users without the attribute are a level.
                for level in levels.iter().skip(1) {
                    match level {
                        Some(l) => {
                            let l = text(l);
                            xs.push(format!("(a.attributes->>{attr} IS NOT DISTINCT FROM {l})::int::float8"));
                        }
                        None => xs.push(format!("(a.attributes->>{attr} IS NULL)::int::float8")),
                    }
                }
            }
        }
    }
    let (y, from) = if def.silent_users_are_zero() {
        (
            "coalesce(u.v, 0)::float8",
            format!("{nsp}.ab_assignments a LEFT JOIN ({per_user}) u ON u.user_id = a.user_id"),
        )
    } else {
        ("u.v::float8", format!("({per_user}) u JOIN {nsp}.ab_assignments a ON a.user_id = u.user_id"))
    };
    let columns: String = xs.iter().enumerate().map(|(k, x)| format!(", {x} AS x{}", k + 1)).collect();
    let sql = format!("SELECT a.variant_id AS g, {y} AS y{columns} FROM {from}{joins} WHERE a.experiment_id = $1");
    Design { sql, texts, p: xs.len(), first_is_value: matches!(list.first(), Some(Adjustment::PreValue(_))) }
}

/// Pass one: per variant, count, means and centered cross-products.
fn first_pass(
    client: &SpiClient<'_>,
    exp: &ExperimentRow,
    name: &str,
    d: &Design,
    sources: &HashMap<String, SourceMetric>,
) -> HashMap<i64, ArmStats> {
    let p = d.p;
    let means: Vec<String> = (1..=p).map(|k| format!("avg(x{k})")).collect();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for j in 1..=p {
        for k in j..=p {
            pairs.push((j, k));
        }
    }
    let cross: Vec<String> = pairs.iter().map(|(j, k)| format!("covar_pop(x{j}, x{k})")).collect();
    let xy: Vec<String> = (1..=p).map(|k| format!("covar_pop(x{k}, y)")).collect();
    let arr =
        |v: &[String]| if v.is_empty() { "'{}'::float8[]".to_string() } else { format!("ARRAY[{}]", v.join(", ")) };
    let sql = format!(
        "SELECT g, count(*), avg(y), coalesce(var_pop(y), 0), {}, {}, {} FROM ({}) d GROUP BY g",
        arr(&means),
        arr(&cross),
        arr(&xy),
        d.sql
    );
    let args = crate::sources::args(sources, vec![exp.id.into(), name.into(), d.texts.clone().into()]);
    client
        .select(sql.as_str(), None, &args)
        .or_raise()
        .map(|row| {
            let g: i64 = row.get(1).or_raise().unwrap();
            let n = row.get::<i64>(2).or_raise().unwrap() as f64;
            let get = |i: usize| -> Vec<f64> {
                row.get::<Vec<Option<f64>>>(i)
                    .or_raise()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|x| x.unwrap_or(0.0))
                    .collect()
            };
            let (means, cross, xy) = (get(5), get(6), get(7));
            let mut sxx = vec![vec![0.0; p]; p];
            for (i, (j, k)) in pairs.iter().enumerate() {
                sxx[j - 1][k - 1] = cross[i] * n;
                sxx[k - 1][j - 1] = cross[i] * n;
            }
            let stats = ArmStats {
                n,
                mean_y: row.get::<f64>(3).or_raise().unwrap_or(0.0),
                mean_x: means,
                sxx,
                sxy: xy.iter().map(|v| v * n).collect(),
                syy: row.get::<f64>(4).or_raise().unwrap_or(0.0) * n,
            };
            (g, stats)
        })
        .collect()
}

/// Pass two: per variant, the sums of e^2 z z' with the fits' residuals.
fn second_pass(
    client: &SpiClient<'_>,
    exp: &ExperimentRow,
    name: &str,
    d: &Design,
    ids: &[i64],
    arms: &[AdjustedArm],
    fits: &adjusted::Fits,
    sources: &HashMap<String, SourceMetric>,
) -> HashMap<i64, Meat> {
    let p = d.p;
    let mut cases = String::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(f) = &fits.fits[i] else { continue };
        let s = &arms[i].stats;
        let mut fitted = lit(s.mean_y);
        for &k in &f.kept {
            fitted.push_str(&format!(" + {} * (x{} - {})", lit(f.slopes[k]), k + 1, lit(s.mean_x[k])));
        }
        cases.push_str(&format!(" WHEN {id} THEN {fitted}"));
    }
    if cases.is_empty() {
        return HashMap::new();
    }
    // z = (1, x - center); the meat's entries (a <= b) in row-major order.
    let z = |k: usize| if k == 0 { "1".to_string() } else { format!("(x{k} - {})", lit(fits.center[k - 1])) };
    let mut sums = Vec::new();
    for a in 0..=p {
        for b in a..=p {
            sums.push(format!("sum(e * e * {} * {})", z(a), z(b)));
        }
    }
    let xcols: String = (1..=p).map(|k| format!(", x{k}")).collect();
    let sql = format!(
        "SELECT g, ARRAY[{}] FROM (SELECT g, y - CASE g{cases} END AS e{xcols} FROM ({}) d) r GROUP BY g",
        sums.join(", "),
        d.sql
    );
    let args = crate::sources::args(sources, vec![exp.id.into(), name.into(), d.texts.clone().into()]);
    client
        .select(sql.as_str(), None, &args)
        .or_raise()
        .filter_map(|row| {
            let g: i64 = row.get(1).or_raise().unwrap();
            let v: Vec<f64> =
                row.get::<Vec<Option<f64>>>(2).or_raise()?.into_iter().map(|x| x.unwrap_or(0.0)).collect();
            let mut m = vec![vec![0.0; p + 1]; p + 1];
            let mut i = 0;
            for a in 0..=p {
                for b in a..=p {
                    m[a][b] = v[i];
                    m[b][a] = v[i];
                    i += 1;
                }
            }
            Some((g, m))
        })
        .collect()
}

/// The rows of every metric with covariates, in the analysis's order.
fn run(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> Vec<(String, usize, AdjustedRow)> {
    let defs = exp.metric_defs();
    let adjusted_metrics: Vec<String> = metric_order(exp, &defs, &[])
        .into_iter()
        .filter(|m| defs.get(m).is_some_and(|d| d.covariates.is_some()))
        .collect();
    if adjusted_metrics.is_empty() {
        crate::errors::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "experiment \"{}\" has no metric with covariates: ab_adjusted adjusts the metrics whose definition lists \"covariates\"",
                ab_core::names::printable(&exp.name)
            ),
            Some("declare \"covariates\" on a metric when creating the experiment (see docs/definitions.md)".into()),
        );
    }
    let sources = source_metrics(client, nsp, exp);
    let variants: Vec<VariantRow> = catalog::variants(client, nsp, exp.id);
    let ids: Vec<i64> = variants.iter().map(|v| v.id).collect();
    let from_state = catalog::has_table(client, nsp, "ab_user_metrics");
    let settings = crate::analysis::settings(exp);
    reading_sources(&sources, || {
        crate::analysis::check_source_values(client, nsp, exp, &sources, None);
        let mut out = Vec::new();
        for name in &adjusted_metrics {
            let def = &defs[name];
            let list = def.covariates.as_deref().unwrap_or_default();
            let d = design(client, nsp, exp, name, def, list, from_state, &sources);
            let mut stats = first_pass(client, exp, name, &d, &sources);
            let arms: Vec<AdjustedArm> = variants
                .iter()
                .map(|v| AdjustedArm {
                    variant: v.name.clone(),
                    is_control: v.is_control,
                    stats: stats.remove(&v.id).unwrap_or_else(|| ArmStats::empty(d.p)),
                    clusters: None,
                })
                .collect();
            let fits = adjusted::fit(&arms);
            let mut meats = second_pass(client, exp, name, &d, &ids, &arms, &fits, &sources);
            let meats: Vec<Option<Meat>> = ids.iter().map(|id| meats.remove(id)).collect();
            for row in adjusted::rows(&settings, &arms, &fits, &meats, d.first_is_value) {
                out.push((name.clone(), d.p, row));
            }
        }
        out
    })
}

type Row = (
    String,
    String,
    bool,
    i64,
    i32,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<bool>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

fn adjusted_rows(r: ExperimentRef<'_>) -> Vec<Row> {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        run(client, &nsp, &exp)
            .into_iter()
            .map(|(metric, k, r)| {
                (
                    metric,
                    r.variant,
                    r.is_control,
                    r.users as i64,
                    k as i32,
                    r.adjusted_mean,
                    r.diff,
                    r.ci_lower,
                    r.ci_upper,
                    r.p_value,
                    r.p_value_adjusted,
                    r.significant,
                    r.std_error,
                    r.unadjusted_std_error,
                    r.variance_reduction,
                    r.variance_reduction_vs_cuped,
                )
            })
            .collect()
    })
}

/// Per metric with `covariates` and variant: the metric adjusted for its covariates (Lin's
/// regression adjustment, HC1 robust standard errors) against the control, with the share of
/// the variance removed against no adjustment and against single-covariate CUPED.
#[pg_extern(stable, parallel_safe)]
fn ab_adjusted(
    experiment: &str,
) -> TableIterator<
    'static,
    (
        name!(metric_name, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(users, i64),
        name!(covariates, i32),
        name!(adjusted_mean, Option<f64>),
        name!(diff, Option<f64>),
        name!(ci_lower, Option<f64>),
        name!(ci_upper, Option<f64>),
        name!(p_value, Option<f64>),
        name!(p_value_adjusted, Option<f64>),
        name!(significant, Option<bool>),
        name!(std_error, Option<f64>),
        name!(unadjusted_std_error, Option<f64>),
        name!(variance_reduction, Option<f64>),
        name!(variance_reduction_vs_cuped, Option<f64>),
    ),
> {
    TableIterator::new(adjusted_rows(ExperimentRef::Name(experiment)))
}

#[pg_extern(name = "ab_adjusted", stable, parallel_safe)]
fn ab_adjusted_by_id(
    experiment: i64,
) -> TableIterator<
    'static,
    (
        name!(metric_name, String),
        name!(variant, String),
        name!(is_control, bool),
        name!(users, i64),
        name!(covariates, i32),
        name!(adjusted_mean, Option<f64>),
        name!(diff, Option<f64>),
        name!(ci_lower, Option<f64>),
        name!(ci_upper, Option<f64>),
        name!(p_value, Option<f64>),
        name!(p_value_adjusted, Option<f64>),
        name!(significant, Option<bool>),
        name!(std_error, Option<f64>),
        name!(unadjusted_std_error, Option<f64>),
        name!(variance_reduction, Option<f64>),
        name!(variance_reduction_vs_cuped, Option<f64>),
    ),
> {
    TableIterator::new(adjusted_rows(ExperimentRef::Id(experiment)))
}
