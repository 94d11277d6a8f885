//! Metric sources: `ab_create_metric_source`, `ab_drop_metric_source`, and the catalog checks
//! that turn a source's names into SQL (`ab_core::source`). A source is checked when it is
//! registered, when an experiment naming it is created, and again at each analysis (its
//! table may have changed since), always by `bind`: it decides who reads the relation.
//!
//! Whose code runs as whom: a source relation's owner controls what reading it runs (a view's
//! functions, policies, casts, index expressions). When the owner already holds every
//! privilege of the calling role, the read runs as the caller (its privileges and row-level
//! security decide, as if it had run the query itself). Otherwise it runs as the owner in a
//! security-restricted operation, as PostgreSQL's maintenance commands do, after checking
//! that the caller may read every column it reads, and is refused where the owner would see
//! rows the caller could not (row-level security, a security_invoker view, a foreign table).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use ab_core::definition::{MetricDef, SourceRef};
use ab_core::names::{did_you_mean, normalize_name, printable};
use ab_core::source::{
    aggregated_sql, condition_sql, parse_spec, quote_ident, unnest_sql, Bound, Enrolled, EnrolledSet, Measure,
    SourceSpec, Span, DAILY_COLUMNS, PER_USER_COLUMNS, TIMES_COLUMNS,
};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{PgMemoryContexts, PgSqlErrorCode};

use crate::errors::{core_error, raise, required, SpiExt};
use crate::jsonb::RawJsonb;

const TIMESTAMPTZ: u32 = 1184;
const TIMESTAMP: u32 = 1114;
const TEXT: u32 = 25;
const NUMBERS: [u32; 6] = [21, 23, 20, 700, 701, 1700];

struct Column {
    quoted: String,
    type_oid: u32,
    type_name: String,
    collation: Option<String>,
}

/// The relation's columns by name (user columns only).
fn columns(client: &SpiClient<'_>, oid: pg_sys::Oid) -> Vec<(String, Column)> {
    client
        .select(
            "SELECT a.attname::text, a.atttypid::int8, pg_catalog.format_type(a.atttypid, a.atttypmod), co.collname::text \
             FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            None,
            &[oid.into()],
        )
        .or_raise()
        .map(|row| {
            let name: String = row.get(1).or_raise().unwrap();
            let column = Column {
                quoted: quote_ident(&name),
                type_oid: row.get::<i64>(2).or_raise().unwrap() as u32,
                type_name: row.get(3).or_raise().unwrap(),
                collation: row.get(4).or_raise(),
            };
            (name, column)
        })
        .collect()
}

/// Who reads a source relation for the calling role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The relation's owner holds every privilege of the caller: the caller reads it.
    Caller,
    /// The relation's owner (an oid) reads it, in a security-restricted operation.
    Owner(pg_sys::Oid),
}

/// A source checked against the catalog: its SQL and who reads it.
pub struct Checked {
    pub bound: Bound,
    pub reader: Reader,
    /// What the read reads: (schema, relation, columns), for the stored analysis.
    pub read: Read,
}

pub type Read = (String, String, Vec<String>);

/// Schemas a source may never read: the system catalogs (a filter on pg_authid.rolpassword
/// would be a comparison oracle) and the extension's own schema (unless that is public, where
/// the application's tables live too: there the extension's tables are refused as members of
/// an extension, below).
fn forbidden_schema(schema: &str, nsp: &str) -> bool {
    ["pg_catalog", "information_schema"].contains(&schema)
        || schema.starts_with("pg_toast")
        || schema.starts_with("pg_temp")
        || (schema != "public" && (quote_ident(schema) == nsp || schema == nsp))
}

fn forbidden(what: &str, spelled: &str, place: String) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("{what}: relation \"{}\" is {place}, which a metric source may not read", printable(spelled)),
        Some("a source reads the application's own tables, not the system catalogs or an extension's tables".into()),
    )
}

fn role_name(client: &SpiClient<'_>, role: pg_sys::Oid) -> String {
    client
        .select("SELECT pg_catalog.pg_get_userbyid($1)::text", Some(1), &[role.into()])
        .or_raise()
        .first()
        .get_one::<String>()
        .or_raise()
        .unwrap_or_default()
}

/// What the relation is, read under the lock the read will hold (so that no concurrent
/// ALTER can change its owner, kind or options before the read).
struct Locked {
    kind: u8,
    owner: pg_sys::Oid,
    row_security: bool,
    security_invoker: bool,
}

