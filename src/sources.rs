//! Metric sources: `ab_create_metric_source`, `ab_drop_metric_source`, and the catalog checks
//! that turn a source's names into SQL (`ab_core::source`). A source is checked when it is
//! registered, when an experiment naming it is created, and again at each analysis (its
//! table may have changed since); the reads run as the analysing role (`security::as_caller`).

use ab_core::definition::{MetricDef, SourceRef};
use ab_core::names::{did_you_mean, normalize_name, printable};
use ab_core::source::{condition_sql, parse_spec, quote_ident, Bound, Enrolled, Measure, SourceSpec, Span};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

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

/// Checks a source's relation and columns against the catalog and returns it as SQL.
/// `what` names the source in messages ("source of metric \"x\"").
pub fn bind(client: &SpiClient<'_>, spec: &SourceSpec, what: &str) -> Bound {
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
    Bound {
        relation: format!("{}.{}", quote_ident(schema), quote_ident(relation)),
        user: user_sql,
        time: time.quoted.clone(),
        value,
        conditions,
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

/// A source metric as the analysis reads it: its source and, with CUPED, its covariate's.
pub struct SourceMetric {
    pub measure: Measure,
    pub source: Bound,
    pub span: Span,
    pub covariate: Option<(Bound, Span)>,
}

impl SourceMetric {
    pub fn per_user(&self, nsp: &str) -> String {
        ab_core::source::per_user_sql(nsp, &self.source, self.measure, &self.span)
    }

    pub fn covariate_per_user(&self, nsp: &str) -> Option<String> {
        self.covariate.as_ref().map(|(b, span)| ab_core::source::per_user_sql(nsp, b, self.measure, span))
    }

    pub fn daily(&self, nsp: &str) -> String {
        ab_core::source::daily_sql(nsp, &self.source, self.measure, &self.span)
    }

    pub fn rows(&self, nsp: &str) -> String {
        ab_core::source::rows_sql(nsp, &self.source, &self.span)
    }
}

fn bind_for(client: &SpiClient<'_>, nsp: &str, r: &SourceRef, measure: Measure, what: &str) -> Bound {
    let spec = spec_of(client, nsp, r, what);
    let bound = bind(client, &spec, what);
    match (measure.needs_value(), &bound.value) {
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
        _ => bound,
    }
}

/// The metric's source and covariate, checked against the catalog. `until` is the
/// experiment's stop (ISO 8601), which bounds a metric without a window.
pub fn source_metric(
    client: &SpiClient<'_>,
    nsp: &str,
    name: &str,
    def: &MetricDef,
    until: Option<String>,
    enrolled: Option<Enrolled>,
) -> Option<SourceMetric> {
    let r = def.source_ref()?;
    let measure = Measure::of(def);
    let source = bind_for(client, nsp, &r, measure, &format!("source of metric \"{}\"", printable(name)));
    let covariate = def.covariate_ref().map(|(r, seconds)| {
        let what = format!("covariate source of metric \"{}\"", printable(name));
        (bind_for(client, nsp, &r, measure, &what), Span::Before { seconds, enrolled: enrolled.clone() })
    });
    Some(SourceMetric {
        measure,
        source,
        span: Span::After { window_seconds: def.window_seconds(), until, enrolled },
        covariate,
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
        if let Some(m) = source_metric(client, nsp, name, def, None, None) {
            plan(client, &m.per_user(nsp));
            if let Some(sql) = m.covariate_per_user(nsp) {
                plan(client, &sql);
            }
        }
    }
}

fn plan(client: &SpiClient<'_>, sql: &str) {
    client.prepare(sql, &[PgOid::BuiltIn(PgBuiltInOids::INT8OID)]).or_raise();
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
        let bound = bind(client, &spec, &format!("metric source \"{}\"", printable(&name)));
        for measure in [Measure::Count, Measure::Sum] {
            if measure.needs_value() == bound.value.is_some() {
                plan(
                    client,
                    &ab_core::source::per_user_sql(
                        &nsp,
                        &bound,
                        measure,
                        &Span::After { window_seconds: None, until: None, enrolled: None },
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
