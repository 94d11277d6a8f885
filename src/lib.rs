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
mod subxact;
mod timeline;
mod user_metrics;

::pgrx::pg_module_magic!();

/// `ab_testing.summary_interactions`: whether `ab_summary` looks for interactions with other
/// experiments (reads their assignments and values); off where only the recommendation is
/// needed, as on the gateway's list page.
pub static SUMMARY_INTERACTIONS: pgrx::GucSetting<bool> = pgrx::GucSetting::<bool>::new(true);

/// `ab_testing.summary_interactions_limit`: the most experiments sharing users that
/// `ab_summary` analyses; past it, it says so and names `ab_interactions`.
pub static SUMMARY_INTERACTIONS_LIMIT: pgrx::GucSetting<i32> = pgrx::GucSetting::<i32>::new(10);

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
    pgrx::GucRegistry::define_int_guc(
        c"ab_testing.summary_interactions_limit",
        c"The most other experiments sharing users that ab_summary checks for interactions.",
        c"Past it, ab_summary says how to check them all (ab_interactions) instead of analysing each.",
        &SUMMARY_INTERACTIONS_LIMIT,
        0,
        1000,
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
