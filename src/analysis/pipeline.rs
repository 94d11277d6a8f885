//! The analysis as a pipeline of steps (see `run_linear`).

use std::collections::{BTreeMap, HashMap};

use ab_core::analysis::{
    analyze_clustered, metric_input, ArmFrame, ClusterTotals, Clustering, MetricData, MetricResult, Observed,
};
use ab_core::bandit::srm_by_period;
use ab_core::definition::{MetricDef, MetricType, QuantileLevel};
use ab_core::stats::cuped::CoMoments;
use ab_core::stats::srm::{srm_test, SrmResult};
use ab_core::stats::Moments;
use pgrx::spi::SpiClient;

use super::reads::*;
use super::{settings, Analysis};
use crate::catalog::{self, ExperimentRow, VariantRow};
use crate::errors::SpiExt;
use crate::sources::SourceMetric;

/// The analysis in steps: what every metric shares (the frame), the caps, then what each kind
/// of metric reads (`MetricData`), then the statistics (`ab_core`). A new kind of metric adds
/// its read here and its part of `MetricData`.
pub(super) fn run_linear(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    sources: &HashMap<String, SourceMetric>,
) -> Analysis {
    let frame = read_frame(client, nsp, exp, sources);
    let caps = read_caps(client, nsp, exp, &frame, sources);
    let reader = Reader { client, nsp, exp, sources, frame: &frame, caps: &caps };
    let mut data: HashMap<String, MetricData> = HashMap::new();
    reader.read_observed(&mut data);
    reader.read_ratios(&mut data);
    reader.read_quantiles(&mut data);
    reader.read_composed(&mut data);
    reader.read_silent_covariates(&mut data);
    let clustering = reader.read_clusters();
    let metrics = reader.compute(&data, &clustering);
    Analysis { variants: frame.variants, assigned: frame.assigned, metrics, srm: frame.srm, source_reads: None }
}

/// What every metric's analysis shares: the variants and their assignments, the sample
/// ratio check, the experiment's switches (bandit periods, covariates, where per-user values
/// are kept) and the metrics recorded.
struct Frame {
    bandit: bool,
    variants: Vec<VariantRow>,
    assigned: HashMap<i64, u64>,
    periods: Option<Periods>,
    srm: Option<SrmResult>,
    has_covariates: bool,
    defs: BTreeMap<String, MetricDef>,
    /// Per-user values come from ab_user_metrics (one row per user and metric), or from the
    /// raw results on a schema that has no per-user state yet (before ALTER EXTENSION UPDATE).
    from_state: bool,
    recorded: Vec<String>,
}

impl Frame {
    fn per_user_table(&self) -> &'static str {
        if self.from_state {
            "ab_user_metrics"
        } else {
            "ab_results"
        }
    }

    /// The variants as `ab_core::analysis::metric_input` takes them.
    fn arms(&self) -> Vec<ArmFrame> {
        self.variants
            .iter()
            .map(|v| ArmFrame {
                id: v.id,
                variant: v.name.clone(),
                is_control: v.is_control,
                assigned: self.assigned.get(&v.id).copied().unwrap_or(0),
                assigned_per_period: match &self.periods {
                    None => vec![],
                    Some(p) => (0..p.weights.len()).map(|i| p.assigned.get(&(v.id, i)).copied().unwrap_or(0)).collect(),
                },
            })
            .collect()
    }
}

/// The first step. Its queries run in the order they always have: an experiment that several
/// checks would refuse is refused by the same one.
fn read_frame(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    sources: &HashMap<String, SourceMetric>,
) -> Frame {
    // A bandit's period cells read the sources without the check below: checked first. A
    // rollout's shares change at each step too: its analysis is stratified the same way.
    let bandit = (exp.bandit.is_some() || exp.rollout.is_some()) && catalog::has_table(client, nsp, "ab_allocations");
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
    // A cluster-randomized experiment splits clusters, not users: the check counts clusters.
    let clusters =
        exp.randomization_unit.as_deref().map(|u| crate::adjusted::clusters_per_variant(client, nsp, exp, u));
    let observed_counts: Vec<f64> = variants
        .iter()
        .map(|v| match &clusters {
            Some(c) => c.get(&v.id).copied().unwrap_or(0.0),
            None => assigned.get(&v.id).copied().unwrap_or(0) as f64,
        })
        .collect();
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
    let from_state = catalog::has_table(client, nsp, "ab_user_metrics");
    let recorded = recorded_metrics(client, nsp, exp.id, if from_state { "ab_user_metrics" } else { "ab_results" });
    Frame { bandit, variants, assigned, periods, srm, has_covariates, defs: exp.metric_defs(), from_state, recorded }
}