fn lock(oid: pg_sys::Oid, schema: &str, relation: &str, what: &str, spelled: &str) -> Locked {
    let gone = || -> ! {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("{what}: relation \"{}\" does not exist", printable(spelled)),
            None,
        )
    };
    unsafe {
        let rel = pg_sys::try_relation_open(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        if rel.is_null() {
            gone();
        }
        let form = &*(*rel).rd_rel;
        let kind = form.relkind as u8;
        let locked = Locked {
            kind,
            owner: form.relowner,
            row_security: form.relrowsecurity,
            security_invoker: kind == b'v'
                && !(*rel).rd_options.is_null()
                && (*((*rel).rd_options as *const pg_sys::ViewOptions)).security_invoker,
        };
        pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        // The name must still be this relation once locked (it may have been renamed or
        // replaced while we waited).
        let schema = std::ffi::CString::new(schema).unwrap_or_default();
        let relation = std::ffi::CString::new(relation).unwrap_or_default();
        let namespace = pg_sys::get_namespace_oid(schema.as_ptr(), true);
        if namespace == pg_sys::InvalidOid || pg_sys::get_relname_relid(relation.as_ptr(), namespace) != oid {
            gone();
        }
        locked
    }
}

/// The owners of the relation `oid` and of every relation, function, operator and type it is
/// built on (through views, indexes, policies, constraints and statistics, recursively), of
/// the function casting the user column's type (`user_type`) to text, and of the relation's
/// schema (whose owner can put another relation under the same name between the check and
/// the read).
fn code_owners(client: &SpiClient<'_>, oid: pg_sys::Oid, user_type: u32) -> Vec<pg_sys::Oid> {
    client
        .select(
            "WITH RECURSIVE obj(classid, objid) AS ( \
                 SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, $1::pg_catalog.oid \
               UNION \
                 SELECT x.classid, x.objid FROM obj o, LATERAL ( \
                     SELECT d.refclassid AS classid, d.refobjid AS objid FROM pg_catalog.pg_depend d \
                     WHERE d.classid = o.classid AND d.objid = o.objid AND d.deptype IN ('n', 'a') \
                       AND d.refclassid IN ('pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_proc'::pg_catalog.regclass, \
                                            'pg_catalog.pg_type'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass) \
                     UNION ALL \
                     SELECT d.classid, d.objid FROM pg_catalog.pg_depend d \
                     WHERE o.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refclassid = o.classid \
                       AND d.refobjid = o.objid AND d.deptype IN ('a', 'i') \
                       AND d.classid IN ('pg_catalog.pg_rewrite'::pg_catalog.regclass, 'pg_catalog.pg_policy'::pg_catalog.regclass, \
                                         'pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_constraint'::pg_catalog.regclass, \
                                         'pg_catalog.pg_statistic_ext'::pg_catalog.regclass)) x) \
             SELECT DISTINCT owner FROM ( \
                 SELECT c.relowner AS owner FROM obj JOIN pg_catalog.pg_class c ON obj.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.oid = obj.objid \
                 UNION ALL SELECT p.proowner FROM obj JOIN pg_catalog.pg_proc p ON obj.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = obj.objid \
                 UNION ALL SELECT t.typowner FROM obj JOIN pg_catalog.pg_type t ON obj.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND t.oid = obj.objid \
                 UNION ALL SELECT o.oprowner FROM obj JOIN pg_catalog.pg_operator o ON obj.classid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND o.oid = obj.objid \
                 UNION ALL SELECT p.proowner FROM pg_catalog.pg_cast k JOIN pg_catalog.pg_proc p ON p.oid = k.castfunc \
                   WHERE k.castsource = $2 AND k.casttarget = 'pg_catalog.text'::pg_catalog.regtype \
                 UNION ALL SELECT t.typowner FROM pg_catalog.pg_type t WHERE t.oid = $2 \
                 UNION ALL SELECT CASE WHEN n.nspowner = 'pg_database_owner'::pg_catalog.regrole THEN d.datdba \
                                       ELSE n.nspowner END \
                   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                   JOIN pg_catalog.pg_database d ON d.datname = pg_catalog.current_database() WHERE c.oid = $1) owners",
            None,
            &[oid.into(), pg_sys::Oid::from(user_type).into()],
        )
        .or_raise()
        .filter_map(|row| row.get::<pg_sys::Oid>(1).or_raise())
        .collect()
}

