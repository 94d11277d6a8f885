//! `ab_interactions`: the other experiments an experiment's users are also enrolled in,
//! whether the two assignments are independent and whether a shared metric's treatment effect
//! differs by arm of the other. `ab_differential_impact`: the segments of every breakdown
//! attribute whose effect differs from the rest's. The statistics are `ab_core::impact`.

use std::collections::{BTreeMap, HashMap};

use ab_core::analysis::{effective_moments, ArmInput};
use ab_core::definition::{Correction, MetricDef};
use ab_core::impact::{
    differential_impact, independence, interaction, interaction_with, AttributeInput, CellCross, Clusters,
};
use ab_core::names::printable;
use ab_core::stats::multiple::{benjamini_hochberg, holm};
use ab_core::stats::Moments;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::{self, ExperimentRef, ExperimentRow, VariantRow};
use crate::errors::{raise, required, SpiExt};
use crate::sources::SourceMetric;

/// The variants with the control first (index 0 of the statistics' arms).
fn control_first(variants: Vec<VariantRow>) -> Vec<VariantRow> {
    let (mut control, rest): (Vec<_>, Vec<_>) = variants.into_iter().partition(|v| v.is_control);
    control.extend(rest);
    control
}

/// The moments the tests use, users who recorded nothing counting as 0 where the metric says so.
fn effective(def: &MetricDef, assigned: u64, observed: Moments) -> Moments {
    let arm = ArmInput {
        variant: String::new(),
        is_control: false,
        assigned,
        observed,
        covariate: None,
        periods: vec![],
        ratio: None,
        quantile: None,
    };
    effective_moments(def, &arm)
}

fn moments_of(row: &pgrx::spi::SpiHeapTupleData<'_>, column: usize) -> Moments {
    let m: Vec<f64> =
        row.get::<Vec<Option<f64>>>(column).or_raise().unwrap().into_iter().map(|x| x.unwrap_or(0.0)).collect();
    Moments { n: m[0], mean: m[1], m2: m[2] }
}

type InteractionRow = (
    String,
    Option<String>,
    i64,
    Option<f64>,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<bool>,
);

fn interaction_rows(r: ExperimentRef<'_>) -> Vec<InteractionRow> {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        crate::breakdown::check_not_bandit(&exp, "interactions are");
        let sources = crate::analysis::source_metrics(client, &nsp, &exp);
        crate::analysis::reading_sources(&sources, || interactions(client, &nsp, &exp, &sources))
    })
}

fn interactions(
    client: &pgrx::spi::SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    sources: &HashMap<String, SourceMetric>,
) -> Vec<InteractionRow> {
    let shared = shared_assignments(client, nsp, exp.id, None).unwrap_or_default();
    interactions_of(client, nsp, exp, sources, shared, true)
}

/// Users in this experiment and another one, per other experiment and pair of variants.
type Shared = BTreeMap<i64, HashMap<(i64, i64), u64>>;

/// The other experiments that may share users with this one: every other one except those
/// that ran at disjoint times (one stopped before the other started; an experiment cannot
/// be restarted) and those of its layer that own a range disjoint from its own (the layer
/// gives each user one range). A catalog read: no assignment is read.
fn candidates(client: &pgrx::spi::SpiClient<'_>, nsp: &str, experiment: i64) -> Vec<i64> {
    // A schema before 0.3.0 has no layers.
    let layers = if catalog::has_table(client, nsp, "ab_layer_experiments") {
        format!(
            "AND NOT EXISTS (SELECT FROM {nsp}.ab_layer_experiments le JOIN {nsp}.ab_layer_experiments lo \
                               ON lo.layer_id = le.layer_id \
                             WHERE le.experiment_id = e.id AND lo.experiment_id = o.id \
                               AND (le.range_end <= lo.range_start OR lo.range_end <= le.range_start))"
        )
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT o.id FROM {nsp}.ab_experiments e JOIN {nsp}.ab_experiments o ON o.id <> e.id \
         WHERE e.id = $1 \
           AND NOT (e.started_at IS NOT NULL AND o.started_at IS NOT NULL \
                    AND (o.started_at > coalesce(e.stopped_at, 'infinity') \
                         OR e.started_at > coalesce(o.stopped_at, 'infinity'))) \
           {layers} \
         ORDER BY o.id"
    );
    client
        .select(sql.as_str(), None, &[experiment.into()])
        .or_raise()
        .map(|r| r.get::<i64>(1).or_raise().unwrap())
        .collect()
}