/// Capped metrics: each one's cap as an absolute value (a percentile's value in this data).
fn read_caps(
    client: &SpiClient<'_>,
    nsp: &str,
    exp: &ExperimentRow,
    frame: &Frame,
    sources: &HashMap<String, SourceMetric>,
) -> HashMap<String, f64> {
    frame
        .defs
        .iter()
        .filter_map(|(name, def)| {
            def.cap?;
            let per_user =
                per_user_of_metric(client, nsp, frame.from_state, name, def.aggregation, "$2", None, sources);
            Some((name.clone(), metric_cap(client, exp.id, name, def, &per_user, sources)?))
        })
        .collect()
}

/// The per-metric read steps, each filling its part of every metric's `MetricData`.
struct Reader<'a, 'c> {
    client: &'a SpiClient<'c>,
    nsp: &'a str,
    exp: &'a ExperimentRow,
    sources: &'a HashMap<String, SourceMetric>,
    frame: &'a Frame,
    caps: &'a HashMap<String, f64>,
}

impl Reader<'_, '_> {
    /// One row per user of `metric` (named by parameter `param`), capped.
    fn per_user_of(&self, metric: &str, param: &str) -> String {
        let aggregation = self.frame.defs.get(metric).map(|d| d.aggregation).unwrap_or_default();
        let (client, nsp, from_state) = (self.client, self.nsp, self.frame.from_state);
        per_user_of_metric(
            client,
            nsp,
            from_state,
            metric,
            aggregation,
            param,
            self.caps.get(metric).copied(),
            self.sources,
        )
    }