/// The one rule for every read of a source relation by the calling role (the session's role
/// as SET ROLE left it), at registration, at experiment creation and at each analysis.
#[allow(clippy::too_many_arguments)]
fn reader(
    client: &SpiClient<'_>,
    oid: pg_sys::Oid,
    namespace: &str,
    relation: &str,
    spelled: &str,
    locked: &Locked,
    read: &[&str],
    user_type: u32,
    what: &str,
) -> Reader {
    // A call from a source's own code during its read would be taken as the session's role.
    if crate::security::in_source_read() {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("{what}: a metric source cannot be read from inside the read of another metric source"),
            None,
        );
    }
    let caller = unsafe { pg_sys::GetOuterUserId() };
    // The caller may read each column the read uses, as if it ran the query itself.
    let row = client
        .select(
            "SELECT pg_catalog.has_schema_privilege($1, n.oid, 'USAGE'), \
                    (SELECT pg_catalog.bool_and(pg_catalog.has_column_privilege($1, $2, c, 'SELECT')) \
                     FROM pg_catalog.unnest($3::text[]) c) \
             FROM pg_catalog.pg_namespace n WHERE n.nspname = $4",
            Some(1),
            &[
                caller.into(),
                oid.into(),
                read.iter().map(|c| c.to_string()).collect::<Vec<_>>().into(),
                namespace.into(),
            ],
        )
        .or_raise();
    let row = row.first();
    if row.get::<bool>(1).or_raise() != Some(true) {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for schema {namespace}"),
            None,
        );
    }
    if row.get::<bool>(2).or_raise() != Some(true) {
        raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("permission denied for table {relation}"), None);
    }
    let owner = locked.owner;
    let holds = |o: pg_sys::Oid, of: pg_sys::Oid| {
        o == of || unsafe { pg_sys::superuser_arg(o) || pg_sys::has_privs_of_role(o, of) }
    };
    // Whoever controls code that reading the relation can run: its owner, and the owners of
    // what it is built on (a view's relations, functions, operators and types, recursively;
    // a relation's indexes, policies, constraints and statistics; the cast of the user
    // column to text).
    let owners = code_owners(client, oid, user_type);
    if owners.iter().all(|o| holds(*o, caller)) {
        return Reader::Caller;
    }
    if let Some(other) = owners.iter().find(|o| !holds(**o, owner)) {
        let (x, o, c) = (role_name(client, *other), role_name(client, owner), role_name(client, caller));
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "{what}: relation \"{}\" runs code of role \"{}\" (a relation, function, operator or type it is built on), \
                 which holds the privileges neither of role \"{}\" nor of the relation's owner \"{}\"",
                printable(spelled),
                printable(&x),
                printable(&c),
                printable(&o)
            ),
            Some(format!(
                "that code would run with the privileges of one of them: have the relation owned by \"{}\", \
                 or by a role whose privileges \"{}\" holds",
                printable(&x),
                printable(&x)
            )),
        );
    }
    let refuse = |why: String| -> ! {
        let (o, c) = (role_name(client, owner), role_name(client, caller));
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "{what}: relation \"{}\" is owned by role \"{}\", which does not hold the privileges of role \"{}\", and {why}",
                printable(spelled),
                printable(&o),
                printable(&c)
            ),
            Some(format!(
                "a relation owned by another role is read as its owner, which cannot keep this case as \"{}\" sees it: \
                 run the analysis as \"{}\", or have the relation owned by a role that holds the privileges of \"{}\"",
                printable(&c),
                printable(&o),
                printable(&c)
            )),
        )
    };
    if locked.row_security
        && unsafe { pg_sys::check_enable_rls(oid, caller, true) } == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
    {
        refuse(format!("row-level security applies to \"{}\" on it", printable(&role_name(client, caller))));
    }
    if locked.security_invoker {
        refuse("it is a security_invoker view (its relations would be checked against its owner)".into());
    }
    if locked.kind == b'f' {
        refuse("it is a foreign table (it would be read through its owner's user mapping)".into());
    }
    if crate::citus::is_citus_table(client, oid) {
        refuse("it is distributed by Citus (a read as its owner is not supported there)".into());
    }
    Reader::Owner(owner)
}