/// The users each candidate shares with the experiment, per pair of variants; the
/// candidates sharing none are left out. Each pair is first checked for a shared user with
/// the primary key alone ((experiment_id, user_id): a merge join of the two experiments'
/// index ranges, which stops at the first shared user, or when either range ends), then the
/// users per pair of variants are counted for those sharing some, in one join: the cost
/// grows with the sizes of the experiments compared, not with the whole assignments table.
/// `limit`: stop, returning `None`, once more than that many share users.
fn shared_assignments(
    client: &pgrx::spi::SpiClient<'_>,
    nsp: &str,
    experiment: i64,
    limit: Option<usize>,
) -> Option<Shared> {
    // A plain join with LIMIT 1: the merge join stops at the first shared user.
    let exists = format!(
        "SELECT 1 FROM {nsp}.ab_assignments a JOIN {nsp}.ab_assignments b ON b.user_id = a.user_id \
         WHERE a.experiment_id = $1 AND b.experiment_id = $2 LIMIT 1"
    );
    let mut sharing = Vec::new();
    for other in candidates(client, nsp, experiment) {
        if !client.select(exists.as_str(), Some(1), &[experiment.into(), other.into()]).or_raise().is_empty() {
            sharing.push(other);
            if limit.is_some_and(|l| sharing.len() > l) {
                return None;
            }
        }
    }
    let mut shared = Shared::new();
    if sharing.is_empty() {
        return Some(shared);
    }
    let counts = format!(
        "SELECT b.experiment_id, a.variant_id, b.variant_id, count(*) FROM {nsp}.ab_assignments a \
         JOIN {nsp}.ab_assignments b ON b.user_id = a.user_id \
         WHERE a.experiment_id = $1 AND b.experiment_id = ANY ($2) GROUP BY 1, 2, 3"
    );
    for row in client.select(counts.as_str(), None, &[experiment.into(), sharing.into()]).or_raise() {
        let other: i64 = row.get(1).or_raise().unwrap();
        let key = (row.get::<i64>(2).or_raise().unwrap(), row.get::<i64>(3).or_raise().unwrap());
        shared.entry(other).or_default().insert(key, row.get::<i64>(4).or_raise().unwrap() as u64);
    }
    Some(shared)
}

