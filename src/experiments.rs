//! Experiment definition and lifecycle: create (draft), start (running), stop (with an
//! optional winner, by the winner rule), delete.

use ab_core::definition::{parse_definition, ExperimentSpec, LayerRole};
use ab_core::layers;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;

use crate::analysis;
use crate::cache::invalidate_local;
use crate::catalog::{self, ExperimentRef};
use crate::errors::{core_error, invalid, raise, required, wrong_state, SpiExt};
use crate::guard;
use crate::jsonb::RawJsonb;
use crate::lookup::{self, Probe, Visibility};

/// Largest definition accepted, as jsonb text.
const MAX_DEFINITION_BYTES: usize = 1 << 20;

/// Records a lifecycle change in ab_audit; role_name defaults to the caller (these functions
/// run with the caller's rights). A database still on the 0.1.0 schema (before ALTER EXTENSION
/// UPDATE) has no ab_audit, and this library keeps working with it.
pub(crate) fn audit(
    client: &mut pgrx::spi::SpiClient<'_>,
    nsp: &str,
    id: i64,
    name: &str,
    action: &str,
    detail: serde_json::Value,
) {
    let has_audit = catalog::has_table(client, nsp, "ab_audit");
    if !has_audit {
        return;
    }
    client
        .update(
            format!(
                "INSERT INTO {nsp}.ab_audit (experiment_id, experiment_name, action, detail) VALUES ($1, $2, $3, $4)"
            )
            .as_str(),
            None,
            &[id.into(), name.into(), action.into(), JsonB(detail).into()],
        )
        .or_raise();
}