    /// Per metric and variant: the moments of the per-user values (with the covariate's
    /// co-moments), or of each weight period's cell in a bandit. One query per metric over
    /// one row per user (the unit of randomization), then per variant with mergeable
    /// aggregates. From raw results the per-user step is a GROUP BY, which a sharded cluster
    /// runs next to the data.
    fn read_observed(&self, data: &mut HashMap<String, MetricData>) {
        let (client, nsp, exp, sources, frame) = (self.client, self.nsp, self.exp, self.sources, self.frame);
        // Recorded metrics (none under a source metric's name counts), then those read from sources.
        let mut measured: Vec<String> = frame.recorded.iter().filter(|m| !sources.contains_key(*m)).cloned().collect();
        measured.extend(order_of_sources(exp, &frame.defs, sources));
        for metric in &measured {
            let per_user = self.per_user_of(metric, "$2");
            let covariate_source =
                sources.get(metric).filter(|_| !frame.bandit).and_then(|s| s.covariate_per_user(client, nsp));
            // A source metric's values (and its covariate source's) are checked in the same scan
            // (`check_source_values` only runs, to name the value, when one breaks the rule): the
            // largest magnitudes of the uncapped values, and the aggregates fed 0 in place of a
            // value out of range so that they finish (their result is then not used).
            let (per_user, v, cv, range) = match sources.get(metric) {
                Some(s) => {
                    let capped = match self.caps.get(metric) {
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
                        if covariate_source.is_some() {
                            ", max(abs(u.raw)), max(abs(c.v))"
                        } else {
                            ", max(abs(u.raw))"
                        },
                    )
                }
                None => (per_user, "u.v".to_string(), "c.v".to_string(), ""),
            };
            let sql = if let Some(cov) = &covariate_source {
                format!(
                    "SELECT u.variant_id, {nsp}.ab_comoments({v}, coalesce({cv}, 0)){range} FROM ({per_user}) u \
                     LEFT JOIN ({cov}) c ON c.user_id = u.user_id GROUP BY u.variant_id"
                )
            } else if frame.has_covariates {
                format!(
                    "SELECT u.variant_id, {nsp}.ab_comoments({v}, coalesce(c.value, 0)){range} FROM ({per_user}) u \
                     LEFT JOIN {nsp}.ab_covariates c ON c.experiment_id = $1 AND c.metric_name = $2 AND c.user_id = u.user_id \
                     GROUP BY u.variant_id"
                )
            } else {
                format!("SELECT u.variant_id, {nsp}.ab_moments({v}){range} FROM ({per_user}) u GROUP BY u.variant_id")
            };
            let with_covariate = frame.has_covariates || covariate_source.is_some();
            let metric_data = data.entry(metric.clone()).or_default();
            if frame.periods.is_some() {
                let cells = period_cells(client, nsp, exp.id, metric, &per_user, sources);
                for ((v, _), m) in &cells {
                    let o = metric_data.observed.entry(*v).or_default();
                    o.moments = o.moments.merge(m);
                }
                metric_data.periods = cells;
                continue;
            }
            let per_variant = &mut metric_data.observed;
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
    }

    /// Ratio metrics: co-moments of (numerator, denominator) per variant over the users who
    /// recorded either; the assigned users who recorded neither are added as zeros
    /// (`ab_core::analysis::metric_input`).
    fn read_ratios(&self, data: &mut HashMap<String, MetricData>) {
        let (client, nsp, exp, sources) = (self.client, self.nsp, self.exp, self.sources);
        for (name, def) in &self.frame.defs {
            let Some((num, den)) = def.ratio_of() else { continue };
            let sql = format!(
                "SELECT coalesce(n.variant_id, d.variant_id), {nsp}.ab_comoments(coalesce(n.v, 0), coalesce(d.v, 0)) \
                 FROM ({}) n FULL JOIN ({}) d ON d.user_id = n.user_id AND d.variant_id = n.variant_id GROUP BY 1",
                self.per_user_of(num, "$2"),
                self.per_user_of(den, "$3")
            );
            let per_variant = data.entry(name.clone()).or_default().ratio.get_or_insert_with(HashMap::new);
            let args = crate::sources::args(sources, vec![exp.id.into(), num.into(), den.into()]);
            for row in client.select(sql.as_str(), None, &args).or_raise() {
                let variant: i64 = row.get(1).or_raise().unwrap();
                let m: Vec<f64> =
                    row.get::<Vec<Option<f64>>>(2).or_raise().unwrap().into_iter().map(|x| x.unwrap_or(0.0)).collect();
                per_variant.insert(
                    variant,
                    CoMoments { n: m[0], mean_y: m[1], mean_x: m[2], m2_y: m[3], m2_x: m[4], c_xy: m[5] },
                );
            }
        }
    }

    /// Quantile metrics: each variant's estimate and order-statistic interval, and for a
    /// quantile of every recorded value the per-user counts its variance needs.
    fn read_quantiles(&self, data: &mut HashMap<String, MetricData>) {
        let (client, nsp, exp, sources, frame) = (self.client, self.nsp, self.exp, self.sources, self.frame);
        for (name, def) in &frame.defs {
            let Some((of, nu, level)) = def.quantile_of() else { continue };
            let aggregation = frame.defs.get(of).map(|d| d.aggregation).unwrap_or_default();
            // (variant_id, user_id, v) rows: per user, or every value.
            let rows = match (sources.get(of), level) {
                (Some(s), QuantileLevel::User) => s.per_user(client, nsp),
                (Some(s), QuantileLevel::Event) => s.rows(client, nsp),
                (None, QuantileLevel::User) => per_user_sql(nsp, frame.from_state, aggregation, "$2", None),
                (None, QuantileLevel::Event) => format!(
                    "SELECT r.variant_id, r.user_id, r.metric_value AS v FROM {nsp}.ab_results r \
                     WHERE r.experiment_id = $1 AND r.metric_name = $2"
                ),
            };
            data.entry(name.clone()).or_default().quantile =
                quantile_stats(client, nsp, exp.id, of, nu, level, &rows, sources, exp.randomization_unit.as_deref());
        }
    }

    /// Funnel and retention metrics: per variant, the users at 1 (completed the funnel, or
    /// active), and for retention the users old enough to count (`crate::funnel`).
    fn read_composed(&self, data: &mut HashMap<String, MetricData>) {
        let (client, nsp, exp, frame) = (self.client, self.nsp, self.exp, self.frame);
        for (name, def) in &frame.defs {
            let Some((ones, eligible)) = crate::funnel::per_variant(client, nsp, exp, &frame.defs, self.sources, def)
            else {
                continue;
            };
            let metric_data = data.entry(name.clone()).or_default();
            for (variant, n) in ones.into_iter().filter(|(_, n)| *n > 0) {
                metric_data.observed.insert(variant, Observed { moments: Moments::constant(n as f64, 1.0), co: None });
            }
            metric_data.eligible = eligible;
        }
    }

    /// Users who recorded nothing for a metric but have a covariate (they count as 0 for
    /// sum, count and binary metrics, and their covariate still enters CUPED).
    fn read_silent_covariates(&self, data: &mut HashMap<String, MetricData>) {
        let (client, nsp, exp, sources, frame) = (self.client, self.nsp, self.exp, self.sources, self.frame);
        let silent_of = |row: pgrx::spi::SpiHeapTupleData<'_>, first: usize| {
            let n = row.get::<i64>(first).or_raise().unwrap() as f64;
            let mean_x: f64 = row.get(first + 1).or_raise().unwrap();
            let var_x: f64 = row.get(first + 2).or_raise().unwrap();
            CoMoments::from_summary(n, 0.0, mean_x, 0.0, var_x, 0.0)
        };
        for (name, source) in sources.iter().filter(|_| !frame.bandit) {
            let Some(cov) = source.covariate_per_user(client, nsp) else { continue };
            let v = in_range("c.v");
            let sql = format!(
                "SELECT c.variant_id, count(*), avg({v}), coalesce(var_samp({v}), 0), max(abs(c.v)) FROM ({cov}) c \
                 LEFT JOIN ({}) u ON u.user_id = c.user_id WHERE u.user_id IS NULL GROUP BY c.variant_id",
                source.per_user(client, nsp)
            );
            for row in client.select(sql.as_str(), None, &crate::sources::args(sources, vec![exp.id.into()])).or_raise()
            {
                if row.get::<f64>(5).or_raise().is_some_and(|x| !ab_core::definition::value_in_range(x)) {
                    check_source_values(client, nsp, exp, sources, Some(std::slice::from_ref(name)));
                }
                let variant: i64 = row.get(1).or_raise().unwrap();
                data.entry(name.clone()).or_default().silent_covariate.insert(variant, silent_of(row, 2));
            }
        }
        if frame.has_covariates {
            let per_user_table = frame.per_user_table();
            let sql = format!(
                "SELECT c.metric_name, a.variant_id, count(*), avg(c.value), coalesce(var_samp(c.value), 0) \
                 FROM {nsp}.ab_covariates c JOIN {nsp}.ab_assignments a ON a.experiment_id = c.experiment_id AND a.user_id = c.user_id \
                 WHERE c.experiment_id = $1 AND NOT EXISTS (SELECT 1 FROM {nsp}.{per_user_table} r \
                   WHERE r.experiment_id = $1 AND r.metric_name = c.metric_name AND r.user_id = c.user_id) \
                 GROUP BY c.metric_name, a.variant_id"
            );
            for row in client.select(sql.as_str(), None, &[exp.id.into()]).or_raise() {
                let (name, variant): (String, i64) = (row.get(1).or_raise().unwrap(), row.get(2).or_raise().unwrap());
                if sources.get(&name).is_none_or(|s| s.covariate.is_none()) {
                    data.entry(name).or_default().silent_covariate.insert(variant, silent_of(row, 3));
                }
            }
        }
    }

