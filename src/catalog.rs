//! Reading experiments and variants, and naming the extension's tables wherever
//! `CREATE EXTENSION ... SCHEMA` put them.

use crate::jsonb::SafeJsonb;
use pgrx::spi::{SpiClient, SpiTupleTable};
use serde_json::Value;

use crate::errors::{not_found, SpiExt};

/// How a function was told which experiment: by name or by id.
#[derive(Debug, Clone, Copy)]
pub enum ExperimentRef<'a> {
    Name(&'a str),
    Id(i64),
}

impl std::fmt::Display for ExperimentRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExperimentRef::Name(n) => f.write_str(n),
            ExperimentRef::Id(id) => write!(f, "{id}"),
        }
    }
}

/// The extension's schema, quoted for use in SQL text.
pub fn schema(client: &SpiClient<'_>) -> String {
    let nsp: Option<String> = client
        .select(
            "SELECT pg_catalog.quote_ident(n.nspname::text) FROM pg_catalog.pg_extension e \
             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'ab_testing'",
            Some(1),
            &[],
        )
        .or_raise()
        .first()
        .get_one()
        .or_raise();
    nsp.unwrap_or_else(|| crate::errors::invalid("the ab_testing extension is not installed in this database"))
}

/// The OID of one of the extension's relations, or InvalidOid when it does not exist.
pub fn relation_oid(client: &SpiClient<'_>, nsp: &str, name: &str) -> pgrx::pg_sys::Oid {
    client
        .select("SELECT pg_catalog.to_regclass($1)::oid", Some(1), &[format!("{nsp}.{name}").into()])
        .or_raise()
        .first()
        .get_one::<pgrx::pg_sys::Oid>()
        .or_raise()
        .unwrap_or(pgrx::pg_sys::InvalidOid)
}

/// Whether one of the extension's tables exists: this library also serves databases still on
/// an older schema (before ALTER EXTENSION UPDATE), which lack the newer tables.
pub fn has_table(client: &SpiClient<'_>, nsp: &str, table: &str) -> bool {
    relation_oid(client, nsp, table) != pgrx::pg_sys::InvalidOid
}

/// Whether one of the extension's tables has a column (schemas of earlier releases lack some).
pub fn has_column(client: &SpiClient<'_>, nsp: &str, table: &str, column: &str) -> bool {
    client
        .select(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1) \
             AND attname OPERATOR(pg_catalog.=) $2 AND NOT attisdropped)",
            Some(1),
            &[format!("{nsp}.{table}").into(), column.into()],
        )
        .or_raise()
        .first()
        .get_one::<bool>()
        .or_raise()
        .unwrap_or(false)
}

#[derive(Debug, Clone)]
pub struct ExperimentRow {
    pub id: i64,
    pub name: String,
    pub experiment_type: String,
    pub status: String,
    pub primary_metric: String,
    pub metrics: Value,
    pub target_segments: Value,
    pub min_sample_size: i64,
    pub alpha: f64,
    pub salt: String,
    pub winner: Option<String>,
    pub started_at: Option<String>,
    pub stopped_at: Option<String>,
    pub sequential_tuning: Option<f64>,
    pub correction: String,
    pub power: f64,
    pub strict_metrics: bool,
    /// Adaptive allocation (0.8.0 and later); None for fixed allocations.
    pub bandit: Option<ab_core::definition::BanditSpec>,
    /// A rollout and where it stands (0.14.0 and later); None otherwise.
    pub rollout: Option<ab_core::rollout::Rollout>,
    /// Attributes stored with each assignment for breakdowns (0.10.0 and later).
    pub breakdowns: Vec<String>,
    /// A cluster-randomized experiment's unit attribute (0.14.0 and later).
    pub randomization_unit: Option<String>,
}

/// A layer, as ab_create_experiment and ab_layer_group need it.
pub struct LayerRow {
    pub id: i64,
    pub salt: String,
    /// The holdout in basis points: layer points below it are held out.
    pub holdout_bp: u32,
}

fn layer_row(table: SpiTupleTable<'_>, name: &str) -> LayerRow {
    if table.is_empty() {
        crate::errors::raise(
            pgrx::PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("layer \"{}\" does not exist", ab_core::names::printable(name)),
            Some("create it with ab_create_layer; ab_layer_overview lists the layers".into()),
        );
    }
    let row = table.first();
    LayerRow {
        id: row.get(1).or_raise().unwrap(),
        salt: row.get(2).or_raise().unwrap(),
        holdout_bp: row.get::<i32>(3).or_raise().unwrap() as u32,
    }
}