/// Creates an experiment in draft from its JSON definition (the original REST API's create
/// body, plus optional metrics, target_segments and alpha). Returns its id.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_create_experiment(definition: Option<RawJsonb>) -> i64 {
    let text = required(definition, "definition").text_at_most("experiment definition", 4 * MAX_DEFINITION_BYTES);
    if text.len() > MAX_DEFINITION_BYTES {
        invalid(format!(
            "experiment definition is {} bytes long, at most {MAX_DEFINITION_BYTES} are allowed",
            text.len()
        ));
    }
    let value: serde_json::Value =
        crate::jsonb::parse(&text).unwrap_or_else(|e| invalid(format!("invalid experiment definition: {e}")));
    let spec = parse_definition(&value).unwrap_or_else(|e| core_error(e));
    let id = Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exists = || -> ! {
            raise(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!("experiment \"{}\" already exists", spec.name),
                Some("choose another name, or delete the old experiment with ab_delete_experiment".into()),
            )
        };
        if catalog::find_experiment(client, &nsp, ExperimentRef::Name(&spec.name)).is_some() {
            exists();
        }
        crate::sources::check_experiment_sources(client, &nsp, &spec.metrics);
        let placement = spec.layer.as_ref().map(|_| place_in_layer(client, &nsp, &spec));
        let salt = match &placement {
            Some(Placement { range: None, layer_salt, .. }) => Some(layer_salt.clone()),
            _ => spec.salt.clone(),
        };
        // A schema before 0.6.0 has no strict_metrics: its experiments accept any metric name.
        let (strict_column, strict_value) = if catalog::has_column(client, &nsp, "ab_experiments", "strict_metrics") {
            (", strict_metrics", ", $13")
        } else {
            ("", "")
        };
        if spec.rollout.is_some() && !crate::rollout::schema_has_rollouts(client, &nsp) {
            wrong_state(
                "rollouts need version 0.14.0 of the ab_testing schema",
                "run ALTER EXTENSION ab_testing UPDATE",
            );
        }
        let allocation =
            spec.bandit.as_ref().map(|b| b.to_json()).or_else(|| spec.rollout.as_ref().map(|r| r.to_json()));
        let (allocation_column, allocation_value) = match &allocation {
            None => ("", ""),
            Some(_) if catalog::has_table(client, &nsp, "ab_allocations") => (", allocation", ", $14"),
            Some(_) => wrong_state(
                "bandit experiments need version 0.8.0 of the ab_testing schema",
                "run ALTER EXTENSION ab_testing UPDATE",
            ),
        };
        let (breakdowns_column, breakdowns_value) = match spec.breakdowns.is_empty() {
            true => ("", ""),
            false if catalog::has_column(client, &nsp, "ab_experiments", "breakdowns") => (", breakdowns", ", $15"),
            false => wrong_state(
                "breakdowns need version 0.10.0 of the ab_testing schema",
                "run ALTER EXTENSION ab_testing UPDATE",
            ),
        };
        let (unit_column, unit_value) = match &spec.randomization_unit {
            None => ("", ""),
            Some(_) if catalog::has_column(client, &nsp, "ab_experiments", "randomization_unit") => {
                (", randomization_unit", ", $16")
            }
            Some(_) => wrong_state(
                "cluster-randomized experiments (randomization_unit) need version 0.14.0 of the ab_testing schema",
                "run ALTER EXTENSION ab_testing UPDATE",
            ),
        };
        // A session creating the same name at the same moment: this insert waits for it, then
        // (READ COMMITTED) inserts nothing, or (REPEATABLE READ) fails with 40001.
        let inserted = client
            .update(
                format!(
                    "INSERT INTO {nsp}.ab_experiments (name, description, experiment_type, primary_metric, metrics, \
                     target_segments, min_sample_size, alpha, salt, sequential_tuning, correction, power{strict_column}{allocation_column}{breakdowns_column}{unit_column}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, pg_catalog.gen_random_uuid()::text), $10, $11, $12{strict_value}{allocation_value}{breakdowns_value}{unit_value}) \
                     ON CONFLICT (name) DO NOTHING RETURNING id"
                )
                .as_str(),
                Some(1),
                &[
                    spec.name.as_str().into(),
                    spec.description.as_str().into(),
                    spec.experiment_type.as_str().into(),
                    spec.primary_metric.as_str().into(),
                    JsonB(spec.metrics_json()).into(),
                    JsonB(spec.target_segments.clone()).into(),
                    spec.min_sample_size.into(),
                    spec.alpha.into(),
                    salt.as_deref().into(),
                    spec.sequential_tuning.into(),
                    spec.correction.as_str().into(),
                    spec.power.into(),
                    spec.strict_metrics.into(),
                    allocation.clone().map(JsonB).into(),
                    spec.breakdowns.clone().into(),
                    spec.randomization_unit.as_deref().into(),
                ],
            )
            .or_raise();
        if inserted.is_empty() {
            exists();
        }
        let id: i64 = inserted.first().get_one().or_raise().unwrap();
        let insert = format!(
            "INSERT INTO {nsp}.ab_variants (experiment_id, name, position, is_control, traffic_allocation, config) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        );
        for (position, v) in spec.variants.iter().enumerate() {
            client
                .update(
                    insert.as_str(),
                    None,
                    &[
                        id.into(),
                        v.name.as_str().into(),
                        (position as i32).into(),
                        v.is_control.into(),
                        v.traffic_allocation.into(),
                        JsonB(v.config.clone()).into(),
                    ],
                )
                .or_raise();
        }
        if let Some(p) = &placement {
            client
                .update(
                    format!(
                        "INSERT INTO {nsp}.ab_layer_experiments (experiment_id, layer_id, range_start, range_end) \
                         VALUES ($1, $2, $3, $4)"
                    )
                    .as_str(),
                    None,
                    &[
                        id.into(),
                        p.layer_id.into(),
                        p.range.map(|r| r.0 as i32).into(),
                        p.range.map(|r| r.1 as i32).into(),
                    ],
                )
                .or_raise();
        }
        let mut detail = json!({"experiment_type": spec.experiment_type});
        if let Some(a) = &allocation {
            detail["allocation"] = a.clone();
        }
        if let (Some(p), Some(layer)) = (&placement, &spec.layer) {
            detail["layer"] = json!({
                "name": layer.name,
                "range_start": p.range.map(|r| r.0),
                "range_end": p.range.map(|r| r.1),
            });
        }
        audit(client, &nsp, id, &spec.name, "created", detail);
        id
    });
    invalidate_local();
    id
}

struct Placement {
    layer_id: i64,
    layer_salt: String,
    /// The layer points the experiment owns; None for a holdout experiment.
    range: Option<(u32, u32)>,
}

