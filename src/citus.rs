//! The tables' layout under Citus, as the hot path needs it. After `ab_distribute()` the
//! tables on every node are empty shells: the rows live in shard tables (`ab_assignments_102010`
//! and so on). A call that runs where the user's shard is (a call Citus delegated to the
//! worker, or any call on a node holding that shard) probes the shard directly; a call
//! elsewhere asks through Citus, which routes the query to the right node.
//!
//! Citus invalidates a distributed table's relcache entry whenever its shards or placements
//! change, and the cache watches ab_assignments, so a shard move reloads this map.

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::IntoDatum;

use crate::errors::SpiExt;

/// A shard table and its primary-key index on this node.
#[derive(Clone, Copy)]
pub struct LocalShard {
    pub heap: pg_sys::Oid,
    pub index: pg_sys::Oid,
}

pub struct Layout {
    /// ab_assignments' shards placed on this node: (min hash, max hash, shard).
    assignments: Vec<(i32, i32, LocalShard)>,
    /// This node's placement of the ab_experiments reference table, if it has one.
    pub experiments: Option<LocalShard>,
}

impl Layout {
    /// The local shard of ab_assignments that holds `user_id`, if this node has it.
    pub fn assignments_shard(&self, user_id: &str) -> Option<LocalShard> {
        let h = hash(user_id);
        self.assignments.iter().find(|(lo, hi, _)| *lo <= h && h <= *hi).map(|(_, _, s)| *s)
    }
}

/// Citus's hash of a text distribution value: hashtext under the column's collation ("C").
pub fn hash(value: &str) -> i32 {
    unsafe {
        let datum = value.into_datum().unwrap();
        let h = pg_sys::OidFunctionCall1Coll(
            pg_sys::Oid::from(pg_sys::F_HASHTEXT),
            pg_sys::Oid::from(pg_sys::C_COLLATION_OID),
            datum,
        );
        pg_sys::pfree(datum.cast_mut_ptr());
        h.value() as u32 as i32
    }
}

/// Whether Citus hash-distributes the extension's per-user tables in this database.
pub fn is_distributed(client: &SpiClient<'_>, nsp: &str) -> bool {
    let has_citus = client
        .select("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')", Some(1), &[])
        .or_raise()
        .first()
        .get_one::<bool>()
        .or_raise()
        .unwrap_or(false);
    has_citus
        && client
            .select(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition \
                 WHERE logicalrelid = pg_catalog.to_regclass($1 || '.ab_assignments') AND partmethod = 'h')",
                Some(1),
                &[nsp.into()],
            )
            .or_raise()
            .first()
            .get_one::<bool>()
            .or_raise()
            .unwrap_or(false)
}

/// Whether relation `oid` is a Citus table (distributed or reference).
pub fn is_citus_table(client: &SpiClient<'_>, oid: pgrx::pg_sys::Oid) -> bool {
    client
        .select(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') \
                    AND pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
            Some(1),
            &[],
        )
        .or_raise()
        .first()
        .get_one::<bool>()
        .or_raise()
        .unwrap_or(false)
        && client
            .select(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)",
                Some(1),
                &[oid.into()],
            )
            .or_raise()
            .first()
            .get_one::<bool>()
            .or_raise()
            .unwrap_or(false)
}

/// The layout when ab_assignments is hash-distributed by Citus, else None.
pub fn load(client: &SpiClient<'_>, nsp: &str) -> Option<Layout> {
    if !is_distributed(client, nsp) {
        return None;
    }
    let local = |table: &str, index: &str| -> Vec<(Option<i32>, Option<i32>, LocalShard)> {
        client
            .select(
                "SELECT s.shardminvalue::int4, s.shardmaxvalue::int4, \
                        pg_catalog.to_regclass($1 || '.' || pg_catalog.quote_ident($2 || '_' || s.shardid))::oid, \
                        pg_catalog.to_regclass($1 || '.' || pg_catalog.quote_ident($3 || '_' || s.shardid))::oid \
                 FROM pg_catalog.pg_dist_shard s \
                 JOIN pg_catalog.pg_dist_placement p ON p.shardid = s.shardid \
                 WHERE s.logicalrelid = pg_catalog.to_regclass($1 || '.' || $2) \
                   AND p.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group)",
                None,
                &[nsp.into(), table.into(), index.into()],
            )
            .or_raise()
            .filter_map(|row| {
                let heap = row.get::<pg_sys::Oid>(3).or_raise()?;
                let index = row.get::<pg_sys::Oid>(4).or_raise()?;
                Some((row.get::<i32>(1).or_raise(), row.get::<i32>(2).or_raise(), LocalShard { heap, index }))
            })
            .collect()
    };
    let assignments = local("ab_assignments", "ab_assignments_pkey")
        .into_iter()
        .filter_map(|(lo, hi, s)| Some((lo?, hi?, s)))
        .collect();
    let experiments = local("ab_experiments", "ab_experiments_pkey").into_iter().next().map(|(_, _, s)| s);
    Some(Layout { assignments, experiments })
}
