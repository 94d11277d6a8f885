//! ab_testing: A/B experiments inside PostgreSQL.
//!
//! The pure logic (bucketing, definitions, statistics, the winner rule) lives in the
//! `ab_core` crate; this crate is the thin SQL layer over it: it reads arguments, runs SPI,
//! calls `ab_core` and returns rows.

use pgrx::prelude::*;

mod adjusted;
mod analysis;
mod assignment;
mod bandit;
mod bayes;
mod breakdown;
mod bulk;
mod cache;
mod catalog;
mod citus;
mod compat;
mod errors;
mod experiments;
mod funnel;
mod guard;
mod impact;
mod jsonb;
mod layers;
mod lookup;
mod results;
mod rollout;
mod security;
mod sources;
mod stats;
mod timeline;
mod user_metrics;

::pgrx::pg_module_magic!();

/// `ab_testing.summary_interactions`: whether `ab_summary` looks for interactions with other
/// experiments (reads their assignments and values); off where only the recommendation is
/// needed, as on the gateway's list page.
pub static SUMMARY_INTERACTIONS: pgrx::GucSetting<bool> = pgrx::GucSetting::<bool>::new(true);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    pgrx::GucRegistry::define_bool_guc(
        c"ab_testing.summary_interactions",
        c"Whether ab_summary ends with the interactions with other experiments.",
        c"Off: ab_summary does not look for experiments sharing users (their assignments and values are not read).",
        &SUMMARY_INTERACTIONS,
        pgrx::GucContext::Userset,
        pgrx::GucFlags::default(),
    );
}

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/aggregates.sql", name = "aggregates", requires = ["schema"]);
extension_sql_file!("../sql/distribute.sql", name = "distribute", requires = ["aggregates"]);
extension_sql_file!("../sql/functions.sql", name = "functions", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