/// Finds room for a new experiment in its layer. The layer's row stays locked until the
/// transaction ends: experiments join a layer one at a time.
fn place_in_layer(client: &mut pgrx::spi::SpiClient<'_>, nsp: &str, spec: &ExperimentSpec) -> Placement {
    let layer = spec.layer.as_ref().expect("called for layered experiments");
    if !catalog::has_table(client, nsp, "ab_layers") {
        wrong_state("layers need version 0.3.0 of the ab_testing schema", "run ALTER EXTENSION ab_testing UPDATE");
    }
    let catalog::LayerRow { id: layer_id, salt: layer_salt, holdout_bp } =
        catalog::lock_layer(client, nsp, &layer.name);
    let percent = |bp: u32| bp as f64 / 100.0;
    match layer.role {
        LayerRole::Holdout => {
            if holdout_bp == 0 {
                invalid(format!("layer \"{}\" has no holdout to measure", layer.name));
            }
            let control = spec.variants.iter().find(|v| v.is_control).unwrap();
            let other = spec.variants.iter().find(|v| !v.is_control).unwrap();
            if control.traffic_allocation != percent(holdout_bp)
                || other.traffic_allocation != percent(10_000 - holdout_bp)
            {
                invalid(format!(
                    "a holdout experiment of layer \"{}\" gives its control the layer's holdout ({}%) and its other variant the rest ({}%)",
                    layer.name,
                    percent(holdout_bp),
                    percent(10_000 - holdout_bp)
                ));
            }
            Placement { layer_id, layer_salt, range: None }
        }
        LayerRole::Share(width) => {
            let taken: Vec<(u32, u32)> = client
                .select(
                    format!(
                        "SELECT m.range_start, m.range_end FROM {nsp}.ab_layer_experiments m \
                         JOIN {nsp}.ab_experiments e ON e.id = m.experiment_id \
                         WHERE m.layer_id = $1 AND e.status <> 'stopped' AND m.range_start IS NOT NULL"
                    )
                    .as_str(),
                    None,
                    &[layer_id.into()],
                )
                .or_raise()
                .map(|r| (r.get::<i32>(1).or_raise().unwrap() as u32, r.get::<i32>(2).or_raise().unwrap() as u32))
                .collect();
            let Some(start) = layers::first_fit(&taken, holdout_bp, width) else {
                let (free, widest) = layers::free_space(&taken, holdout_bp);
                wrong_state(
                    format!(
                        "layer \"{}\" has no free range of {}% ({}% is free, the widest free range is {}%)",
                        layer.name,
                        percent(width),
                        percent(free),
                        percent(widest)
                    ),
                    "stop or delete an experiment of the layer, or ask for a smaller percentage",
                );
            };
            Placement { layer_id, layer_salt, range: Some((start, start + width)) }
        }
    }
}

fn start(r: ExperimentRef<'_>) {
    Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::lock_experiment(client, &nsp, r);
        match exp.status.as_str() {
            "draft" => {}
            "running" => wrong_state(format!("experiment \"{}\" is already running", exp.name), "nothing to do"),
            _ => wrong_state(
                format!("experiment \"{}\" is stopped and cannot be restarted", exp.name),
                "create a new experiment to test again",
            ),
        }
        client
            .update(
                format!("UPDATE {nsp}.ab_experiments SET status = 'running', started_at = now() WHERE id = $1")
                    .as_str(),
                None,
                &[exp.id.into()],
            )
            .or_raise();
        if exp.bandit.is_some() || exp.rollout.is_some() {
            // Period 0: the traffic allocations the experiment starts with.
            client
                .update(
                    format!(
                        "INSERT INTO {nsp}.ab_allocations (experiment_id, period, weights) \
                         SELECT $1, 0, pg_catalog.jsonb_object_agg(name, traffic_allocation ORDER BY position) \
                         FROM {nsp}.ab_variants WHERE experiment_id = $1"
                    )
                    .as_str(),
                    None,
                    &[exp.id.into()],
                )
                .or_raise();
        }
        audit(client, &nsp, exp.id, &exp.name, "started", json!({}));
    });
    invalidate_local();
}

/// Starts a draft experiment: from now on ab_get_variant assigns users and
/// ab_record_result records their results.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_start_experiment(experiment: Option<&str>) {
    start(ExperimentRef::Name(required(experiment, "experiment")))
}

#[pg_extern(name = "ab_start_experiment", volatile, parallel_unsafe)]
fn ab_start_experiment_by_id(experiment: Option<i64>) {
    start(ExperimentRef::Id(required(experiment, "experiment")))
}

fn stop(r: ExperimentRef<'_>, declare_winner: bool) -> JsonB {
    let out = Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::lock_experiment(client, &nsp, r);
        if exp.status != "running" {
            wrong_state(
                format!("experiment \"{}\" is not running (status {})", exp.name, exp.status),
                "only a running experiment can be stopped",
            );
        }
        let (winner, reason) = if declare_winner {
            let analysis = analysis::run(client, &nsp, &exp);
            analysis::store(client, &nsp, exp.id, &analysis);
            let d = analysis.decision(&exp);
            (d.winner, d.reason)
        } else {
            (None, "stopped without declaring a winner".to_string())
        };
        client
            .update(
                format!(
                    "UPDATE {nsp}.ab_experiments SET status = 'stopped', stopped_at = now(), winner_variant = $2 WHERE id = $1"
                )
                .as_str(),
                None,
                &[exp.id.into(), winner.as_deref().into()],
            )
            .or_raise();
        audit(client, &nsp, exp.id, &exp.name, "stopped", json!({"winner": winner, "reason": reason}));
        json!({"status": "stopped", "winner": winner, "reason": reason})
    });
    invalidate_local();
    JsonB(out)
}

