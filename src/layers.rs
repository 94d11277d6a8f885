//! Layers of mutually exclusive experiments. Creating and deleting layers is SQL
//! (sql/functions.sql); placing an experiment in its layer happens in ab_create_experiment;
//! the hash needs Rust, so where a user falls is answered here.

use ab_core::bucketing::point;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::assignment::check_id;
use crate::catalog;
use crate::errors::{raise, SpiExt};

/// Where a user falls in a layer: 'holdout', the name of the draft or running experiment that
/// owns the user's layer point, or NULL when no experiment owns it.
#[pg_extern(stable, parallel_safe)]
fn ab_layer_group(layer: &str, user_id: &str) -> Option<String> {
    check_id("user_id", user_id);
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let table = client
            .select(
                format!(
                    "SELECT id, salt, round(holdout_percentage * 100)::integer FROM {nsp}.ab_layers WHERE name = $1"
                )
                .as_str(),
                Some(1),
                &[layer.into()],
            )
            .or_raise();
        if table.is_empty() {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("layer \"{layer}\" does not exist"),
                Some("ab_layer_overview lists the layers".into()),
            );
        }
        let row = table.first();
        let id: i64 = row.get(1).or_raise().unwrap();
        let salt: String = row.get(2).or_raise().unwrap();
        let holdout = row.get::<i32>(3).or_raise().unwrap();
        let p = point(&salt, user_id) as i32;
        if p < holdout {
            return Some("holdout".to_string());
        }
        let owner = client
            .select(
                format!(
                    "SELECT e.name FROM {nsp}.ab_layer_experiments m JOIN {nsp}.ab_experiments e ON e.id = m.experiment_id \
                     WHERE m.layer_id = $1 AND e.status <> 'stopped' AND m.range_start <= $2 AND $2 < m.range_end"
                )
                .as_str(),
                Some(1),
                &[id.into(), p.into()],
            )
            .or_raise();
        if owner.is_empty() {
            None
        } else {
            owner.first().get_one::<String>().or_raise()
        }
    })
}