const LAYER_COLUMNS: &str = "id, salt, round(holdout_percentage * 100)::integer";

/// The layer of that name; raises `layer "x" does not exist` when absent.
pub fn get_layer(client: &SpiClient<'_>, nsp: &str, name: &str) -> LayerRow {
    let sql = format!("SELECT {LAYER_COLUMNS} FROM {nsp}.ab_layers WHERE name = $1");
    layer_row(client.select(sql.as_str(), Some(1), &[stored_layer_name(name).into()]).or_raise(), name)
}

/// Layer names are stored in NFC (see `ab_normalize_name`): another spelling finds the layer.
fn stored_layer_name(name: &str) -> String {
    ab_core::names::normalize_name("layer name", name).map(|n| n.into_owned()).unwrap_or_else(|_| name.to_string())
}

/// Like `get_layer`, and the layer's row stays locked until the transaction ends. The row is
/// updated rather than only locked, so that a REPEATABLE READ transaction racing for it fails
/// instead of working from a snapshot without the other's changes.
pub fn lock_layer(client: &mut SpiClient<'_>, nsp: &str, name: &str) -> LayerRow {
    let sql = format!("UPDATE {nsp}.ab_layers SET name = name WHERE name = $1 RETURNING {LAYER_COLUMNS}");
    layer_row(client.update(sql.as_str(), Some(1), &[stored_layer_name(name).into()]).or_raise(), name)
}

#[derive(Debug, Clone)]
pub struct VariantRow {
    pub id: i64,
    pub name: String,
    pub is_control: bool,
    pub traffic_allocation: f64,
    pub config: Value,
}

// strict_metrics is read through to_jsonb: a schema before 0.6.0 (a new library before
// ALTER EXTENSION UPDATE) has no such column, and its experiments accept any metric name.
const EXPERIMENT_COLUMNS: &str = "id, name, experiment_type, status, primary_metric, metrics, \
     target_segments, min_sample_size, alpha, salt, winner_variant, \
     to_char(started_at, 'YYYY-MM-DD HH24:MI:SS TZ'), \
     to_char(stopped_at, 'YYYY-MM-DD HH24:MI:SS TZ'), sequential_tuning, correction, power, \
     coalesce((pg_catalog.to_jsonb(ab_experiments.*) OPERATOR(pg_catalog.->>) 'strict_metrics')::boolean, false), \
     pg_catalog.to_jsonb(ab_experiments.*) OPERATOR(pg_catalog.->) 'allocation', \
     pg_catalog.to_jsonb(ab_experiments.*) OPERATOR(pg_catalog.->) 'breakdowns', \
     pg_catalog.to_jsonb(ab_experiments.*) OPERATOR(pg_catalog.->>) 'randomization_unit'";

fn experiment_query(nsp: &str, r: ExperimentRef<'_>, lock: bool) -> (String, Vec<pgrx::datum::DatumWithOid<'static>>) {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let (cond, args): (&str, Vec<pgrx::datum::DatumWithOid>) = match r {
        ExperimentRef::Name(n) => ("name = $1", vec![n.to_string().into()]),
        ExperimentRef::Id(id) => ("id = $1", vec![id.into()]),
    };
    (format!("SELECT {EXPERIMENT_COLUMNS} FROM {nsp}.ab_experiments WHERE {cond}{lock}"), args)
}

fn experiment_row(table: SpiTupleTable<'_>) -> Option<ExperimentRow> {
    if table.is_empty() {
        return None;
    }
    let row = table.first();
    let text = |i| row.get::<String>(i).or_raise();
    Some(ExperimentRow {
        id: row.get::<i64>(1).or_raise().unwrap(),
        name: text(2).unwrap(),
        experiment_type: text(3).unwrap(),
        status: text(4).unwrap(),
        primary_metric: text(5).unwrap(),
        metrics: row.get::<SafeJsonb>(6).or_raise().map(|j| j.0).unwrap_or(Value::Null),
        target_segments: row.get::<SafeJsonb>(7).or_raise().map(|j| j.0).unwrap_or(Value::Null),
        min_sample_size: row.get::<i64>(8).or_raise().unwrap(),
        alpha: row.get::<f64>(9).or_raise().unwrap(),
        salt: text(10).unwrap(),
        winner: text(11),
        started_at: text(12),
        stopped_at: text(13),
        sequential_tuning: row.get::<f64>(14).or_raise(),
        correction: text(15).unwrap(),
        power: row.get::<f64>(16).or_raise().unwrap(),
        strict_metrics: row.get::<bool>(17).or_raise().unwrap(),
        bandit: row.get::<SafeJsonb>(18).or_raise().and_then(|j| ab_core::definition::BanditSpec::from_json(&j.0)),
        rollout: row.get::<SafeJsonb>(18).or_raise().and_then(|j| ab_core::rollout::Rollout::from_json(&j.0)),
        breakdowns: row
            .get::<SafeJsonb>(19)
            .or_raise()
            .and_then(|j| serde_json::from_value(j.0).ok())
            .unwrap_or_default(),
        randomization_unit: text(20),
    })
}