/// `interactions` on the shared users found; `check_sources`: whether to check the source
/// values (ab_summary's analysis has).
fn interactions_of(
    client: &pgrx::spi::SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    sources: &HashMap<String, SourceMetric>,
    shared: Shared,
    check_sources: bool,
) -> Vec<InteractionRow> {
    let variants = control_first(catalog::variants(client, nsp, exp.id));
    let index_a: HashMap<i64, usize> = variants.iter().enumerate().map(|(i, v)| (v.id, i)).collect();
    let defs = exp.metric_defs();
    let from_state = catalog::has_table(client, nsp, "ab_user_metrics");
    let recorded = crate::analysis::recorded_metrics(client, nsp, exp.id, table_name(from_state));
    let order: Vec<String> = crate::analysis::metric_order(exp, &defs, &recorded)
        .into_iter()
        .filter(|m| defs.get(m).is_none_or(|d| d.ratio_of().is_none() && d.quantile_of().is_none() && !d.is_composed()))
        .collect();
    // The same rule as every analysis, whether or not another experiment shares users.
    if check_sources {
        crate::analysis::check_source_values(client, nsp, exp, sources, Some(&order));
    }
    if shared.is_empty() {
        return vec![];
    }
    // Each metric's cap, over every user of this experiment, as its analysis caps it.
    let mut caps: HashMap<&str, Option<f64>> = HashMap::new();
    for name in &order {
        let def = defs.get(name).cloned().unwrap_or_default();
        let cap = def.cap.and_then(|_| {
            let uncapped = crate::analysis::per_user_of_metric(
                client,
                nsp,
                from_state,
                name,
                def.aggregation,
                "$2",
                None,
                sources,
            );
            crate::analysis::metric_cap(client, exp.id, name, &def, &uncapped, sources)
        });
        caps.insert(name.as_str(), cap);
    }
    // (other experiment, metric or None, shared users, independence p, the largest term, Wald p)
    struct Found {
        other: String,
        metric: Option<String>,
        users: i64,
        independence_p: Option<f64>,
        term: Option<(String, String, f64, f64)>,
        p_value: Option<f64>,
    }
    // Each other experiment: its variants, the users per pair of arms, and the metrics both have.
    struct Other {
        id: i64,
        name: String,
        variants: Vec<VariantRow>,
        index: HashMap<i64, usize>,
        users: Vec<Vec<u64>>,
        independence_p: Option<f64>,
        metrics: Vec<String>,
        /// Whose assignment's attribute (and which) clusters the pair's users: None per user.
        clustering: Pairing,
    }
    let mut others = Vec::new();
    for (other_id, counts) in shared {
        let Some(other) = catalog::find_experiment(client, nsp, ExperimentRef::Id(other_id)) else { continue };
        let other_variants = control_first(catalog::variants(client, nsp, other_id));
        let index_b: HashMap<i64, usize> = other_variants.iter().enumerate().map(|(i, v)| (v.id, i)).collect();
        let mut users = vec![vec![0u64; other_variants.len()]; variants.len()];
        for (&(va, vb), &n) in &counts {
            if let (Some(&a), Some(&b)) = (index_a.get(&va), index_b.get(&vb)) {
                users[a][b] += n;
            }
        }
        let table: Vec<Vec<f64>> = users.iter().map(|r| r.iter().map(|&n| n as f64).collect()).collect();
        let other_recorded = crate::analysis::recorded_metrics(client, nsp, other_id, table_name(from_state));
        let other_defs = other.metric_defs();
        let mut clustering = pairing(exp.randomization_unit.as_deref(), other.randomization_unit.as_deref());
        // One unit only if the two split the shared users alike: an attribute of the same
        // name holding other values (teams of another size) is another unit.
        if let Pairing::By { unit, both: true, .. } = &clustering {
            if !same_clusters(client, nsp, exp.id, other_id, unit) {
                clustering = Pairing::Unsupported;
            }
        }
        let independence_p = match &clustering {
            Pairing::PerUser | Pairing::By { both: false, .. } => independence(&table).map(|c| c.p_value),
            // Both split whole clusters of the same unit: the clusters are the units counted.
            Pairing::By { unit, both: true, .. } => {
                let clusters = clusters_per_pair(
                    client,
                    nsp,
                    exp.id,
                    other_id,
                    unit,
                    &index_a,
                    &index_b,
                    variants.len(),
                    other_variants.len(),
                );
                independence(&clusters).map(|c| c.p_value)
            }
            Pairing::Unsupported => None,
        };
        others.push(Other {
            id: other_id,
            name: other.name.clone(),
            independence_p,
            clustering,
            metrics: order
                .iter()
                .filter(|m| other_defs.contains_key(*m) || other_recorded.contains(m))
                .cloned()
                .collect(),
            variants: other_variants,
            index: index_b,
            users,
        });
    }
    // Each metric's capped per-user values ($1 the experiment, $2 the metric).
    let per_user_of = |name: &str| {
        let def = defs.get(name).cloned().unwrap_or_default();
        crate::analysis::per_user_of_metric(client, nsp, from_state, name, def.aggregation, "$2", caps[name], sources)
    };
    // Per metric, the cells of every other experiment having it, from one read of this
    // experiment's per-user values (not one per other experiment). A metric this experiment
    // has no value of (recorded or read) leaves every cell empty.
    let mut cells: HashMap<(i64, &str), Vec<Vec<Moments>>> = HashMap::new();
    for name in &order {
        let ids: Vec<i64> = others.iter().filter(|o| o.metrics.contains(name)).map(|o| o.id).collect();
        if ids.is_empty() || !(recorded.contains(name) || sources.contains_key(name.as_str())) {
            continue;
        }
        let per_user = per_user_of(name);
        let sql = format!(
            "SELECT b.experiment_id, u.variant_id, b.variant_id, {nsp}.ab_moments(u.v) FROM ({per_user}) u \
             JOIN {nsp}.ab_assignments b ON b.experiment_id = ANY ($3) AND b.user_id = u.user_id GROUP BY 1, 2, 3"
        );
        let by_id: HashMap<i64, &Other> = others.iter().map(|o| (o.id, o)).collect();
        for row in client
            .select(
                sql.as_str(),
                None,
                &crate::sources::args(sources, vec![exp.id.into(), name.as_str().into(), ids.into()]),
            )
            .or_raise()
        {
            let other: i64 = row.get(1).or_raise().unwrap();
            let va: i64 = row.get(2).or_raise().unwrap();
            let vb: i64 = row.get(3).or_raise().unwrap();
            let Some(o) = by_id.get(&other) else { continue };
            if let (Some(&a), Some(&b)) = (index_a.get(&va), o.index.get(&vb)) {
                let table = cells
                    .entry((other, name.as_str()))
                    .or_insert_with(|| vec![vec![Moments::default(); o.variants.len()]; variants.len()]);
                table[a][b] = moments_of(&row, 4);
            }
        }
    }
    let mut found = Vec::new();
    for o in &others {
        let total: u64 = o.users.iter().flatten().sum();
        if o.metrics.is_empty() {
            found.push(Found {
                other: o.name.clone(),
                metric: None,
                users: total as i64,
                independence_p: o.independence_p,
                term: None,
                p_value: None,
            });
        }
        for name in &o.metrics {
            let def = defs.get(name).cloned().unwrap_or_default();
            let mut table = cells
                .remove(&(o.id, name.as_str()))
                .unwrap_or_else(|| vec![vec![Moments::default(); o.variants.len()]; variants.len()]);
            for (a, row) in table.iter_mut().enumerate() {
                for (b, cell) in row.iter_mut().enumerate() {
                    *cell = effective(&def, o.users[a][b], *cell);
                }
            }
            let result = match &o.clustering {
                Pairing::PerUser => interaction(&table),
                Pairing::By { unit, this_side, .. } => {
                    let per_user = per_user_of(name);
                    let pair =
                        PairKey { other: o.id, unit, this_side: *this_side, index_a: &index_a, index_b: &o.index };
                    let clusters = cell_cross(client, nsp, exp.id, name, &def, &per_user, sources, &pair);
                    interaction_with(&table, Some(&clusters))
                }
                Pairing::Unsupported => None,
            };
            found.push(Found {
                other: o.name.clone(),
                metric: Some(name.clone()),
                users: total as i64,
                independence_p: o.independence_p,
                term: result.as_ref().map(|r| {
                    let t = r.largest();
                    (variants[t.a].name.clone(), o.variants[t.b].name.clone(), t.estimate, t.se)
                }),
                p_value: result.map(|r| r.wald.p_value),
            });
        }
    }
    let ps: Vec<f64> = found.iter().filter_map(|f| f.p_value).collect();
    let adjusted = match crate::analysis::settings(exp).correction {
        Correction::Holm => holm(&ps),
        Correction::Bh => benjamini_hochberg(&ps),
    };
    let mut next = adjusted.into_iter();
    found
        .into_iter()
        .map(|f| {
            let p_adjusted = f.p_value.and_then(|_| next.next());
            let (variant, other_variant, estimate, se) = match f.term {
                Some((v, o, e, s)) => (Some(v), Some(o), Some(e), Some(s)),
                None => (None, None, None, None),
            };
            (
                f.other,
                f.metric,
                f.users,
                f.independence_p,
                variant,
                other_variant,
                estimate,
                se,
                f.p_value,
                p_adjusted,
                p_adjusted.map(|p| p < exp.alpha),
            )
        })
        .collect()
}