/// Checks a source's relation and columns against the catalog and the calling role's
/// privileges, locks the relation, and returns it as SQL with who reads it. `what` names the
/// source in messages ("source of metric \"x\"").
pub fn bind(client: &SpiClient<'_>, nsp: &str, spec: &SourceSpec, what: &str) -> Checked {
    let parts: Vec<String> = client
        .select("SELECT pg_catalog.parse_ident($1)", Some(1), &[spec.relation.as_str().into()])
        .or_raise()
        .first()
        .get_one::<Vec<String>>()
        .or_raise()
        .unwrap_or_default();
    let [schema, relation] = &parts[..] else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_NAME,
            format!("{what}: relation \"{}\" must be qualified with its schema", printable(&spec.relation)),
            Some("write it as schema.relation, such as public.loan_applications".into()),
        )
    };
    if forbidden_schema(schema, nsp) {
        forbidden(what, &spec.relation, format!("in schema \"{}\"", printable(schema)));
    }
    let found = client
        .select(
            "SELECT c.oid, c.relkind::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            Some(1),
            &[schema.as_str().into(), relation.as_str().into()],
        )
        .or_raise();
    let row = found.into_iter().next().map(|r| (r.get::<pg_sys::Oid>(1).or_raise(), r.get::<String>(2).or_raise()));
    let (oid, kind) = match row {
        Some((Some(oid), Some(kind))) => (oid, kind),
        _ => raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("{what}: relation \"{}\" does not exist", printable(&spec.relation)),
            None,
        ),
    };
    if !["r", "p", "v", "m", "f"].contains(&kind.as_str()) {
        raise(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("{what}: \"{}\" is not a table or view", printable(&spec.relation)),
            None,
        );
    }
    let locked = lock(oid, schema, relation, what, &spec.relation);
    let member = client
        .select(
            "SELECT e.extname::text FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid \
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = $1 \
               AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'",
            Some(1),
            &[oid.into()],
        )
        .or_raise()
        .next()
        .and_then(|r| r.get::<String>(1).or_raise());
    if let Some(extension) = member {
        forbidden(what, &spec.relation, format!("a part of extension \"{}\"", printable(&extension)));
    }
    let cols = columns(client, oid);
    let find = |role: &str, name: &str| -> &Column {
        match cols.iter().find(|(n, _)| n == name) {
            Some((_, c)) => c,
            None => raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!(
                    "{what}: {role} \"{}\" is not a column of \"{}\"{}",
                    printable(name),
                    printable(&spec.relation),
                    did_you_mean(name, cols.iter().map(|(n, _)| n.as_str()))
                ),
                None,
            ),
        }
    };
    let mismatch = |role: &str, name: &str, c: &Column, expected: &str| -> ! {
        raise(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("{what}: {role} \"{}\" is of type {}, must be {expected}", printable(name), c.type_name),
            None,
        )
    };
    let user = find("user_column", &spec.user_column);
    // Compared with ab_assignments.user_id (text, collation "C"): a text column in "C" as it
    // is (so that a co-located Citus table joins on its distribution column), else as text.
    let user_sql = if user.type_oid == TEXT && user.collation.as_deref() == Some("C") {
        format!("s.{}", user.quoted)
    } else {
        format!("(s.{}::pg_catalog.text COLLATE \"C\")", user.quoted)
    };
    let time = find("time_column", &spec.time_column);
    if ![TIMESTAMPTZ, TIMESTAMP].contains(&time.type_oid) {
        mismatch("time_column", &spec.time_column, time, "timestamp with time zone (or without)");
    }
    let value = spec.value_column.as_deref().map(|name| {
        let c = find("value_column", name);
        if !NUMBERS.contains(&c.type_oid) {
            mismatch(
                "value_column",
                name,
                c,
                "a number (smallint, integer, bigint, real, double precision or numeric)",
            );
        }
        c.quoted.clone()
    });
    let conditions =
        spec.filter.iter().map(|c| condition_sql(&find("filter column", &c.column).quoted, &c.test)).collect();
    let mut read: Vec<&str> = vec![&spec.user_column, &spec.time_column];
    read.extend(spec.value_column.as_deref());
    read.extend(spec.filter.iter().map(|c| c.column.as_str()));
    let reader = reader(client, oid, schema, relation, &spec.relation, &locked, &read, user.type_oid, what);
    let read = (schema.clone(), relation.clone(), read.iter().map(|c| c.to_string()).collect());
    Checked {
        bound: Bound {
            relation: format!("{}.{}", quote_ident(schema), quote_ident(relation)),
            user: user_sql,
            time: time.quoted.clone(),
            naive_time: time.type_oid == TIMESTAMP,
            value,
            conditions,
        },
        reader,
        read,
    }
}

/// A registered source's definition (42704 when there is none).
fn registered(client: &SpiClient<'_>, nsp: &str, name: &str, what: &str) -> SourceSpec {
    if !crate::catalog::has_table(client, nsp, "ab_metric_sources") {
        crate::errors::wrong_state(
            "metric sources need version 0.11.0 of the ab_testing schema",
            "run ALTER EXTENSION ab_testing UPDATE",
        );
    }
    let found = client
        .select(&format!("SELECT definition FROM {nsp}.ab_metric_sources WHERE name = $1"), Some(1), &[name.into()])
        .or_raise()
        .next()
        .and_then(|r| r.get::<pgrx::JsonB>(1).or_raise());
    match found {
        Some(d) => parse_spec(&d.0).unwrap_or_else(|e| core_error(e)),
        None => raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("{what}: metric source \"{}\" does not exist", printable(name)),
            Some("ab_metric_sources lists the sources; ab_create_metric_source registers one".into()),
        ),
    }
}

pub fn spec_of(client: &SpiClient<'_>, nsp: &str, r: &SourceRef, what: &str) -> SourceSpec {
    match r {
        SourceRef::Named(n) => registered(client, nsp, n, what),
        SourceRef::Inline(s) => s.clone(),
    }
}