    /// A cluster-randomized experiment (`randomization_unit`): per metric, each variant's
    /// cluster totals (`ab_core::analysis::ClusterTotals`) in one query that sums per-user
    /// values per (variant, cluster), then per variant; a quantile metric's variance is
    /// clustered in its statistic instead (`quantile_stats`).
    /// Funnel and retention metrics count their users at 1 per cluster (`crate::funnel`). A
    /// rollout's period-stratified analysis stays per user (cluster-randomized rollouts are
    /// refused). A user stored without a cluster is a cluster of their own (as in ab_adjusted).
    fn read_clusters(&self) -> HashMap<String, Clustering> {
        let (client, nsp, exp, sources, frame) = (self.client, self.nsp, self.exp, self.sources, self.frame);
        let Some(unit) = exp.randomization_unit.as_deref() else { return HashMap::new() };
        if frame.periods.is_some() {
            return HashMap::new();
        }
        let mut out = HashMap::new();
        for name in metric_order(exp, &frame.defs, &frame.recorded) {
            let def = frame.defs.get(&name).cloned().unwrap_or_default();
            if def.is_composed() {
                if let Some(totals) = crate::funnel::cluster_totals(client, nsp, exp, &frame.defs, sources, &def, unit)
                {
                    let arms = frame.variants.iter().map(|v| totals.get(&v.id).copied().unwrap_or_default()).collect();
                    out.insert(name, Clustering::Robust(arms));
                }
                continue;
            }
            // Rows (a: the assignment, y, x) of the analysed users, then their clusters.
            let (rows, args) = match (def.kind, def.ratio_of()) {
                // Its variance is clustered by the unit in its statistic (`read_quantiles`).
                (MetricType::Quantile, _) => continue,
                (MetricType::Ratio, Some((num, den))) => (
                    format!(
                        "{nsp}.ab_assignments a LEFT JOIN (SELECT coalesce(n.user_id, d.user_id) AS user_id, \
                         coalesce(n.v, 0)::float8 AS y, coalesce(d.v, 0)::float8 AS x FROM ({}) n FULL JOIN ({}) d \
                         ON d.user_id = n.user_id AND d.variant_id = n.variant_id) u ON u.user_id = a.user_id",
                        self.per_user_of(num, "$2"),
                        self.per_user_of(den, "$3")
                    ),
                    vec![exp.id.into(), num.into(), den.into(), unit.into()],
                ),
                _ if def.silent_users_are_zero() => (
                    format!(
                        "{nsp}.ab_assignments a LEFT JOIN (SELECT u.user_id, u.v::float8 AS y, 1::float8 AS x FROM ({}) u) u \
                         ON u.user_id = a.user_id",
                        self.per_user_of(&name, "$2")
                    ),
                    vec![exp.id.into(), name.as_str().into(), None::<String>.into(), unit.into()],
                ),
                _ => (
                    format!(
                        "(SELECT u.user_id, u.v::float8 AS y, 1::float8 AS x FROM ({}) u) u \
                         JOIN {nsp}.ab_assignments a ON a.user_id = u.user_id",
                        self.per_user_of(&name, "$2")
                    ),
                    vec![exp.id.into(), name.as_str().into(), None::<String>.into(), unit.into()],
                ),
            };
            // A silent user counts as 0 in y and, for a mean, as one user in x.
            let x = if def.kind == MetricType::Ratio { "coalesce(u.x, 0)" } else { "1" };
            let totals = cluster_totals(client, "", &rows, x, "", "$4", crate::sources::args(sources, args));
            let arms = frame.variants.iter().map(|v| totals.get(&v.id).copied().unwrap_or_default()).collect();
            out.insert(name, Clustering::Robust(arms));
        }
        out
    }