/// How the users two experiments share are clustered in the tests of their interaction.
enum Pairing {
    PerUser,
    /// By the attribute `unit` of this experiment's assignments (`this_side`) or the other's;
    /// `both`: both experiments are randomized by it, and their shared users have the same
    /// values of it.
    By {
        unit: String,
        this_side: bool,
        both: bool,
    },
    /// Randomized by two different units (or two attributes of one name that split the shared
    /// users differently): two-way clustering, which is not computed.
    Unsupported,
}

fn pairing(this: Option<&str>, other: Option<&str>) -> Pairing {
    match (this, other) {
        (None, None) => Pairing::PerUser,
        (Some(u), None) => Pairing::By { unit: u.into(), this_side: true, both: false },
        (None, Some(u)) => Pairing::By { unit: u.into(), this_side: false, both: false },
        (Some(u), Some(v)) if u == v => Pairing::By { unit: u.into(), this_side: true, both: true },
        _ => Pairing::Unsupported,
    }
}

/// The cluster of a shared user: the unit's value on the side's assignment, or the user alone
/// without one (prefixed so that the two kinds of key never meet).
fn cluster_key(side: &str, unit_param: &str) -> String {
    format!(
        "CASE WHEN {side}.attributes->>{unit_param} IS NULL THEN 'u' || a.user_id \
         ELSE 'c' || ({side}.attributes->>{unit_param}) END"
    )
}

