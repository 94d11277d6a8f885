//! `ab_adjusted`: each metric with `covariates`, adjusted for them (Lin's regression
//! adjustment, `ab_core::stats::regression`). Two aggregate passes per metric over one row
//! per analysed user (variant, value, covariates): per-arm means and centered
//! cross-products, then, with the first pass's fits, per-arm sums of e^2 z z' (per cluster
//! sums of e z with a cluster design). Nothing per user reaches Rust.

use std::collections::HashMap;

use ab_core::analysis::adjusted::{self, AdjustedArm, AdjustedRow};
use ab_core::definition::{Adjustment, MetricDef, MetricType, MAX_STRATUM_LEVELS};
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
    /// Rows (g, cl, y, x1..xp); cl is the user's cluster in a cluster-randomized experiment.
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
    unit: Option<&str>,
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
    // A user stored without a cluster (written by hand) is a cluster of their own.
    let cl = match unit {
        Some(u) => {
            let u = text(u);
            format!("coalesce('c' || (a.attributes->>{u}), 'u' || a.user_id)")
        }
        None => "NULL::text".to_string(),
    };
    let sql = format!(
        "SELECT a.variant_id AS g, {cl} AS cl, {y} AS y{columns} FROM {from}{joins} WHERE a.experiment_id = $1"
    );
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
        "SELECT g, count(*), avg(y), coalesce(var_pop(y), 0), {}, {}, {} FROM ({} OFFSET 0) d GROUP BY g",
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
    clustered: bool,
) -> HashMap<i64, (Meat, Option<u64>)> {
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
    // OFFSET 0 keeps each subquery's columns computed once per row (flattened, every
    // aggregate would recompute the covariates and the residual it refers to).
    let residuals = format!("SELECT g, cl, y - CASE g{cases} END AS e{xcols} FROM ({} OFFSET 0) d OFFSET 0", d.sql);
    let sql = if clustered {
        // Per cluster the sums s_a of e z_a, then per arm the sums of s_a s_b.
        let per_cluster: Vec<String> = (0..=p).map(|a| format!("sum(e * {}) AS s{a}", z(a))).collect();
        let mut products = Vec::new();
        for a in 0..=p {
            for b in a..=p {
                products.push(format!("sum(s{a} * s{b})"));
            }
        }
        format!(
            "SELECT g, ARRAY[{}], count(*) FROM (SELECT g, cl, {} FROM ({residuals}) r GROUP BY g, cl) t GROUP BY g",
            products.join(", "),
            per_cluster.join(", ")
        )
    } else {
        format!("SELECT g, ARRAY[{}], NULL::bigint FROM ({residuals}) r GROUP BY g", sums.join(", "))
    };
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
            Some((g, (m, row.get::<i64>(3).or_raise().map(|c| c as u64))))
        })
        .collect()
}

/// Whether `ab_adjusted` has rows for the experiment: a metric lists covariates, or the
/// experiment is cluster-randomized and has a continuous or binary metric (`run` refuses
/// the others).
pub fn applies(exp: &ExperimentRow) -> bool {
    exp.metric_defs().values().any(|d| {
        d.covariates.is_some()
            || exp.randomization_unit.is_some() && matches!(d.kind, MetricType::Continuous | MetricType::Binary)
    })
}