    /// Each metric's statistics, in the analysis's order (`ab_core::analysis`).
    fn compute(
        &self,
        data: &HashMap<String, MetricData>,
        clustering: &HashMap<String, Clustering>,
    ) -> Vec<MetricResult> {
        let frame = self.frame;
        let arms = frame.arms();
        let settings = settings(self.exp);
        let none = MetricData::default();
        metric_order(self.exp, &frame.defs, &frame.recorded)
            .into_iter()
            .map(|name| {
                let def = frame.defs.get(&name).cloned().unwrap_or_default();
                let with_covariate = !def.is_composed()
                    && (frame.has_covariates
                        || !frame.bandit && self.sources.get(&name).is_some_and(|s| s.covariate.is_some()));
                let cap = self.caps.get(&name).copied();
                let metric_data = data.get(&name).unwrap_or(&none);
                let clustering = clustering.get(&name);
                let quantile_in_clusters = def.kind == MetricType::Quantile && self.exp.randomization_unit.is_some();
                let mut result = analyze_clustered(
                    &settings,
                    &metric_input(name, def, cap, with_covariate, &arms, metric_data),
                    clustering,
                );
                if quantile_in_clusters {
                    result.label_clustered();
                }
                result
            })
            .collect()
    }
}

/// Per variant id, the cluster totals of the rows `rows` (FROM items: `a`, the assignments,
/// and `u`, the analysed users' `y`), after the WITH clause `with` (or nothing), `x` each
/// row's weight, `filter` more of the WHERE clause (or nothing), `unit` the parameter that
/// holds the attribute's name.
pub(crate) fn cluster_totals(
    client: &SpiClient<'_>,
    with: &str,
    rows: &str,
    x: &str,
    filter: &str,
    unit: &str,
    args: Vec<pgrx::datum::DatumWithOid<'_>>,
) -> HashMap<i64, ClusterTotals> {
    cluster_totals_by(client, with, rows, x, filter, unit, "NULL::text", args)
        .into_iter()
        .map(|((_, variant), t)| (variant, t))
        .collect()
}