/// A source metric as the analysis reads it: its source and, with CUPED, its covariate's,
/// each with who reads it.
pub struct SourceMetric {
    pub name: String,
    pub measure: Measure,
    pub source: Bound,
    pub reader: Reader,
    pub span: Span,
    pub covariate: Option<(Bound, Span)>,
    pub covariate_reader: Reader,
    /// The relations and columns the metric reads (its source's, its covariate's).
    pub read: Vec<Read>,
    reads: Option<Rc<Reads>>,
}

/// The first parameter number of the reads made ahead; a statement's own parameters come
/// before it.
const FIRST_READ_PARAM: usize = 11;

const INT8: u32 = 20;
const INT8_ARRAY: u32 = 1016;
const INT4_ARRAY: u32 = 1007;
const TEXT_ARRAY: u32 = 1009;
const FLOAT8_ARRAY: u32 = 1022;
const TIMESTAMPTZ_ARRAY: u32 = 1185;

fn array_type(t: &str) -> u32 {
    match t {
        "int8" => INT8_ARRAY,
        "int4" => INT4_ARRAY,
        "text" => TEXT_ARRAY,
        "timestamptz" => TIMESTAMPTZ_ARRAY,
        _ => FLOAT8_ARRAY,
    }
}

/// One analysis's reads made ahead as a source's owner: each read's rows as arrays (one per
/// column), kept in a memory context of their own until the analysis ends, and passed to the
/// analysis's statements as parameters $11, $12, ...
pub struct Reads {
    experiment_id: i64,
    context: RefCell<PgMemoryContexts>,
    /// The enrolled users: user_id text[], variant_id int8[], assigned_at timestamptz[].
    enrolled: RefCell<Option<Vec<Option<pg_sys::Datum>>>>,
    params: RefCell<Vec<(Option<pg_sys::Datum>, u32)>>,
    done: RefCell<HashMap<String, usize>>,
}

impl Reads {
    pub fn new(experiment_id: i64) -> Rc<Reads> {
        Rc::new(Reads {
            experiment_id,
            context: RefCell::new(PgMemoryContexts::new("ab_testing source reads")),
            enrolled: RefCell::new(None),
            params: RefCell::new(vec![]),
            done: RefCell::new(HashMap::new()),
        })
    }

    /// The single row of `sql`'s datums, copied out of SPI's memory.
    fn row(
        &self,
        client: &SpiClient<'_>,
        sql: &str,
        args: &[DatumWithOid<'_>],
        n: usize,
    ) -> Vec<Option<pg_sys::Datum>> {
        let table = client.select(sql, Some(1), args).or_raise();
        let row = table.first();
        (1..=n)
            .map(|i| {
                let d = row.get_datum_by_ordinal(i).or_raise()?;
                // SAFETY: d is a varlena (an array) of the live SPI result; the copy is made in
                // this analysis's own context.
                Some(unsafe {
                    self.context
                        .borrow_mut()
                        .switch_to(|_| pg_sys::Datum::from(pg_sys::pg_detoast_datum_copy(d.cast_mut_ptr())))
                })
            })
            .collect()
    }

    /// The read `sql` (over the enrolled users passed as $4, $5, $6; the timeline's first
    /// day as $3), run ahead as `owner`; returns the SQL that gives back its rows.
    #[allow(clippy::too_many_arguments)]
    fn ahead(
        &self,
        client: &SpiClient<'_>,
        nsp: &str,
        key: String,
        owner: pg_sys::Oid,
        sql: &str,
        columns: &[(&str, &str)],
        day: Option<&str>,
    ) -> String {
        if let Some(first) = self.done.borrow().get(&key) {
            return unnest_sql(*first, columns);
        }
        if self.enrolled.borrow().is_none() {
            let users = self.row(
                client,
                &format!(
                    "SELECT pg_catalog.array_agg(user_id), pg_catalog.array_agg(variant_id), pg_catalog.array_agg(assigned_at) \
                     FROM {nsp}.ab_assignments WHERE experiment_id = $1"
                ),
                &[self.experiment_id.into()],
                3,
            );
            *self.enrolled.borrow_mut() = Some(users);
        }
        let enrolled = self.enrolled.borrow();
        let enrolled = enrolled.as_ref().unwrap();
        let arg = |d: Option<pg_sys::Datum>, t: u32| DatumWithOid::null_oid(t.into()).with(d);
        let args = [
            self.experiment_id.into(),
            DatumWithOid::null_oid(TEXT.into()),
            day.map(|d| d.into()).unwrap_or_else(|| DatumWithOid::null_oid(TEXT.into())),
            arg(enrolled[0], TEXT_ARRAY),
            arg(enrolled[1], INT8_ARRAY),
            arg(enrolled[2], TIMESTAMPTZ_ARRAY),
        ];
        let arrays =
            crate::security::as_owner(owner, || self.row(client, &aggregated_sql(sql, columns), &args, columns.len()));
        let mut params = self.params.borrow_mut();
        let first = FIRST_READ_PARAM + params.len();
        params.extend(arrays.into_iter().zip(columns.iter().map(|(_, t)| array_type(t))));
        self.done.borrow_mut().insert(key, first);
        unnest_sql(first, columns)
    }
}

trait WithDatum<'a> {
    fn with(self, d: Option<pg_sys::Datum>) -> DatumWithOid<'a>;
}