/// `ab_summary`'s lines for the adjusted analysis (empty when it does not apply).
pub fn summary_section(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> String {
    if !applies(exp) {
        return String::new();
    }
    // The summary stays readable when a stratum has too many values: ab_adjusted says why.
    if let Some(problem) = too_many_strata(client, nsp, exp) {
        return format!("Adjusted comparisons: not computed ({problem}; ab_adjusted says more).\n");
    }
    let rows: Vec<(String, AdjustedRow)> = run(client, nsp, exp).into_iter().map(|(m, _, r)| (m, r)).collect();
    adjusted::summary_lines(exp.alpha, exp.randomization_unit.as_deref(), &rows)
}

/// The first stratum attribute of a metric's covariates taking more values than may be
/// adjusted for, as a phrase.
fn too_many_strata(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> Option<String> {
    for (name, def) in exp.metric_defs() {
        for a in def.covariates.iter().flatten() {
            let Adjustment::Stratum(s) = a else { continue };
            let levels = client
                .select(
                    format!(
                        "SELECT count(*) FROM (SELECT DISTINCT attributes->>$2 FROM {nsp}.ab_assignments \
                         WHERE experiment_id = $1 LIMIT {}) l",
                        MAX_STRATUM_LEVELS + 2
                    )
                    .as_str(),
                    None,
                    &[exp.id.into(), s.attribute.as_str().into()],
                )
                .or_raise()
                .first()
                .get_one::<i64>()
                .or_raise()
                .unwrap_or(0);
            if levels as usize > MAX_STRATUM_LEVELS {
                return Some(format!(
                    "attribute \"{}\" of metric \"{}\" takes more than {MAX_STRATUM_LEVELS} values",
                    ab_core::names::printable(&s.attribute),
                    ab_core::names::printable(&name)
                ));
            }
        }
    }
    None
}

/// The rows of every metric with covariates, in the analysis's order.
fn run(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> Vec<(String, usize, AdjustedRow)> {
    let defs = exp.metric_defs();
    let unit = exp.randomization_unit.as_deref();
    // In a cluster-randomized experiment every continuous and binary metric, with its
    // covariates if it has any; otherwise the metrics with covariates.
    let adjusted_metrics: Vec<String> = metric_order(exp, &defs, &[])
        .into_iter()
        .filter(|m| {
            defs.get(m).is_some_and(|d| {
                d.covariates.is_some()
                    || unit.is_some() && matches!(d.kind, MetricType::Continuous | MetricType::Binary)
            })
        })
        .collect();
    if adjusted_metrics.is_empty() {
        crate::errors::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "experiment \"{}\" has no metric with covariates: ab_adjusted adjusts the metrics whose definition lists \"covariates\" (and every continuous or binary metric of a cluster-randomized experiment)",
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
            let d = design(client, nsp, exp, name, def, list, from_state, &sources, unit);
            let mut stats = first_pass(client, exp, name, &d, &sources);
            let mut arms: Vec<AdjustedArm> = variants
                .iter()
                .map(|v| AdjustedArm {
                    variant: v.name.clone(),
                    is_control: v.is_control,
                    stats: stats.remove(&v.id).unwrap_or_else(|| ArmStats::empty(d.p)),
                    clusters: None,
                })
                .collect();
            let fits = adjusted::fit(&arms);
            let mut meats = second_pass(client, exp, name, &d, &ids, &arms, &fits, &sources, unit.is_some());
            let mut meats: Vec<Option<(Meat, Option<u64>)>> = ids.iter().map(|id| meats.remove(id)).collect();
            if unit.is_some() {
                for (arm, m) in arms.iter_mut().zip(&meats) {
                    arm.clusters = Some(m.as_ref().and_then(|m| m.1).unwrap_or(0));
                }
            }
            let meats: Vec<Option<Meat>> = meats.iter_mut().map(|m| m.take().map(|m| m.0)).collect();
            for row in adjusted::rows(&settings, &arms, &fits, &meats, d.first_is_value) {
                out.push((name.clone(), d.p, row));
            }
        }
        out
    })
}

/// Clusters per variant of a cluster-randomized experiment (each cluster once, in the
/// variant of its users; a user stored without one is a cluster of their own).
pub fn clusters_per_variant(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow, unit: &str) -> HashMap<i64, f64> {
    client
        .select(
            format!(
                "SELECT variant_id, (count(*) FILTER (WHERE cl IS NOT NULL) + coalesce(sum(n) FILTER (WHERE cl IS NULL), 0))::bigint \
                 FROM (SELECT variant_id, attributes->>$2 AS cl, count(*) AS n FROM {nsp}.ab_assignments \
                       WHERE experiment_id = $1 GROUP BY 1, 2) c GROUP BY 1"
            )
            .as_str(),
            None,
            &[exp.id.into(), unit.into()],
        )
        .or_raise()
        .map(|row| (row.get::<i64>(1).or_raise().unwrap(), row.get::<i64>(2).or_raise().unwrap() as f64))
        .collect()
}

/// The sample ratio check of the randomization unit: clusters in a cluster-randomized
/// experiment, users otherwise.
fn srm_p_value(client: &SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> Option<f64> {
    let variants = catalog::variants(client, nsp, exp.id);
    let counts: HashMap<i64, f64> = match &exp.randomization_unit {
        Some(unit) => clusters_per_variant(client, nsp, exp, unit),
        None => client
            .select(
                format!("SELECT variant_id, count(*) FROM {nsp}.ab_assignments WHERE experiment_id = $1 GROUP BY 1")
                    .as_str(),
                None,
                &[exp.id.into()],
            )
            .or_raise()
            .map(|row| (row.get::<i64>(1).or_raise().unwrap(), row.get::<i64>(2).or_raise().unwrap() as f64))
            .collect(),
    };
    let observed: Vec<f64> = variants.iter().map(|v| counts.get(&v.id).copied().unwrap_or(0.0)).collect();
    let weights: Vec<f64> = variants.iter().map(|v| v.traffic_allocation).collect();
    ab_core::stats::srm::srm_test(&observed, &weights).ok().map(|r| r.p_value)
}

type Row = (
    String,
    String,
    bool,
    i64,
    Option<i64>,
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
    Option<f64>,
);

fn adjusted_rows(r: ExperimentRef<'_>) -> Vec<Row> {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        let rows = run(client, &nsp, &exp);
        let srm = srm_p_value(client, &nsp, &exp);
        rows.into_iter()
            .map(|(metric, k, r)| {
                (
                    metric,
                    r.variant,
                    r.is_control,
                    r.users as i64,
                    r.clusters.map(|c| c as i64),
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
                    srm,
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
        name!(clusters, Option<i64>),
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
        name!(srm_p_value, Option<f64>),
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
        name!(clusters, Option<i64>),
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
        name!(srm_p_value, Option<f64>),
    ),
> {
    TableIterator::new(adjusted_rows(ExperimentRef::Id(experiment)))
}
