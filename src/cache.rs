//! A per-backend cache of experiment definitions and of the hot path's prepared plans, so
//! `ab_get_variant` and `ab_record_result` parse no JSON and plan no SQL per call.
//!
//! Invalidation: a statement trigger on ab_experiments, ab_variants and ab_layer_experiments
//! sends a relcache invalidation for the table, which PostgreSQL delivers to every backend at
//! commit; the callback registered here marks the cache stale and the next call reloads. The
//! triggers are ENABLE ALWAYS, so they fire under session_replication_role = replica too
//! (logical replication apply, restores); while any of them is not, or is disabled, nothing
//! is cached and every call reads the tables (correct, slower). Entries loaded under
//! REPEATABLE READ or SERIALIZABLE are not kept: their snapshot may be older than an
//! invalidation already processed.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use ab_core::bucketing::basis_points;
use ab_core::targeting::Segments;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::{PgBuiltInOids, PgOid};
use serde_json::json;

use crate::jsonb::CachedJsonb;

use crate::catalog::{self, ExperimentRef};
use crate::citus::{self, Layout};
use crate::errors::{not_found, SpiExt};

pub struct CachedVariant {
    pub id: i64,
    /// What ab_get_variant returns: {"variant", "is_control", "config"}.
    pub output: CachedJsonb,
}

pub struct CachedExperiment {
    pub id: i64,
    pub name: String,
    /// Metrics declared binary: their results must be 0 or 1.
    pub binary_metrics: Vec<String>,
    /// With strict_metrics, the declared metric names: the only ones accepted.
    pub declared_metrics: Option<Vec<String>>,
    /// Ratio metrics (name, numerator, denominator): computed from their parts, never recorded.
    pub ratio_metrics: Vec<(String, String, String)>,
    /// Quantile metrics (name, metric): computed from that metric's values, never recorded.
    pub quantile_metrics: Vec<(String, String)>,
    /// Metrics read from a source, under whose names no result is recorded.
    pub source_metrics: Vec<String>,
    /// Funnel and retention metrics (name, kind, the metrics they are computed from): never recorded.
    pub composed_metrics: Vec<(String, &'static str, Vec<String>)>,
    pub running: bool,
    pub salt: String,
    pub segments: Segments,
    pub widths: Vec<u32>,
    pub variants: Vec<CachedVariant>,
    /// A rolled-back rollout: what every call returns (the control's output), whatever the
    /// user's stored variant.
    pub serve: Option<CachedJsonb>,
    /// A rollout (ramping, rolled back or completed), and its control variant's id.
    pub rollout_control: Option<i64>,
    /// The weight period `widths` belong to (bandit experiments; 0 otherwise), stored with
    /// each new assignment.
    pub period: i32,
    /// For an experiment in a layer: the layer's salt and the layer points it may enroll.
    pub layer_range: Option<LayerRange>,
    /// Attributes stored with each new assignment (`breakdowns`); empty for most experiments.
    pub breakdowns: Vec<String>,
    /// A cluster-randomized experiment's unit attribute: users are bucketed by its value.
    pub randomization_unit: Option<String>,
    /// The size of the targeting as text (what `segments` takes, about).
    pub segments_bytes: usize,
    /// Metric names known to be declared or recorded: recording them needs no check of the
    /// experiment's bound on distinct metric names.
    pub known_metrics: RefCell<HashSet<String>>,
}

pub struct LayerRange {
    pub salt: String,
    pub start: u32,
    pub end: u32,
}

impl CachedExperiment {
    /// About what the entry takes on the heap (the variants' jsonb dominates).
    fn approximate_size(&self) -> usize {
        let strings = |v: &[String]| v.iter().map(|s| s.len() + 32).sum::<usize>();
        512 + self.name.len()
            + self.salt.len()
            + self.segments_bytes
            + strings(&self.binary_metrics)
            + strings(&self.source_metrics)
            + strings(&self.breakdowns)
            + self.randomization_unit.as_ref().map_or(0, |u| u.len() + 32)
            + self.declared_metrics.as_deref().map_or(0, strings)
            + self.ratio_metrics.iter().map(|(a, b, c)| a.len() + b.len() + c.len() + 96).sum::<usize>()
            + self.quantile_metrics.iter().map(|(a, b)| a.len() + b.len() + 64).sum::<usize>()
            + self.composed_metrics.iter().map(|(a, _, p)| a.len() + strings(p) + 64).sum::<usize>()
            + self.known_metrics.borrow().iter().map(|s| s.len() + 32).sum::<usize>()
            + self.variants.iter().map(|v| v.output.len() + 64).sum::<usize>()
    }