/// `cluster_totals` per (value of `segment`, an expression over the rows; variant id): the
/// clusters cut by the segment, as a breakdown analyses them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cluster_totals_by(
    client: &SpiClient<'_>,
    with: &str,
    rows: &str,
    x: &str,
    filter: &str,
    unit: &str,
    segment: &str,
    args: Vec<pgrx::datum::DatumWithOid<'_>>,
) -> HashMap<(Option<String>, i64), ClusterTotals> {
    // Grouped by the attribute's value, users without one together: they are clusters of one
    // each, so their sums of squares are summed per user. (A cluster key built from the user
    // id for them would make the planner expect a group per user and sort.)
    let sql = format!(
        "{with} SELECT s, g, count(*) FILTER (WHERE cl IS NOT NULL) + coalesce(sum(n) FILTER (WHERE cl IS NULL), 0), \
                sum(n), sum(y), sum(x), \
                sum(CASE WHEN cl IS NULL THEN yy ELSE y * y END), sum(CASE WHEN cl IS NULL THEN xx ELSE x * x END), \
                sum(CASE WHEN cl IS NULL THEN xy ELSE x * y END) FROM ( \
           SELECT {segment} AS s, a.variant_id AS g, a.attributes->>{unit} AS cl, coalesce(sum(u.y), 0)::float8 AS y, \
                  sum({x})::float8 AS x, count(*)::float8 AS n, coalesce(sum(u.y * u.y), 0)::float8 AS yy, \
                  sum({x} * {x})::float8 AS xx, coalesce(sum(u.y * {x}), 0)::float8 AS xy \
           FROM {rows} WHERE a.experiment_id = $1 {filter} GROUP BY 1, 2, 3) t GROUP BY s, g"
    );
    client
        .select(sql.as_str(), None, &args)
        .or_raise()
        .map(|row| ((row.get::<String>(1).or_raise(), row.get::<i64>(2).or_raise().unwrap()), totals_at(&row, 3)))
        .collect()
}

/// The cluster totals in the seven columns from `first` (clusters, users, the sums of y and
/// x, of their squares and of their products).
pub(crate) fn totals_at(row: &pgrx::spi::SpiHeapTupleData<'_>, first: usize) -> ClusterTotals {
    let get = |i: usize| row.get::<f64>(first + i).or_raise().unwrap_or(0.0);
    ClusterTotals {
        clusters: get(0),
        users: get(1),
        sum_y: get(2),
        sum_x: get(3),
        sum_yy: get(4),
        sum_xx: get(5),
        sum_xy: get(6),
    }
}