/// Both experiments randomized by `unit`: the clusters per pair of arms (a: this one's).
#[allow(clippy::too_many_arguments)]
fn clusters_per_pair(
    client: &pgrx::spi::SpiClient<'_>,
    nsp: &str,
    experiment: i64,
    other: i64,
    unit: &str,
    index_a: &HashMap<i64, usize>,
    index_b: &HashMap<i64, usize>,
    arms_a: usize,
    arms_b: usize,
) -> Vec<Vec<f64>> {
    let sql = format!(
        "SELECT a.variant_id, b.variant_id, count(DISTINCT {}) FROM {nsp}.ab_assignments a \
         JOIN {nsp}.ab_assignments b ON b.user_id = a.user_id WHERE a.experiment_id = $1 AND b.experiment_id = $2 \
         GROUP BY 1, 2",
        cluster_key("a", "$3")
    );
    let mut table = vec![vec![0.0; arms_b]; arms_a];
    for row in client.select(sql.as_str(), None, &[experiment.into(), other.into(), unit.into()]).or_raise() {
        let (va, vb): (i64, i64) = (row.get(1).or_raise().unwrap(), row.get(2).or_raise().unwrap());
        if let (Some(&a), Some(&b)) = (index_a.get(&va), index_b.get(&vb)) {
            table[a][b] = row.get::<i64>(3).or_raise().unwrap() as f64;
        }
    }
    table
}

/// Whether every user the two experiments share has the same value of `unit` in both (or
/// none in either).
fn same_clusters(client: &pgrx::spi::SpiClient<'_>, nsp: &str, experiment: i64, other: i64, unit: &str) -> bool {
    let sql = format!(
        "SELECT 1 FROM {nsp}.ab_assignments a JOIN {nsp}.ab_assignments b ON b.user_id = a.user_id \
         WHERE a.experiment_id = $1 AND b.experiment_id = $2 AND a.attributes->>$3 IS DISTINCT FROM b.attributes->>$3 \
         LIMIT 1"
    );
    client.select(sql.as_str(), Some(1), &[experiment.into(), other.into(), unit.into()]).or_raise().is_empty()
}

/// The other experiment of a clustered pair and how its users are clustered.
struct PairKey<'a> {
    other: i64,
    unit: &'a str,
    this_side: bool,
    index_a: &'a HashMap<i64, usize>,
    index_b: &'a HashMap<i64, usize>,
}

/// The clusters of the users the two experiments share, and per pair of cells (arm of this
/// one, arm of the other) the sums over clusters of the products of the cells' totals in each
/// (`ab_core::impact::CellCross`); the users in a cell as the test counts them (silent users
/// as 0s where the metric says so).
#[allow(clippy::too_many_arguments)]
fn cell_cross(
    client: &pgrx::spi::SpiClient<'_>,
    nsp: &str,
    experiment: i64,
    metric: &str,
    def: &MetricDef,
    per_user: &str,
    sources: &HashMap<String, SourceMetric>,
    pair: &PairKey<'_>,
) -> Clusters {
    let rows = if def.silent_users_are_zero() {
        format!(
            "{nsp}.ab_assignments a JOIN {nsp}.ab_assignments b ON b.user_id = a.user_id \
             LEFT JOIN ({per_user}) u ON u.user_id = a.user_id"
        )
    } else {
        format!(
            "({per_user}) u JOIN {nsp}.ab_assignments a ON a.user_id = u.user_id \
             JOIN {nsp}.ab_assignments b ON b.user_id = u.user_id"
        )
    };
    let key = cluster_key(if pair.this_side { "a" } else { "b" }, "$4");
    let sql = format!(
        "WITH t AS (SELECT {key} AS k, a.variant_id AS va, b.variant_id AS vb, coalesce(sum(u.v), 0)::float8 AS y, \
                           count(*)::float8 AS n \
                    FROM {rows} WHERE a.experiment_id = $1 AND b.experiment_id = $3 GROUP BY 1, 2, 3) \
         SELECT x.va, x.vb, y.va, y.vb, sum(x.y * y.y), sum(x.y * y.n), sum(x.n * y.y), sum(x.n * y.n), \
                (SELECT count(DISTINCT k) FROM t)::float8 \
         FROM t x JOIN t y ON y.k = x.k GROUP BY 1, 2, 3, 4"
    );
    let args = vec![experiment.into(), metric.into(), pair.other.into(), pair.unit.into()];
    let mut out = Clusters::default();
    for row in client.select(sql.as_str(), None, &crate::sources::args(sources, args)).or_raise() {
        let cell = |i: usize| -> Option<(usize, usize)> {
            let (va, vb): (i64, i64) = (row.get(i).or_raise().unwrap(), row.get(i + 1).or_raise().unwrap());
            Some((*pair.index_a.get(&va)?, *pair.index_b.get(&vb)?))
        };
        let get = |i: usize| row.get::<f64>(i).or_raise().unwrap_or(0.0);
        out.clusters = get(9);
        if let (Some(x), Some(y)) = (cell(1), cell(3)) {
            out.cross.insert((x, y), CellCross { yy: get(5), yn: get(6), ny: get(7), nn: get(8) });
        }
    }
    out
}