    pub fn variant_by_id(&self, id: i64) -> Option<&CachedVariant> {
        self.variants.iter().find(|v| v.id == id)
    }

    /// What ab_get_variant returns to a user assigned to that variant.
    pub fn output(&self, variant_id: i64) -> Option<CachedJsonb> {
        let v = self.variant_by_id(variant_id)?;
        Some(self.serve.as_ref().unwrap_or(&v.output).clone())
    }

    /// The control's output, for a rollout found rolled back after this definition was read.
    pub fn control_output(&self) -> Option<CachedJsonb> {
        self.rollout_control.and_then(|c| self.variant_by_id(c)).map(|v| v.output.clone())
    }
}

/// A hot-path statement: prepared once and kept on one node; under Citus, planned at each call.
/// Citus 13 caches, in a kept plan of a statement its local execution runs, the shard's own plan
/// at every execution of an INSERT and never finds it again (its lookup reads the task list of
/// the generic plan, which an INSERT's deferred pruning leaves empty): a kept plan of
/// `INSERT ... ON CONFLICT` into ab_user_metrics grew by 46 kB a call on a worker, without bound.
/// A statement planned at a call is planned with the pinned search_path, as a kept one was.
pub enum Stmt {
    Kept(OwnedPreparedStatement),
    EachCall(String),
}

impl Stmt {
    pub fn select<'conn>(
        &self,
        client: &SpiClient<'conn>,
        limit: Option<i64>,
        args: &[pgrx::datum::DatumWithOid<'_>],
    ) -> pgrx::spi::SpiResult<pgrx::spi::SpiTupleTable<'conn>> {
        match self {
            Stmt::Kept(plan) => client.select(plan, limit, args),
            Stmt::EachCall(sql) => {
                crate::security::with_pinned_search_path(|| client.select(sql.as_str(), limit, args))
            }
        }
    }

    pub fn update<'conn>(
        &self,
        client: &mut SpiClient<'conn>,
        limit: Option<i64>,
        args: &[pgrx::datum::DatumWithOid<'_>],
    ) -> pgrx::spi::SpiResult<pgrx::spi::SpiTupleTable<'conn>> {
        match self {
            Stmt::Kept(plan) => client.update(plan, limit, args),
            Stmt::EachCall(sql) => {
                crate::security::with_pinned_search_path(|| client.update(sql.as_str(), limit, args))
            }
        }
    }
}

pub struct Plans {
    pub find_assignment: Stmt,
    pub insert_assignment: Stmt,
    /// For experiments with breakdowns (0.10.0 schemas): the insert that stores the attributes.
    pub insert_assignment_with_attributes: Option<Stmt>,
    pub record_result: Stmt,
    pub record_covariate: Stmt,
    /// Under Citus: the result with the variant already looked up, so that Citus routes a
    /// plain INSERT (an INSERT ... SELECT using a sequence is pulled through the coordinator).
    pub record_result_values: Option<Stmt>,
    /// Under Citus, with ab_user_metrics (0.7.0 and later): the user's state of the metric,
    /// brought up to date after record_result_values (record_result does both in one statement).
    pub record_user_metric: Option<Stmt>,
    /// The schema has ab_user_metrics (0.7.0 and later): record_result keeps it.
    pub has_user_metrics: bool,
    /// The schema has weight periods (0.8.0 and later): insert_assignment stores the period.
    pub has_periods: bool,
}