impl<'a> WithDatum<'a> for DatumWithOid<'a> {
    fn with(self, d: Option<pg_sys::Datum>) -> DatumWithOid<'a> {
        match d {
            Some(d) => unsafe { DatumWithOid::new(d, self.oid()) },
            None => self,
        }
    }
}

/// What an analysis read from sources, as stored with it (ab_insights.source_reads): each
/// relation once, with the columns read; None without sources.
pub fn source_reads(sources: &HashMap<String, SourceMetric>) -> Option<serde_json::Value> {
    if sources.is_empty() {
        return None;
    }
    let mut by_relation: std::collections::BTreeMap<(String, String), std::collections::BTreeSet<String>> =
        Default::default();
    for (schema, relation, columns) in sources.values().flat_map(|s| s.read.iter()) {
        by_relation.entry((schema.clone(), relation.clone())).or_default().extend(columns.iter().cloned());
    }
    Some(serde_json::Value::Array(
        by_relation
            .into_iter()
            .map(|((schema, relation), columns)| {
                serde_json::json!({"schema": schema, "relation": relation, "columns": columns})
            })
            .collect(),
    ))
}

/// A statement's arguments `base` followed by the reads the analysis made ahead (none when
/// every source is read as the caller).
pub fn args<'a>(sources: &HashMap<String, SourceMetric>, base: Vec<DatumWithOid<'a>>) -> Vec<DatumWithOid<'a>> {
    let Some(reads) = sources.values().find_map(|s| s.reads.as_ref()) else { return base };
    let params = reads.params.borrow();
    if params.is_empty() {
        return base;
    }
    let mut out = base;
    while out.len() < FIRST_READ_PARAM - 1 {
        out.push(DatumWithOid::null_oid(INT8.into()));
    }
    out.extend(params.iter().map(|(d, t)| DatumWithOid::null_oid((*t).into()).with(*d)));
    out
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    PerUser,
    Covariate,
    Daily,
    Rows,
    Times,
}

impl SourceMetric {
    fn sql(&self, nsp: &str, kind: Kind, set: EnrolledSet) -> String {
        use ab_core::source::{daily_sql, per_user_sql, rows_sql, times_sql};
        match kind {
            Kind::PerUser => per_user_sql(nsp, &self.source, self.measure, &self.span, set),
            Kind::Covariate => {
                let (b, span) = self.covariate.as_ref().expect("a covariate");
                per_user_sql(nsp, b, self.measure, span, set)
            }
            Kind::Daily => daily_sql(nsp, &self.source, self.measure, &self.span, set),
            Kind::Rows => rows_sql(nsp, &self.source, &self.span, set),
            Kind::Times => times_sql(nsp, &self.source, &self.span, set),
        }
    }

    fn read(&self, client: &SpiClient<'_>, nsp: &str, kind: Kind, day: Option<&str>) -> String {
        let reader = if matches!(kind, Kind::Covariate) { self.covariate_reader } else { self.reader };
        match (reader, &self.reads) {
            (Reader::Owner(owner), Some(reads)) => {
                let columns: &[(&str, &str)] = match kind {
                    Kind::Daily => &DAILY_COLUMNS,
                    Kind::Times => &TIMES_COLUMNS,
                    _ => &PER_USER_COLUMNS,
                };
                let sql = self.sql(nsp, kind, EnrolledSet::Parameters);
                reads.ahead(client, nsp, format!("{kind:?} {}", self.name), owner, &sql, columns, day)
            }
            _ => self.sql(nsp, kind, EnrolledSet::Assignments),
        }
    }

    /// (variant_id, user_id, v) per enrolled user with a matching row.
    pub fn per_user(&self, client: &SpiClient<'_>, nsp: &str) -> String {
        self.read(client, nsp, Kind::PerUser, None)
    }

    pub fn covariate_per_user(&self, client: &SpiClient<'_>, nsp: &str) -> Option<String> {
        self.covariate.as_ref().map(|_| self.read(client, nsp, Kind::Covariate, None))
    }

    /// Per user and day counted from `first` (a date); see `ab_core::source::daily_sql`.
    pub fn daily(&self, client: &SpiClient<'_>, nsp: &str, first: &str) -> String {
        self.read(client, nsp, Kind::Daily, Some(first))
    }