fn table_name(from_state: bool) -> &'static str {
    if from_state {
        "ab_user_metrics"
    } else {
        "ab_results"
    }
}

type ImpactRow = (
    String,
    Option<String>,
    String,
    String,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<bool>,
    Option<f64>,
);

fn impact_rows(r: ExperimentRef<'_>) -> Vec<ImpactRow> {
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::get_experiment(client, &nsp, r);
        let _settled = crate::guard::settle(client, &nsp, &exp);
        if exp.breakdowns.is_empty() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("experiment \"{}\" stores no attribute for breakdowns", printable(&exp.name)),
                Some("list the attributes in \"breakdowns\" when creating an experiment".into()),
            );
        }
        crate::breakdown::check_not_bandit(&exp, "breakdowns are");
        if let Some(unit) = &exp.randomization_unit {
            // Its tests compare each segment with the rest per user: a cluster can lie on both sides.
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "experiment \"{}\" is randomized by \"{}\": differential impact is not supported in a cluster-randomized experiment yet",
                    printable(&exp.name),
                    printable(unit)
                ),
                Some("ab_breakdown compares each segment cluster-robust".into()),
            );
        }
        let sources = crate::analysis::source_metrics(client, &nsp, &exp);
        crate::analysis::reading_sources(&sources, || impact(client, &nsp, &exp, &sources))
    })
}

fn impact(
    client: &pgrx::spi::SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    sources: &HashMap<String, SourceMetric>,
) -> Vec<ImpactRow> {
    // One input per attribute and metric, the control's arm first.
    let mut keys = Vec::new();
    let mut inputs = Vec::new();
    for attribute in &exp.breakdowns {
        for m in crate::breakdown::metric_segments(client, nsp, exp, attribute, sources) {
            let Some(first) = m.segments.first() else { continue };
            let mut order: Vec<usize> = (0..first.arms.len()).collect();
            order.sort_by_key(|&i| !first.arms[i].is_control);
            let names: Vec<String> = order.iter().map(|&i| first.arms[i].variant.clone()).collect();
            let values: Vec<Option<String>> = m.segments.iter().map(|s| s.value.clone()).collect();
            let assigned: Vec<Vec<u64>> =
                m.segments.iter().map(|s| order.iter().map(|&i| s.arms[i].assigned).collect()).collect();
            let segments = m
                .segments
                .iter()
                .map(|s| order.iter().map(|&i| effective_moments(&m.def, &s.arms[i])).collect())
                .collect();
            inputs.push(AttributeInput { segments });
            keys.push((attribute.clone(), m.name, names, values, assigned));
        }
    }
    let out = differential_impact(&inputs);
    let mut rows = Vec::new();
    for ((attribute, metric, names, values, assigned), results) in keys.into_iter().zip(out) {
        for r in results {
            rows.push((
                attribute.clone(),
                values[r.segment].clone(),
                metric.clone(),
                names[r.arm].clone(),
                (assigned[r.segment][0] + assigned[r.segment][r.arm]) as i64,
                r.effect.map(|e| e.diff),
                r.rest.map(|e| e.diff),
                r.p_value,
                r.q_value,
                r.q_value.map(|q| q < exp.alpha),
                r.heterogeneity_p,
            ));
        }
    }
    rows
}

