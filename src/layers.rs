//! Layers of mutually exclusive experiments. Creating and deleting layers is SQL
//! (sql/functions.sql); placing an experiment in its layer happens in ab_create_experiment;
//! the hash needs Rust, so where a user falls is answered here.

use ab_core::bucketing::point;
use pgrx::prelude::*;

use crate::assignment::check_id;
use crate::catalog;
use crate::errors::SpiExt;

/// Where a user falls in a layer: 'holdout', the name of the draft or running experiment that
/// owns the user's layer point, or NULL when no experiment owns it.
#[pg_extern(stable, parallel_safe)]
fn ab_layer_group(layer: &str, user_id: &str) -> Option<String> {
    check_id("user_id", user_id);
    Spi::connect(|client| {
        let nsp = catalog::schema(client);
        let catalog::LayerRow { id, salt, holdout_bp } = catalog::get_layer(client, &nsp, layer);
        let p = point(&salt, user_id);
        if p < holdout_bp {
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
                &[id.into(), (p as i32).into()],
            )
            .or_raise();
        if owner.is_empty() {
            None
        } else {
            owner.first().get_one::<String>().or_raise()
        }
    })
}

/// The name in Unicode NFC, or an error (22023) saying why it cannot name an experiment,
/// variant, metric or layer; `what` names it in the message. The SQL-language functions
/// (ab_create_layer) check names with the same rules as the definitions.
#[pg_extern(immutable, parallel_safe)]
fn ab_normalize_name(what: Option<&str>, name: Option<&str>) -> String {
    let what = what.unwrap_or("name");
    let name = crate::errors::required(name, what);
    ab_core::names::normalize_name(what, name).unwrap_or_else(|e| crate::errors::core_error(e)).into_owned()
}