    pub fn rows(&self, client: &SpiClient<'_>, nsp: &str) -> String {
        self.read(client, nsp, Kind::Rows, None)
    }

    /// (variant_id, user_id, t) per matching row; see `ab_core::source::times_sql`.
    pub fn times(&self, client: &SpiClient<'_>, nsp: &str) -> String {
        self.read(client, nsp, Kind::Times, None)
    }

    /// Plans (without running) the read as the role that will run it, with the identity
    /// the read will have: planning runs the owner's code too (index expressions, constraints).
    fn plan(&self, client: &SpiClient<'_>, nsp: &str) {
        let mut kinds = vec![(Kind::PerUser, self.reader)];
        if self.covariate.is_some() {
            kinds.push((Kind::Covariate, self.covariate_reader));
        }
        for (kind, reader) in kinds {
            plan_as(client, reader, &self.sql(nsp, kind, set_of(reader)));
        }
    }
}

fn set_of(reader: Reader) -> EnrolledSet {
    match reader {
        Reader::Caller => EnrolledSet::Assignments,
        Reader::Owner(_) => EnrolledSet::Parameters,
    }
}

fn bind_for(client: &SpiClient<'_>, nsp: &str, r: &SourceRef, measure: Measure, what: &str) -> Checked {
    let spec = spec_of(client, nsp, r, what);
    let checked = bind(client, nsp, &spec, what);
    match (measure.needs_value(), &checked.bound.value) {
        (true, None) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "{what}: the metric sums, averages or takes the max of a value, and the source has no value_column"
            ),
            None,
        ),
        (false, Some(_)) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{what}: the metric counts rows or users, and the source's value_column would not be read"),
            Some("register a source without value_column for it".into()),
        ),
        _ => checked,
    }
}

/// The metric's source and covariate, checked against the catalog. `until` is the
/// experiment's stop (ISO 8601), which bounds a metric without a window. `reads` holds the
/// analysis's reads made as a source's owner (None when only planning).
pub fn source_metric(
    client: &SpiClient<'_>,
    nsp: &str,
    name: &str,
    def: &MetricDef,
    until: Option<String>,
    enrolled: Option<Enrolled>,
    reads: Option<Rc<Reads>>,
) -> Option<SourceMetric> {
    let r = def.source_ref()?;
    let measure = Measure::of(def);
    let source = bind_for(client, nsp, &r, measure, &format!("source of metric \"{}\"", printable(name)));
    let covariate = def.covariate_ref().map(|(r, seconds)| {
        let what = format!("covariate source of metric \"{}\"", printable(name));
        (bind_for(client, nsp, &r, measure, &what), Span::Before { seconds, enrolled: enrolled.clone() })
    });
    let covariate_reader = covariate.as_ref().map(|(c, _)| c.reader).unwrap_or(Reader::Caller);
    let mut read = vec![source.read];
    read.extend(covariate.as_ref().map(|(c, _)| c.read.clone()));
    Some(SourceMetric {
        name: name.to_string(),
        measure,
        source: source.bound,
        reader: source.reader,
        span: Span::After { window_seconds: def.window_seconds(), until, enrolled },
        covariate: covariate.map(|(c, span)| (c.bound, span)),
        covariate_reader,
        read,
        reads,
    })
}

/// Plans (without running) a read of each source metric, so that a filter value the column's
/// type cannot take or a type without the filter's operator fails now, not at analysis.
pub fn check_experiment_sources(
    client: &mut SpiClient<'_>,
    nsp: &str,
    metrics: &std::collections::BTreeMap<String, MetricDef>,
) {
    for (name, def) in metrics {
        // A registered source stays until this transaction ends: a concurrent
        // ab_drop_metric_source waits for it, then sees the new experiment naming the source.
        for r in [def.source_ref(), def.covariate_ref().map(|c| c.0)].into_iter().flatten() {
            if let SourceRef::Named(source) = r {
                if crate::catalog::has_table(client, nsp, "ab_metric_sources") {
                    client
                        .update(
                            &format!("SELECT 1 FROM {nsp}.ab_metric_sources WHERE name = $1 FOR KEY SHARE"),
                            None,
                            &[source.as_str().into()],
                        )
                        .or_raise();
                }
            }
        }
        if let Some((of, _, ab_core::definition::QuantileLevel::Event)) = def.quantile_of() {
            if metrics.get(of).is_some_and(|d| d.source.is_some() && !Measure::of(d).needs_value()) {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!(
                        "quantile metric \"{}\" is of every value of \"{}\", which counts rows of its source and has no values",
                        printable(name),
                        printable(of)
                    ),
                    Some("use \"level\": \"user\", a quantile of the per-user counts".into()),
                );
            }
        }
        if let Some(m) = source_metric(client, nsp, name, def, None, None, None) {
            m.plan(client, nsp);
        }
    }
}