/// `ab_summary`'s lines on interactions (nothing when nothing is flagged). Experiments that
/// share no user with this one cost a catalog read and an index-only existence check each;
/// the interaction tests run only for those that do. A bandit has none.
pub(crate) fn summary_section(client: &pgrx::spi::SpiClient<'_>, nsp: &str, exp: &ExperimentRow) -> String {
    use ab_core::impact::{summary_lines, summary_too_many, InteractionFinding};
    if exp.bandit.is_some() {
        return String::new();
    }
    let sources = crate::analysis::source_metrics(client, nsp, exp);
    crate::analysis::reading_sources(&sources, || {
        // Bounded: analysing every experiment that shares users costs as much as their analyses.
        let limit = crate::SUMMARY_INTERACTIONS_LIMIT.get().max(0) as usize;
        let Some(shared) = shared_assignments(client, nsp, exp.id, Some(limit)) else {
            return summary_too_many(limit, exp.id);
        };
        if shared.is_empty() {
            return String::new();
        }
        let found: Vec<InteractionFinding> = interactions_of(client, nsp, exp, &sources, shared, false)
            .into_iter()
            .map(|r| InteractionFinding {
                other: r.0,
                metric: r.1,
                independence_p: r.3,
                interaction: match (r.4, r.5, r.6, r.9, r.10) {
                    (Some(v), Some(o), Some(e), Some(p), Some(true)) => Some((v, o, e, p)),
                    _ => None,
                },
            })
            .collect();
        summary_lines(&found)
    })
}

/// Per other experiment sharing users with this one and metric both record: whether the
/// assignments are independent (chi-square) and whether the treatment effect differs by arm
/// of the other (OLS interaction, HC2, Wald), adjusted across every row.
#[pg_extern(stable, parallel_safe)]
fn ab_interactions(
    experiment: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(other_experiment, String),
        name!(metric_name, Option<String>),
        name!(shared_users, i64),
        name!(independence_p, Option<f64>),
        name!(variant, Option<String>),
        name!(other_variant, Option<String>),
        name!(interaction, Option<f64>),
        name!(interaction_se, Option<f64>),
        name!(p_value, Option<f64>),
        name!(p_value_adjusted, Option<f64>),
        name!(flagged, Option<bool>),
    ),
> {
    TableIterator::new(interaction_rows(ExperimentRef::Name(required(experiment, "experiment"))))
}

#[pg_extern(name = "ab_interactions", stable, parallel_safe)]
fn ab_interactions_by_id(
    experiment: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(other_experiment, String),
        name!(metric_name, Option<String>),
        name!(shared_users, i64),
        name!(independence_p, Option<f64>),
        name!(variant, Option<String>),
        name!(other_variant, Option<String>),
        name!(interaction, Option<f64>),
        name!(interaction_se, Option<f64>),
        name!(p_value, Option<f64>),
        name!(p_value_adjusted, Option<f64>),
        name!(flagged, Option<bool>),
    ),
> {
    TableIterator::new(interaction_rows(ExperimentRef::Id(required(experiment, "experiment"))))
}

/// Per breakdown attribute, segment, metric and treatment: the effect among the segment's
/// users and among the rest, the test of their difference, its false-discovery-rate q-value
/// across every segment of every attribute, and the attribute's heterogeneity p-value.
#[pg_extern(stable, parallel_safe)]
fn ab_differential_impact(
    experiment: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(attribute, String),
        name!(value, Option<String>),
        name!(metric_name, String),
        name!(variant, String),
        name!(users, i64),
        name!(effect, Option<f64>),
        name!(effect_elsewhere, Option<f64>),
        name!(p_value, Option<f64>),
        name!(q_value, Option<f64>),
        name!(flagged, Option<bool>),
        name!(heterogeneity_p, Option<f64>),
    ),
> {
    TableIterator::new(impact_rows(ExperimentRef::Name(required(experiment, "experiment"))))
}

#[pg_extern(name = "ab_differential_impact", stable, parallel_safe)]
fn ab_differential_impact_by_id(
    experiment: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(attribute, String),
        name!(value, Option<String>),
        name!(metric_name, String),
        name!(variant, String),
        name!(users, i64),
        name!(effect, Option<f64>),
        name!(effect_elsewhere, Option<f64>),
        name!(p_value, Option<f64>),
        name!(q_value, Option<f64>),
        name!(flagged, Option<bool>),
        name!(heterogeneity_p, Option<f64>),
    ),
> {
    TableIterator::new(impact_rows(ExperimentRef::Id(required(experiment, "experiment"))))
}