impl ExperimentRow {
    /// Metric definitions, always including the primary metric.
    pub fn metric_defs(&self) -> std::collections::BTreeMap<String, ab_core::definition::MetricDef> {
        let mut defs: std::collections::BTreeMap<String, ab_core::definition::MetricDef> =
            serde_json::from_value(self.metrics.clone()).unwrap_or_default();
        defs.entry(self.primary_metric.clone()).or_default();
        defs
    }
}

/// Names are stored in NFC: another spelling of a stored name finds it too.
fn nfc(r: ExperimentRef<'_>) -> Option<String> {
    match r {
        ExperimentRef::Name(n) => {
            ab_core::names::normalize_name("experiment", n).ok().filter(|m| m.as_ref() != n).map(|m| m.into_owned())
        }
        ExperimentRef::Id(_) => None,
    }
}

/// Finds an experiment by name or id.
pub fn find_experiment(client: &SpiClient<'_>, nsp: &str, r: ExperimentRef<'_>) -> Option<ExperimentRow> {
    let (sql, args) = experiment_query(nsp, r, false);
    experiment_row(client.select(sql.as_str(), Some(1), &args).or_raise()).or_else(|| {
        let n = nfc(r)?;
        let (sql, args) = experiment_query(nsp, ExperimentRef::Name(&n), false);
        experiment_row(client.select(sql.as_str(), Some(1), &args).or_raise())
    })
}

/// Like `find_experiment`, raising `experiment "x" does not exist` when absent.
pub fn get_experiment(client: &SpiClient<'_>, nsp: &str, r: ExperimentRef<'_>) -> ExperimentRow {
    find_experiment(client, nsp, r).unwrap_or_else(|| not_found(r))
}

/// Finds an experiment and locks its row until the transaction ends, so that lifecycle
/// changes to one experiment happen one at a time.
pub fn lock_experiment(client: &mut SpiClient<'_>, nsp: &str, r: ExperimentRef<'_>) -> ExperimentRow {
    let (sql, args) = experiment_query(nsp, r, true);
    let row = experiment_row(client.update(sql.as_str(), Some(1), &args).or_raise());
    row.or_else(|| {
        let n = nfc(r)?;
        let (sql, args) = experiment_query(nsp, ExperimentRef::Name(&n), true);
        experiment_row(client.update(sql.as_str(), Some(1), &args).or_raise())
    })
    .unwrap_or_else(|| not_found(r))
}

/// Like `lock_experiment` by id, None when the experiment no longer exists.
pub fn try_lock_experiment(client: &mut SpiClient<'_>, nsp: &str, id: i64) -> Option<ExperimentRow> {
    let (sql, args) = experiment_query(nsp, ExperimentRef::Id(id), true);
    experiment_row(client.update(sql.as_str(), Some(1), &args).or_raise())
}

/// The variants of an experiment in creation order.
pub fn variants(client: &SpiClient<'_>, nsp: &str, experiment_id: i64) -> Vec<VariantRow> {
    let sql = format!(
        "SELECT id, name, is_control, traffic_allocation, config FROM {nsp}.ab_variants \
         WHERE experiment_id = $1 ORDER BY position"
    );
    client
        .select(sql.as_str(), None, &[experiment_id.into()])
        .or_raise()
        .map(|row| VariantRow {
            id: row.get::<i64>(1).or_raise().unwrap(),
            name: row.get::<String>(2).or_raise().unwrap(),
            is_control: row.get::<bool>(3).or_raise().unwrap(),
            traffic_allocation: row.get::<f64>(4).or_raise().unwrap(),
            config: row.get::<SafeJsonb>(5).or_raise().map(|j| j.0).unwrap_or(Value::Null),
        })
        .collect()
}
