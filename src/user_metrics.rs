//! `ab_rebuild_user_metrics`: recomputes an experiment's per-user state (ab_user_metrics) from
//! its raw results, for an operator who changed ab_results directly (a bulk load, a deletion).

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::{self, ExperimentRef};
use crate::errors::{raise, required, wrong_state, SpiExt};
use crate::guard;

fn rebuild(r: ExperimentRef<'_>) -> i64 {
    if crate::cache::snapshot_is_transaction_wide() {
        // Its snapshot would predate results committed while it waited for their writers.
        raise(
            PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
            "ab_rebuild_user_metrics runs only in a READ COMMITTED transaction",
            Some("call it outside an explicit REPEATABLE READ or SERIALIZABLE transaction".into()),
        );
    }
    Spi::connect_mut(|client| {
        let nsp = catalog::schema(client);
        let exp = catalog::lock_experiment(client, &nsp, r);
        if exp.status == "running" && crate::citus::is_distributed(client, &nsp) {
            // The writers' lock is per node: a coordinator cannot wait for the writers on workers.
            wrong_state(
                format!("experiment \"{}\" is running", ab_core::names::printable(&exp.name)),
                "under Citus, stop the experiment before rebuilding its per-user state",
            );
        }
        // Waits for every transaction writing this experiment's rows and keeps new writers out
        // until commit; each statement below then reads every committed result.
        guard::lock_for_rebuild(catalog::relation_oid(client, &nsp, "ab_experiments"), exp.id);
        client
            .update(
                format!("DELETE FROM {nsp}.ab_user_metrics WHERE experiment_id = $1").as_str(),
                None,
                &[exp.id.into()],
            )
            .or_raise();
        let sql = format!(
            "INSERT INTO {nsp}.ab_user_metrics (experiment_id, metric_name, user_id, variant_id, n, total, max) \
             SELECT experiment_id, metric_name, user_id, variant_id, count(*), sum(metric_value), max(metric_value) \
             FROM {nsp}.ab_results WHERE experiment_id = $1 GROUP BY experiment_id, metric_name, user_id, variant_id"
        );
        client.update(sql.as_str(), None, &[exp.id.into()]).or_raise().len() as i64
    })
}

/// Recomputes an experiment's per-user state from ab_results; returns the number of (user,
/// metric) rows. Needed only after ab_results was changed other than by ab_record_result.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_rebuild_user_metrics(experiment: Option<&str>) -> i64 {
    rebuild(ExperimentRef::Name(required(experiment, "experiment")))
}

#[pg_extern(name = "ab_rebuild_user_metrics", volatile, parallel_unsafe)]
fn ab_rebuild_user_metrics_by_id(experiment: Option<i64>) -> i64 {
    rebuild(ExperimentRef::Id(required(experiment, "experiment")))
}