/// Folds one result into the user's state of the metric; a concurrent recording for the same
/// user and metric waits for the row lock and then adds to the committed state.
const UPSERT_USER_METRIC: &str = "ON CONFLICT (experiment_id, metric_name, user_id, variant_id) DO UPDATE \
     SET n = m.n OPERATOR(pg_catalog.+) 1, total = m.total OPERATOR(pg_catalog.+) excluded.total, \
     max = GREATEST(m.max, excluded.max)";

/// The tables and indexes the direct probes and the write locks use.
#[derive(Clone, Copy)]
pub struct Relations {
    pub experiments: pg_sys::Oid,
    pub experiments_pkey: pg_sys::Oid,
    pub assignments: pg_sys::Oid,
    pub assignments_pkey: pg_sys::Oid,
    /// Only a lock tag's class (see `guard`): not watched, so that ANALYZE of ab_results
    /// does not empty every cache.
    pub results: pg_sys::Oid,
}

struct State {
    nsp: String,
    /// The schema has layers (0.3.0 and later).
    has_layers: bool,
    /// The schema has weight periods (0.8.0 and later).
    has_periods: bool,
    /// Every invalidation trigger fires always: definitions may be kept across calls.
    cacheable: bool,
    plans: Rc<Plans>,
    relations: Relations,
    layout: Option<Rc<Layout>>,
    by_name: HashMap<String, Rc<CachedExperiment>>,
    by_id: HashMap<i64, Rc<CachedExperiment>>,
    /// Bytes the cached definitions take (about): bounded by MAX_CACHE_BYTES.
    bytes: usize,
}

/// The most a backend keeps of experiment definitions, on the Rust heap, where neither
/// work_mem nor pg_backend_memory_contexts sees it. Past it the cache starts over, so that a
/// workload touching many large definitions costs reloads, not memory.
pub const MAX_CACHE_BYTES: usize = 8 << 20;
/// The most names (spellings included) and experiments kept.
pub const MAX_CACHE_ENTRIES: usize = 10_000;

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    static STALE: Cell<bool> = const { Cell::new(true) };
    static WATCHED: Cell<[pg_sys::Oid; 6]> = const { Cell::new([pg_sys::InvalidOid; 6]) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// While the relations are being looked up (`load_state`): the invalidations taken in, to
    /// be checked against them once known. None when no load is in progress.
    static PENDING: RefCell<Option<Vec<pg_sys::Oid>>> = const { RefCell::new(None) };
}

/// More invalidations than this during one load: treated as touching the extension's tables.
const MAX_PENDING: usize = 64;

unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || WATCHED.get().contains(&relid) {
        STALE.set(true);
    }
    PENDING.with_borrow_mut(|p| {
        if let Some(p) = p.as_mut() {
            if p.len() < MAX_PENDING {
                p.push(relid);
            } else {
                STALE.set(true);
            }
        }
    });
}

/// Registers the invalidation callback (once per backend). Called before a load takes its
/// snapshot: an invalidation taken in between would otherwise reach no callback, and a
/// definition read with the older snapshot would be kept.
fn register_callback() {
    if !REGISTERED.get() {
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0)) };
        REGISTERED.set(true);
    }
}

thread_local! {
    static NAMES_ADMITTED: Cell<bool> = const { Cell::new(false) };
    static XACT_CALLBACKS: Cell<bool> = const { Cell::new(false) };
}

unsafe extern "C-unwind" fn on_xact_event(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    // A prepared transaction may still be rolled back (ROLLBACK PREPARED, from any session):
    // its names are forgotten as an abort's are, and read again once committed.
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PREPARE
    {
        if NAMES_ADMITTED.replace(false) {
            STALE.set(true);
        }
    } else if event == pg_sys::XactEvent::XACT_EVENT_COMMIT {
        NAMES_ADMITTED.set(false);
    }
}