/// Plans `sql` as the role that would read it: $1 the experiment, $4-$6 the enrolled users.
fn plan_as(client: &SpiClient<'_>, reader: Reader, sql: &str) {
    let types = [
        PgOid::BuiltIn(PgBuiltInOids::INT8OID),
        PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
        PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
        PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID),
        PgOid::BuiltIn(PgBuiltInOids::INT8ARRAYOID),
        PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZARRAYOID),
    ];
    let prepare = || {
        client.prepare(sql, &types).or_raise();
    };
    match reader {
        Reader::Caller => crate::security::as_caller(prepare),
        Reader::Owner(owner) => crate::security::as_owner(owner, prepare),
    }
}

/// Registers a metric source: a table or view (schema-qualified), the column holding the
/// user id, the time column, an optional value column and filter. Names are checked against
/// the catalog now and at each analysis; nothing but these names is stored.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_create_metric_source(name: Option<&str>, definition: Option<RawJsonb>) {
    let name = required(name, "name");
    let name = normalize_name("metric source name", name).unwrap_or_else(|e| core_error(e)).into_owned();
    let value = required(definition, "definition")
        .try_value_at_most("metric source definition", 1 << 20)
        .unwrap_or_else(|e| crate::errors::invalid(format!("invalid metric source definition: {e}")));
    let spec = parse_spec(&value).unwrap_or_else(|e| core_error(e));
    Spi::connect_mut(|client| {
        let nsp = crate::catalog::schema(client);
        if !crate::catalog::has_table(client, &nsp, "ab_metric_sources") {
            crate::errors::wrong_state(
                "metric sources need version 0.11.0 of the ab_testing schema",
                "run ALTER EXTENSION ab_testing UPDATE",
            );
        }
        let checked = bind(client, &nsp, &spec, &format!("metric source \"{}\"", printable(&name)));
        for measure in [Measure::Count, Measure::Sum] {
            if measure.needs_value() == checked.bound.value.is_some() {
                plan_as(
                    client,
                    checked.reader,
                    &ab_core::source::per_user_sql(
                        &nsp,
                        &checked.bound,
                        measure,
                        &Span::After { window_seconds: None, until: None, enrolled: None },
                        set_of(checked.reader),
                    ),
                );
            }
        }
        let inserted = client
            .update(
                &format!(
                    "INSERT INTO {nsp}.ab_metric_sources (name, definition) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING 1"
                ),
                None,
                &[name.as_str().into(), pgrx::JsonB(spec.to_json()).into()],
            )
            .or_raise();
        if inserted.is_empty() {
            raise(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!("metric source \"{}\" already exists", printable(&name)),
                Some("choose another name, or drop the old source with ab_drop_metric_source".into()),
            );
        }
    });
}

/// Drops a metric source no experiment names.
#[pg_extern(volatile, parallel_unsafe)]
fn ab_drop_metric_source(name: Option<&str>) {
    let name = required(name, "name");
    let name = normalize_name("metric source name", name).unwrap_or_else(|e| core_error(e));
    let name = name.as_ref();
    Spi::connect_mut(|client| {
        let nsp = crate::catalog::schema(client);
        // Locked first: an experiment being created with the source either committed before
        // (and is seen below) or waits, then finds the source gone.
        client
            .update(&format!("SELECT 1 FROM {nsp}.ab_metric_sources WHERE name = $1 FOR UPDATE"), None, &[name.into()])
            .or_raise();
        let users: Vec<String> = client
            .select(
                &format!(
                    "SELECT e.name FROM {nsp}.ab_experiments e, pg_catalog.jsonb_each(e.metrics) m \
                     WHERE m.value->>'source' = $1 OR m.value->'covariate'->>'source' = $1 GROUP BY e.name ORDER BY e.name"
                ),
                None,
                &[name.into()],
            )
            .or_raise()
            .map(|row| row.get::<String>(1).or_raise().unwrap())
            .collect();
        if !users.is_empty() {
            let listed: Vec<String> = users.iter().take(10).map(|n| format!("\"{}\"", printable(n))).collect();
            raise(
                PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                format!("metric source \"{}\" is used by experiment {}", printable(name), listed.join(", ")),
                Some("delete those experiments first (ab_delete_experiment)".into()),
            );
        }
        let deleted = client
            .update(&format!("DELETE FROM {nsp}.ab_metric_sources WHERE name = $1 RETURNING 1"), None, &[name.into()])
            .or_raise();
        if deleted.is_empty() {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("metric source \"{}\" does not exist", printable(name)),
                None,
            );
        }
    });
}