/// Stops a running experiment. With declare_winner, analyses it and names a winner only when
/// the winner rule allows; the result says which, or why not.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_stop_experiment(experiment: Option<&str>, declare_winner: default!(Option<bool>, false)) -> JsonB {
    stop(ExperimentRef::Name(required(experiment, "experiment")), required(declare_winner, "declare_winner"))
}

#[pg_extern(name = "ab_stop_experiment", volatile, parallel_unsafe)]
fn ab_stop_experiment_by_id(experiment: Option<i64>, declare_winner: default!(Option<bool>, false)) -> JsonB {
    stop(ExperimentRef::Id(required(experiment, "experiment")), required(declare_winner, "declare_winner"))
}

/// The tables holding an experiment's per-user rows, each with an index led by experiment_id.
const PER_USER_TABLES: [(&str, &str); 4] = [
    ("ab_assignments", "ab_assignments_pkey"),
    ("ab_results", "ab_results_experiment"),
    ("ab_user_metrics", "ab_user_metrics_pkey"),
    ("ab_covariates", "ab_covariates_pkey"),
];

/// Tables added after 0.1.0, absent from a schema not yet updated.
const LATER_TABLES: [&str; 3] = ["ab_layer_experiments", "ab_user_metrics", "ab_allocations"];

fn delete(r: ExperimentRef<'_>) {
    Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::lock_experiment(client, &nsp, r);
        if exp.status == "running" {
            wrong_state(
                format!("experiment \"{}\" is running", exp.name),
                "stop it with ab_stop_experiment before deleting it",
            );
        }
        // Waits for every transaction still writing this experiment's rows; later writers wait
        // for this one and then find the experiment gone. Each DELETE below then sees every
        // row those transactions committed (READ COMMITTED takes a snapshot per statement).
        guard::lock_for_delete(catalog::relation_oid(client, &nsp, "ab_experiments"), exp.id);
        // Under Citus the experiment's row goes first: its trigger takes the same lock on every
        // node holding a placement of ab_experiments, before any of its rows there are deleted.
        let delete_experiment_row = |client: &mut pgrx::spi::SpiClient<'_>| {
            client
                .update(format!("DELETE FROM {nsp}.ab_experiments WHERE id = $1").as_str(), None, &[exp.id.into()])
                .or_raise();
        };
        let distributed = crate::citus::is_distributed(client, &nsp);
        if distributed {
            delete_experiment_row(client);
        }
        for table in [
            "ab_results",
            "ab_user_metrics",
            "ab_covariates",
            "ab_assignments",
            "ab_insights",
            "ab_allocations",
            "ab_variants",
            "ab_layer_experiments",
        ] {
            if LATER_TABLES.contains(&table) && !catalog::has_table(client, &nsp, table) {
                continue;
            }
            client
                .update(format!("DELETE FROM {nsp}.{table} WHERE experiment_id = $1").as_str(), None, &[exp.id.into()])
                .or_raise();
        }
        // Under REPEATABLE READ the snapshot predates rows that writers committed while this
        // transaction waited: they would outlive the experiment, so the delete must not commit.
        for (table, index) in PER_USER_TABLES {
            let (heap, index) =
                (catalog::relation_oid(client, &nsp, table), catalog::relation_oid(client, &nsp, index));
            if heap == pgrx::pg_sys::InvalidOid {
                continue;
            }
            if let Probe::Found(()) =
                lookup::has_row(heap, index, c"experiment_id", exp.id, Visibility::Latest, || false)
            {
                raise(
                    PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                    format!(
                        "could not delete experiment \"{}\": rows were written to {table} after this transaction's snapshot",
                        exp.name
                    ),
                    Some("retry the transaction".into()),
                );
            }
        }
        if !distributed {
            delete_experiment_row(client);
        }
        audit(client, &nsp, exp.id, &exp.name, "deleted", json!({}));
    });
    invalidate_local();
}

/// Deletes a draft or stopped experiment with its variants, assignments, results, covariates
/// and insights.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_delete_experiment(experiment: Option<&str>) {
    delete(ExperimentRef::Name(required(experiment, "experiment")))
}

#[pg_extern(name = "ab_delete_experiment", volatile, parallel_unsafe)]
fn ab_delete_experiment_by_id(experiment: Option<i64>) {
    delete(ExperimentRef::Id(required(experiment, "experiment")))
}