unsafe extern "C-unwind" fn on_subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _: pg_sys::SubTransactionId,
    _: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    // Which subtransaction admitted a name is not tracked: any rollback to a savepoint
    // forgets them all.
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB && NAMES_ADMITTED.get() {
        STALE.set(true);
    }
}

/// The metric names now known to the cache include names this transaction recorded first: if
/// it (or a savepoint) rolls back, the cache is reloaded, so that a name recorded by no
/// committed transaction does not pass the bound on distinct metric names unchecked.
pub fn names_admitted_in_transaction() {
    if !XACT_CALLBACKS.replace(true) {
        unsafe {
            pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(on_subxact_event), std::ptr::null_mut());
        }
    }
    NAMES_ADMITTED.set(true);
}

/// Forgets everything cached in this backend (other backends learn through the trigger).
pub fn invalidate_local() {
    STALE.set(true);
}

/// With plans made for a schema before 0.7.0: whether ALTER EXTENSION UPDATE has since created
/// ab_user_metrics, so that results must now keep it (the cache is then marked stale). Takes
/// the results table's write lock first: the update holds a SHARE lock on it while it fills
/// the table, so a writer either finishes before the update reads the results or sees the
/// table here. Costs nothing once the schema is current.
pub fn user_metrics_appeared(handle: &Handle) -> bool {
    if handle.plans.has_user_metrics {
        return false;
    }
    let results = handle.relations.results;
    let appeared = unsafe {
        pg_sys::LockRelationOid(results, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        pg_sys::get_relname_relid(c"ab_user_metrics".as_ptr(), pg_sys::get_rel_namespace(results)) != pg_sys::InvalidOid
    };
    if appeared {
        STALE.set(true);
    }
    appeared
}

/// Whether an invalidation processed since the last load touched the extension's tables.
pub fn is_stale() -> bool {
    STALE.get()
}

pub fn snapshot_is_transaction_wide() -> bool {
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

fn load_state(client: &SpiClient<'_>) -> State {
    let nsp = catalog::schema(client);
    let oid_of = |name: &str| catalog::relation_oid(client, &nsp, name);
    let relations = Relations {
        experiments: oid_of("ab_experiments"),
        experiments_pkey: oid_of("ab_experiments_pkey"),
        assignments: oid_of("ab_assignments"),
        assignments_pkey: oid_of("ab_assignments_pkey"),
        results: oid_of("ab_results"),
    };
    let variants = oid_of("ab_variants");
    let layer_experiments = oid_of("ab_layer_experiments");
    let watched = [
        relations.experiments,
        relations.experiments_pkey,
        variants,
        layer_experiments,
        relations.assignments,
        relations.assignments_pkey,
    ];
    WATCHED.set(watched);
    // What was taken in before the relations were known.
    if let Some(pending) = PENDING.with_borrow_mut(|p| p.take()) {
        if pending.iter().any(|relid| watched.contains(relid)) {
            STALE.set(true);
        }
    }
    // ALTER TABLE ... ENABLE / DISABLE TRIGGER invalidates the table's relcache entry, so this
    // is read again whenever it changes.
    let watched_tables: Vec<pg_sys::Oid> =
        [relations.experiments, variants, layer_experiments].into_iter().filter(|o| *o != pg_sys::InvalidOid).collect();
    let cacheable = client
        .select(
            "SELECT count(*) FILTER (WHERE t.tgenabled = 'A') = pg_catalog.cardinality($1) \
             AND count(DISTINCT t.tgrelid) = pg_catalog.cardinality($1) \
             FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
             WHERE t.tgrelid OPERATOR(pg_catalog.=) ANY ($1) AND p.proname OPERATOR(pg_catalog.=) 'ab_invalidate_cache'",
            Some(1),
            &[watched_tables.into()],
        )
        .or_raise()
        .first()
        .get_one::<bool>()
        .or_raise()
        .unwrap_or(false);
    let layout = citus::load(client, &nsp);
    let has_user_metrics = catalog::has_table(client, &nsp, "ab_user_metrics");
    let has_periods = catalog::has_table(client, &nsp, "ab_allocations");
    let int4 = PgOid::BuiltIn(PgBuiltInOids::INT4OID);
    let text = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
    let int8 = PgOid::BuiltIn(PgBuiltInOids::INT8OID);
    let float8 = PgOid::BuiltIn(PgBuiltInOids::FLOAT8OID);
    let distributed = layout.is_some();
    let prepare = |sql: String, args: &[PgOid]| {
        if distributed {
            Stmt::EachCall(sql)
        } else {
            Stmt::Kept(client.prepare_mut(sql.as_str(), args).or_raise().keep())
        }
    };
    let plans = Plans {
        find_assignment: prepare(
            format!(
                "SELECT variant_id FROM {nsp}.ab_assignments \
                 WHERE experiment_id OPERATOR(pg_catalog.=) $1 AND user_id OPERATOR(pg_catalog.=) $2"
            ),
            &[int8, text],
        ),
        insert_assignment: if has_periods {
            prepare(
                format!(
                    "INSERT INTO {nsp}.ab_assignments (experiment_id, user_id, variant_id, session_id, period) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (experiment_id, user_id) DO NOTHING RETURNING variant_id"
                ),
                &[int8, text, int8, text, int4],
            )
        } else {
            prepare(
                format!(
                    "INSERT INTO {nsp}.ab_assignments (experiment_id, user_id, variant_id, session_id) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (experiment_id, user_id) DO NOTHING RETURNING variant_id"
                ),
                &[int8, text, int8, text],
            )
        },
        insert_assignment_with_attributes: catalog::has_column(client, &nsp, "ab_assignments", "attributes").then(|| {
            prepare(
                format!(
                    "INSERT INTO {nsp}.ab_assignments (experiment_id, user_id, variant_id, session_id, period, attributes) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (experiment_id, user_id) DO NOTHING RETURNING variant_id"
                ),
                &[int8, text, int8, text, int4, PgOid::BuiltIn(PgBuiltInOids::JSONBOID)],
            )
        }),
        // Dated no earlier than the assignment, as a batch's rows are: a transaction that began
        // before another session assigned the user would otherwise date it before.
        record_result: prepare(
            if has_user_metrics {
                format!(
                    "WITH r AS (INSERT INTO {nsp}.ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, session_id, recorded_at) \
                     SELECT a.experiment_id, a.variant_id, a.user_id, $3, $4, $5, GREATEST(pg_catalog.now(), a.assigned_at) FROM {nsp}.ab_assignments a \
                     WHERE a.experiment_id OPERATOR(pg_catalog.=) $1 AND a.user_id OPERATOR(pg_catalog.=) $2 \
                     RETURNING variant_id) \
                     INSERT INTO {nsp}.ab_user_metrics AS m (experiment_id, metric_name, user_id, variant_id, n, total, max) \
                     SELECT $1, $3, $2, r.variant_id, 1, $4, $4 FROM r {UPSERT_USER_METRIC}"
                )
            } else {
                format!(
                    "INSERT INTO {nsp}.ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, session_id, recorded_at) \
                     SELECT a.experiment_id, a.variant_id, a.user_id, $3, $4, $5, GREATEST(pg_catalog.now(), a.assigned_at) FROM {nsp}.ab_assignments a \
                     WHERE a.experiment_id OPERATOR(pg_catalog.=) $1 AND a.user_id OPERATOR(pg_catalog.=) $2"
                )
            },
            &[int8, text, text, float8, text],
        ),
        record_covariate: prepare(
            format!(
                "INSERT INTO {nsp}.ab_covariates (experiment_id, user_id, metric_name, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (experiment_id, user_id, metric_name) DO UPDATE SET value = excluded.value, recorded_at = excluded.recorded_at"
            ),
            &[int8, text, text, float8],
        ),
        record_user_metric: (layout.is_some() && has_user_metrics).then(|| {
            prepare(
                format!(
                    "INSERT INTO {nsp}.ab_user_metrics AS m (experiment_id, metric_name, user_id, variant_id, n, total, max) \
                     VALUES ($1, $2, $3, $4, 1, $5, $5) {UPSERT_USER_METRIC}"
                ),
                &[int8, text, text, int8, float8],
            )
        }),
        has_user_metrics,
        has_periods,
        record_result_values: layout.is_some().then(|| {
            prepare(
                format!(
                    "INSERT INTO {nsp}.ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, session_id) \
                     VALUES ($1, $2, $3, $4, $5, $6)"
                ),
                &[int8, int8, text, text, float8, text],
            )
        }),
    };
    let has_layers = catalog::has_table(client, &nsp, "ab_layer_experiments");
    State {
        nsp,
        has_layers,
        has_periods,
        cacheable,
        plans: Rc::new(plans),
        relations,
        layout: layout.map(Rc::new),
        by_name: HashMap::new(),
        by_id: HashMap::new(),
        bytes: 0,
    }
}

fn load_layer_range(client: &SpiClient<'_>, nsp: &str, experiment_id: i64) -> Option<LayerRange> {
    let table = client
        .select(
            format!(
                "SELECT l.salt, m.range_start, m.range_end FROM {nsp}.ab_layer_experiments m \
                 JOIN {nsp}.ab_layers l ON l.id OPERATOR(pg_catalog.=) m.layer_id \
                 WHERE m.experiment_id OPERATOR(pg_catalog.=) $1 AND m.range_start IS NOT NULL"
            )
            .as_str(),
            Some(1),
            &[experiment_id.into()],
        )
        .or_raise();
    if table.is_empty() {
        return None;
    }
    let row = table.first();
    Some(LayerRange {
        salt: row.get::<String>(1).or_raise()?,
        start: row.get::<i32>(2).or_raise()? as u32,
        end: row.get::<i32>(3).or_raise()? as u32,
    })
}

/// The latest weight period of a bandit experiment (read in the snapshot that read its weights).
pub fn current_period(client: &SpiClient<'_>, nsp: &str, experiment_id: i64) -> i32 {
    client
        .select(
            format!("SELECT max(period) FROM {nsp}.ab_allocations WHERE experiment_id OPERATOR(pg_catalog.=) $1")
                .as_str(),
            Some(1),
            &[experiment_id.into()],
        )
        .or_raise()
        .first()
        .get_one::<i32>()
        .or_raise()
        .unwrap_or(0)
}

fn load_experiment(
    client: &SpiClient<'_>,
    nsp: &str,
    has_layers: bool,
    has_periods: bool,
    r: ExperimentRef<'_>,
) -> Option<(String, CachedExperiment)> {
    let e = catalog::find_experiment(client, nsp, r)?;
    let layer_range = if has_layers { load_layer_range(client, nsp, e.id) } else { None };
    let period =
        if has_periods && (e.bandit.is_some() || e.rollout.is_some()) { current_period(client, nsp, e.id) } else { 0 };
    let rolled_back = e.rollout.as_ref().is_some_and(|r| r.state == ab_core::rollout::State::RolledBack);
    let variants = catalog::variants(client, nsp, e.id);
    let segments = Segments::parse(&e.target_segments).unwrap_or_default();
    let segments_bytes = if segments.is_empty() { 0 } else { 4 * e.target_segments.to_string().len() };
    let defs = e.metric_defs();
    let binary_metrics = defs
        .iter()
        .filter(|(_, d)| d.kind == ab_core::definition::MetricType::Binary)
        .map(|(n, _)| n.clone())
        .collect();
    let declared_metrics = e.strict_metrics.then(|| defs.keys().cloned().collect());
    let ratio_metrics = defs
        .iter()
        .filter_map(|(name, d)| d.ratio_of().map(|(n, dd)| (name.clone(), n.to_string(), dd.to_string())))
        .collect();
    let quantile_metrics =
        defs.iter().filter_map(|(name, d)| d.quantile_of().map(|(of, ..)| (name.clone(), of.to_string()))).collect();
    let source_metrics = defs.iter().filter(|(_, d)| d.source.is_some()).map(|(n, _)| n.clone()).collect();
    let composed_metrics = defs
        .iter()
        .filter_map(|(name, d)| match (d.funnel_of(), d.retention_of()) {
            (Some(f), _) => Some((name.clone(), "funnel", f.steps.clone())),
            (None, Some((m, ..))) => Some((name.clone(), "retention metric", vec![m.to_string()])),
            _ => None,
        })
        .collect();
    let known_metrics = RefCell::new(defs.into_keys().collect());
    let widths = variants.iter().map(|v| basis_points(v.traffic_allocation).unwrap_or(0)).collect();
    let e_controls: Vec<bool> = variants.iter().map(|v| v.is_control).collect();
    let rollout_control = e.rollout.as_ref().and_then(|_| variants.iter().find(|v| v.is_control).map(|v| v.id));
    let variants = variants
        .into_iter()
        .map(|v| CachedVariant {
            id: v.id,
            output: CachedJsonb::new(json!({"variant": v.name, "is_control": v.is_control, "config": v.config})),
        })
        .collect::<Vec<_>>();
    let serve = if rolled_back {
        variants.iter().zip(&e_controls).find(|(_, c)| **c).map(|(v, _)| v.output.clone())
    } else {
        None
    };
    Some((
        e.name.clone(),
        CachedExperiment {
            id: e.id,
            name: e.name,
            binary_metrics,
            declared_metrics,
            ratio_metrics,
            quantile_metrics,
            source_metrics,
            composed_metrics,
            running: e.status == "running",
            salt: e.salt,
            segments,
            widths,
            variants,
            serve,
            rollout_control,
            period,
            layer_range,
            known_metrics,
            breakdowns: e.breakdowns,
            randomization_unit: e.randomization_unit,
            segments_bytes,
        },
    ))
}

/// The extension's schema, quoted, as the last `lookup` found it.
pub fn schema() -> String {
    STATE.with_borrow(|s| s.as_ref().map(|s| s.nsp.clone())).expect("called after lookup")
}

/// What the hot path needs of one experiment.
pub struct Handle {
    pub exp: Rc<CachedExperiment>,
    pub plans: Rc<Plans>,
    pub relations: Relations,
    /// The definition is in the cache: any later change to it (a delete included) reaches
    /// this backend as an invalidation, taken in at the next lock.
    pub cached: bool,
    /// Where the rows are, when Citus distributes the tables.
    pub layout: Option<Rc<Layout>>,
}

/// The experiment, the hot-path plans and relations, from the cache or loaded now (the only
/// case that uses SPI). Raises `experiment "x" does not exist` for an unknown experiment.
pub fn lookup(r: ExperimentRef<'_>) -> Handle {
    if STALE.replace(false) {
        STATE.with_borrow_mut(|s| *s = None);
    }
    // A hit copies no more than a few pointers.
    let hit = STATE.with_borrow(|s| {
        let s = s.as_ref()?;
        let exp = match r {
            ExperimentRef::Name(n) => s.by_name.get(n),
            ExperimentRef::Id(id) => s.by_id.get(&id),
        }?;
        Some(Handle {
            exp: exp.clone(),
            plans: s.plans.clone(),
            relations: s.relations,
            cached: true,
            layout: s.layout.clone(),
        })
    });
    if let Some(handle) = hit {
        return handle;
    }
    let cached = STATE.with_borrow(|s| {
        s.as_ref().map(|s| {
            (s.plans.clone(), s.relations, s.layout.clone(), s.nsp.clone(), s.has_layers, s.has_periods, s.cacheable)
        })
    });
    register_callback();
    if cached.is_none() {
        PENDING.with_borrow_mut(|p| *p = Some(Vec::new()));
    }
    // SPI reads with the calling statement's snapshot until the transaction writes; a reload
    // (after an invalidation taken in during this call) must see what that invalidation
    // announced, so it reads with a fresh one (under READ COMMITTED; under REPEATABLE READ this
    // is the transaction's snapshot, and nothing loaded then is kept).
    with_fresh_snapshot(|| {
        crate::security::with_pinned_search_path(|| {
            Spi::connect(|client| {
                let (plans, relations, layout, nsp, has_layers, has_periods, cacheable) = match cached {
                    Some(state) => state,
                    None => {
                        let state = load_state(client);
                        let out = (
                            state.plans.clone(),
                            state.relations,
                            state.layout.clone(),
                            state.nsp.clone(),
                            state.has_layers,
                            state.has_periods,
                            state.cacheable,
                        );
                        STATE.with_borrow_mut(|s| *s = Some(state));
                        out
                    }
                };
                let (name, exp) =
                    load_experiment(client, &nsp, has_layers, has_periods, r).unwrap_or_else(|| not_found(r));
                let exp = Rc::new(exp);
                let cached = cacheable && !snapshot_is_transaction_wide() && !STALE.get();
                if cached {
                    STATE.with_borrow_mut(|s| {
                        if let Some(s) = s.as_mut() {
                            let size = exp.approximate_size();
                            if s.bytes + size > MAX_CACHE_BYTES || s.by_name.len() >= MAX_CACHE_ENTRIES {
                                s.by_id.clear();
                                s.by_name.clear();
                                s.bytes = 0;
                            }
                            if s.by_id.insert(exp.id, exp.clone()).is_none() {
                                s.bytes += size;
                            }
                            // Under the name asked for too, when it was another spelling of the stored one.
                            if let ExperimentRef::Name(asked) = r {
                                if asked != name {
                                    s.by_name.insert(asked.to_string(), exp.clone());
                                }
                            }
                            s.by_name.insert(name, exp.clone());
                        }
                    });
                }
                Handle { exp, plans, relations, cached, layout }
            })
        })
    })
}

/// A new statement snapshot (READ COMMITTED) pushed as the active one, which SPI's read-only
/// statements use, until the value is dropped.
pub struct FreshSnapshot(pg_sys::Snapshot);

impl FreshSnapshot {
    pub fn push() -> Self {
        unsafe {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            FreshSnapshot(pg_sys::GetActiveSnapshot())
        }
    }
}

impl Drop for FreshSnapshot {
    // Pops the snapshot when it is still on top. When a PostgreSQL error unwinds past it,
    // snapshots pushed after it may still be above it: the (sub)transaction's abort, which
    // always follows such an error, pops them all.
    fn drop(&mut self) {
        unsafe {
            if pg_sys::ActiveSnapshotSet() && pg_sys::GetActiveSnapshot() == self.0 {
                pg_sys::PopActiveSnapshot();
            }
        }
    }
}

/// Runs `f` with a new statement snapshot (READ COMMITTED) as SPI's read-only snapshot.
pub fn with_fresh_snapshot<R>(f: impl FnOnce() -> R) -> R {
    let fresh = FreshSnapshot::push();
    let out = f();
    drop(fresh);
    out
}

/// Statement trigger on ab_experiments, ab_variants and ab_layer_experiments: tells every backend to reload.
#[pg_trigger]
fn ab_invalidate_cache<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let relid = trigger.relation()?.oid();
    unsafe {
        pg_sys::CacheInvalidateRelcacheByRelid(relid);
        // Under Citus the trigger fires on a shard (ab_variants_102009), which no cache
        // watches: announce the change on the node's ab_experiments, which every cache watches.
        let experiments = pg_sys::get_relname_relid(c"ab_experiments".as_ptr(), pg_sys::get_rel_namespace(relid));
        if experiments != pg_sys::InvalidOid && experiments != relid {
            pg_sys::CacheInvalidateRelcacheByRelid(experiments);
        }
    }
    invalidate_local();
    Ok(None)
}
