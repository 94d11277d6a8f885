//! Metric sources: a table or view of the application's own (`loan_applications`), named by
//! relation and columns, from which an experiment's metric is read instead of from
//! `ab_results`. A source is declarative: this module checks its shape and writes the SQL
//! that reads it, quoting every name and value; the SQL layer checks the names against the
//! catalog and runs the reads with the privileges of the role running the analysis.

use serde_json::{json, Map, Value};

use crate::definition::{Aggregation, MetricDef, MetricType};
use crate::error::{Error, Result};
use crate::names::printable;

/// Conditions a source's filter may hold, and values per `in` list.
pub const MAX_CONDITIONS: usize = 20;
pub const MAX_IN_VALUES: usize = 100;
const MAX_VALUE_LEN: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// `schema.relation`, as PostgreSQL spells a qualified name (checked by the database).
    pub relation: String,
    pub user_column: String,
    pub time_column: String,
    pub value_column: Option<String>,
    pub filter: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub test: Test,
}

/// A condition on one column; values are compared in the column's own type (PostgreSQL
/// reads each as a literal of that type).
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Compare(&'static str, String),
    In(Vec<String>),
    NotIn(Vec<String>),
    IsNull,
    IsNotNull,
}

const OPERATORS: [&str; 6] = ["=", "<>", "<", "<=", ">", ">="];

/// How a metric reads its source, per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// 1 for a user with a matching row (binary metrics).
    Presence,
    Count,
    Sum,
    Mean,
    Max,
}

impl Measure {
    pub fn of(def: &MetricDef) -> Measure {
        match (def.kind, def.aggregation) {
            (MetricType::Binary, _) => Measure::Presence,
            (_, Aggregation::Count) => Measure::Count,
            (_, Aggregation::Sum) => Measure::Sum,
            (_, Aggregation::Max) => Measure::Max,
            (_, Aggregation::Mean) => Measure::Mean,
        }
    }

    pub fn needs_value(self) -> bool {
        matches!(self, Measure::Sum | Measure::Mean | Measure::Max)
    }
}

fn text_field(obj: &Map<String, Value>, key: &str, required: bool) -> Result<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(Error::definition(format!("metric source has no \"{key}\""))),
        Some(Value::String(s)) if s.is_empty() => {
            Err(Error::definition(format!("\"{key}\" of a metric source is empty")))
        }
        Some(Value::String(s)) if s.contains('\0') => {
            Err(Error::definition(format!("\"{key}\" of a metric source contains a NUL character")))
        }
        Some(Value::String(s)) if s.chars().count() > 200 => {
            Err(Error::definition(format!("\"{key}\" of a metric source is longer than 200 characters")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::definition(format!("\"{key}\" of a metric source must be a string"))),
    }
}

fn scalar(column: &str, v: &Value) -> Result<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return Err(Error::definition(format!(
                "filter on \"{}\": a value must be a string, number or boolean",
                printable(column)
            )))
        }
    };
    if s.contains('\0') {
        return Err(Error::definition(format!(
            "filter on \"{}\": a value contains a NUL character",
            printable(column)
        )));
    }
    if s.chars().count() > MAX_VALUE_LEN {
        return Err(Error::definition(format!(
            "filter on \"{}\": a value is longer than {MAX_VALUE_LEN} characters",
            printable(column)
        )));
    }
    Ok(s)
}

fn list(column: &str, v: &Value) -> Result<Vec<String>> {
    let Value::Array(items) = v else {
        return Err(Error::definition(format!("filter on \"{}\": \"in\" takes a list of values", printable(column))));
    };
    if items.is_empty() || items.len() > MAX_IN_VALUES {
        return Err(Error::definition(format!(
            "filter on \"{}\": an \"in\" list holds 1 to {MAX_IN_VALUES} values, got {}",
            printable(column),
            items.len()
        )));
    }
    items.iter().map(|i| scalar(column, i)).collect()
}

fn condition(column: &str, v: &Value) -> Result<Test> {
    match v {
        Value::Null => Ok(Test::IsNull),
        Value::Object(o) => {
            let (op, arg) = match o.iter().next() {
                Some(pair) if o.len() == 1 => pair,
                _ => {
                    return Err(Error::definition(format!(
                        "filter on \"{}\": an object holds exactly one operator, such as {{\">=\": 100}}",
                        printable(column)
                    )))
                }
            };
            match (op.as_str(), arg) {
                ("in", a) => Ok(Test::In(list(column, a)?)),
                ("not in", a) => Ok(Test::NotIn(list(column, a)?)),
                ("=", Value::Null) => Ok(Test::IsNull),
                ("<>", Value::Null) => Ok(Test::IsNotNull),
                (op, a) => match OPERATORS.iter().find(|o| **o == op) {
                    Some(op) => Ok(Test::Compare(op, scalar(column, a)?)),
                    None => Err(Error::definition(format!(
                        "filter on \"{}\": unknown operator \"{}\" (use =, <>, <, <=, >, >=, in or not in)",
                        printable(column),
                        printable(op)
                    ))),
                },
            }
        }
        v => Ok(Test::Compare("=", scalar(column, v)?)),
    }
}

/// The keys of a metric source, inline or given to `ab_create_metric_source`.
pub const SOURCE_KEYS: &[&str] = &["relation", "user_column", "time_column", "value_column", "filter"];

/// Parses an inline source or the definition given to `ab_create_metric_source`.
pub fn parse_spec(v: &Value) -> Result<SourceSpec> {
    let Value::Object(obj) = v else {
        return Err(Error::definition(
            "a metric source must be a JSON object with \"relation\", \"user_column\" and \"time_column\"",
        ));
    };
    if let Some(k) = obj.keys().find(|k| !SOURCE_KEYS.contains(&k.as_str())) {
        return Err(Error::definition(format!(
            "metric source has an unknown key \"{}\"{}",
            printable(k),
            crate::names::did_you_mean(k, SOURCE_KEYS.iter().copied())
        )));
    }
    let mut filter = Vec::new();
    match obj.get("filter") {
        None | Some(Value::Null) => {}
        Some(Value::Object(f)) => {
            if f.len() > MAX_CONDITIONS {
                return Err(Error::definition(format!(
                    "a metric source's filter holds at most {MAX_CONDITIONS} conditions, got {}",
                    f.len()
                )));
            }
            for (column, v) in f {
                if column.is_empty() || column.contains('\0') {
                    return Err(Error::definition("a metric source's filter names an empty or NUL column"));
                }
                filter.push(Condition { column: column.clone(), test: condition(column, v)? });
            }
        }
        Some(_) => {
            return Err(Error::definition(
                "\"filter\" of a metric source must be an object of column: value, such as {\"status\": \"funded\"}",
            ))
        }
    }
    Ok(SourceSpec {
        relation: text_field(obj, "relation", true)?.unwrap(),
        user_column: text_field(obj, "user_column", true)?.unwrap(),
        time_column: text_field(obj, "time_column", true)?.unwrap(),
        value_column: text_field(obj, "value_column", false)?,
        filter,
    })
}

impl SourceSpec {
    pub fn to_json(&self) -> Value {
        let mut filter = Map::new();
        for c in &self.filter {
            let v = match &c.test {
                Test::Compare("=", v) => json!(v),
                Test::Compare(op, v) => json!({ *op: v }),
                Test::In(vs) => json!({ "in": vs }),
                Test::NotIn(vs) => json!({ "not in": vs }),
                Test::IsNull => Value::Null,
                Test::IsNotNull => json!({ "<>": null }),
            };
            filter.insert(c.column.clone(), v);
        }
        let mut out =
            json!({"relation": self.relation, "user_column": self.user_column, "time_column": self.time_column});
        if let Some(v) = &self.value_column {
            out["value_column"] = json!(v);
        }
        if !filter.is_empty() {
            out["filter"] = Value::Object(filter);
        }
        out
    }
}

/// An identifier in double quotes, as PostgreSQL reads any name.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A string literal that reads the same whatever standard_conforming_strings says.
pub fn quote_literal(s: &str) -> String {
    let body = s.replace('\\', "\\\\").replace('\'', "''");
    if s.contains('\\') {
        format!("E'{body}'")
    } else {
        format!("'{body}'")
    }
}

/// A source whose names the database has checked, as SQL over the alias `s`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// The quoted, schema-qualified relation.
    pub relation: String,
    /// The user column as text in collation "C", comparable with `ab_assignments.user_id`.
    pub user: String,
    pub time: String,
    /// The time column is a `timestamp without time zone`, read as UTC (never in the
    /// session's time zone, so that an analysis does not depend on the session's settings).
    pub naive_time: bool,
    pub value: Option<String>,
    /// The filter's conditions, each a boolean SQL expression.
    pub conditions: Vec<String>,
}

/// Where a read of a source finds the experiment's enrolled users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrolledSet {
    /// `ab_assignments` of experiment $1 (the read runs as a role that may read it).
    Assignments,
    /// The arrays $4 (user_id text[]), $5 (variant_id int8[]) and $6 (assigned_at
    /// timestamptz[]): the read runs as the source's owner, who may not read the extension's
    /// tables, so the users are read beforehand and passed in.
    Parameters,
}

/// The operators of pg_catalog, whatever search_path holds.
fn operator(op: &str) -> String {
    format!("OPERATOR(pg_catalog.{op})")
}

/// A condition on column `col` (quoted, over `s`) as SQL.
pub fn condition_sql(col: &str, test: &Test) -> String {
    match test {
        Test::Compare(op, v) => format!("s.{col} {} {}", operator(op), quote_literal(v)),
        Test::In(vs) => {
            let parts: Vec<String> =
                vs.iter().map(|v| format!("s.{col} {} {}", operator("="), quote_literal(v))).collect();
            format!("({})", parts.join(" OR "))
        }
        Test::NotIn(vs) => {
            let parts: Vec<String> =
                vs.iter().map(|v| format!("s.{col} {} {}", operator("<>"), quote_literal(v))).collect();
            format!("({})", parts.join(" AND "))
        }
        Test::IsNull => format!("s.{col} IS NULL"),
        Test::IsNotNull => format!("s.{col} IS NOT NULL"),
    }
}

/// Which of a user's rows count, relative to the user's enrollment (`a.assigned_at`).
#[derive(Debug, Clone, PartialEq)]
pub enum Span {
    /// From enrollment on: within `window_seconds` of it, or else before `until` (the
    /// experiment's stop, an ISO 8601 timestamp) when the experiment has stopped.
    After { window_seconds: Option<f64>, until: Option<String>, enrolled: Option<Enrolled> },
    /// The `seconds` before enrollment (a CUPED covariate's pre-period).
    Before { seconds: f64, enrolled: Option<Enrolled> },
}

/// The first and last enrollment of the experiment (ISO 8601): with them the read of a
/// source is also bounded by constants, which an index on the time column or a table
/// partitioned by time can use to skip the rows no user can match.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrolled {
    pub first: String,
    pub last: String,
}

fn interval(seconds: f64) -> String {
    format!("'{seconds} seconds'::pg_catalog.interval")
}

fn timestamp(iso: &str) -> String {
    format!("{}::pg_catalog.timestamptz", quote_literal(iso))
}

/// A timestamptz expression as the time column compares with it: a `timestamp without
/// time zone` column holds UTC, so the bound is converted to UTC (not the column, so that an
/// index on it still serves).
fn bound(b: &Bound, tz: String) -> String {
    if b.naive_time {
        format!("pg_catalog.timezone('UTC', {tz})")
    } else {
        tz
    }
}

fn span_sql(b: &Bound, span: &Span) -> String {
    let t = &b.time;
    let at = |x: String| bound(b, x);
    let assigned = || at("a.assigned_at".into());
    let mut sql = match span {
        Span::After { window_seconds: Some(w), .. } => {
            format!("s.{t} >= {} AND s.{t} < {}", assigned(), at(format!("a.assigned_at + {}", interval(*w))))
        }
        Span::After { window_seconds: None, until: Some(u), .. } => {
            format!("s.{t} >= {} AND s.{t} < {}", assigned(), at(timestamp(u)))
        }
        Span::After { window_seconds: None, until: None, .. } => format!("s.{t} >= {}", assigned()),
        Span::Before { seconds, .. } => {
            format!("s.{t} < {} AND s.{t} >= {}", assigned(), at(format!("a.assigned_at - {}", interval(*seconds))))
        }
    };
    match span {
        Span::After { window_seconds, enrolled: Some(e), .. } => {
            sql.push_str(&format!(" AND s.{t} >= {}", at(timestamp(&e.first))));
            if let Some(w) = window_seconds {
                sql.push_str(&format!(" AND s.{t} < {}", at(format!("{} + {}", timestamp(&e.last), interval(*w)))));
            }
        }
        Span::Before { seconds, enrolled: Some(e) } => sql.push_str(&format!(
            " AND s.{t} >= {} AND s.{t} < {}",
            at(format!("{} - {}", timestamp(&e.first), interval(*seconds))),
            at(timestamp(&e.last))
        )),
        _ => {}
    }
    sql
}

/// The join of the enrolled users (`a`) with the source's rows that count.
fn matching(nsp: &str, b: &Bound, span: &Span, needs_value: bool, set: EnrolledSet) -> String {
    let mut conditions = vec![span_sql(b, span)];
    if let (true, Some(v)) = (needs_value, &b.value) {
        conditions.push(format!("s.{v} IS NOT NULL"));
    }
    conditions.extend(b.conditions.iter().cloned());
    match set {
        EnrolledSet::Assignments => format!(
            "FROM {nsp}.ab_assignments a JOIN {} s ON {} = a.user_id WHERE a.experiment_id = $1 AND {}",
            b.relation,
            b.user,
            conditions.join(" AND ")
        ),
        EnrolledSet::Parameters => format!(
            "FROM (SELECT (e.user_id COLLATE \"C\") AS user_id, e.variant_id, e.assigned_at \
             FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.int8[]), \
             pg_catalog.unnest($6::pg_catalog.timestamptz[])) AS e(user_id, variant_id, assigned_at)) a JOIN {} s ON {} = a.user_id WHERE {}",
            b.relation,
            b.user,
            conditions.join(" AND ")
        ),
    }
}

/// The columns of each kind of read's rows, with their types: what a read made ahead (as
/// the source's owner) returns as arrays, and what `unnest_sql` gives back.
pub const PER_USER_COLUMNS: [(&str, &str); 3] = [("variant_id", "int8"), ("user_id", "text"), ("v", "float8")];
pub const DAILY_COLUMNS: [(&str, &str); 6] = [
    ("variant_id", "int8"),
    ("user_id", "text"),
    ("day", "int4"),
    ("n", "int8"),
    ("total", "float8"),
    ("mx", "float8"),
];

pub const TIMES_COLUMNS: [(&str, &str); 3] = [("variant_id", "int8"), ("user_id", "text"), ("t", "timestamptz")];

/// Every matching row of an enrolled user: (variant_id, user_id, t), t its time as a
/// timestamptz (a `timestamp without time zone` taken as UTC), for funnel steps and
/// retention read from a source.
pub fn times_sql(nsp: &str, b: &Bound, span: &Span, set: EnrolledSet) -> String {
    let time = if b.naive_time { format!("pg_catalog.timezone('UTC', s.{})", b.time) } else { format!("s.{}", b.time) };
    format!("SELECT a.variant_id, a.user_id, {time} AS t {}", matching(nsp, b, span, false, set))
}

/// One row of arrays, one per column, of a read's rows.
pub fn aggregated_sql(sql: &str, columns: &[(&str, &str)]) -> String {
    let aggs: Vec<String> = columns.iter().map(|(c, _)| format!("pg_catalog.array_agg(q.{c})")).collect();
    format!("SELECT {} FROM ({sql}) q", aggs.join(", "))
}

/// The rows of a read made ahead, from its arrays passed as parameters `$first`...; the
/// user ids in collation "C", as `ab_assignments.user_id`.
pub fn unnest_sql(first: usize, columns: &[(&str, &str)]) -> String {
    let out: Vec<String> = columns
        .iter()
        .map(
            |(c, _)| {
                if *c == "user_id" {
                    "(q.user_id COLLATE \"C\") AS user_id".to_string()
                } else {
                    format!("q.{c}")
                }
            },
        )
        .collect();
    let params: Vec<String> =
        columns.iter().enumerate().map(|(i, (_, t))| format!("${}::pg_catalog.{t}[]", first + i)).collect();
    let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
    let unnests: Vec<String> = params.iter().map(|p| format!("pg_catalog.unnest({p})")).collect();
    format!("SELECT {} FROM ROWS FROM ({}) AS q({})", out.join(", "), unnests.join(", "), names.join(", "))
}

/// One row per enrolled user with a matching row: (variant_id, user_id, v), as
/// `analysis::per_user_sql` gives for recorded metrics.
pub fn per_user_sql(nsp: &str, b: &Bound, measure: Measure, span: &Span, set: EnrolledSet) -> String {
    let value = b.value.as_deref().unwrap_or("");
    let v = match measure {
        Measure::Presence => "1::float8".to_string(),
        Measure::Count => "count(*)::float8".to_string(),
        Measure::Sum => format!("sum(s.{value})::float8"),
        Measure::Mean => format!("avg(s.{value})::float8"),
        Measure::Max => format!("max(s.{value})::float8"),
    };
    format!(
        "SELECT a.variant_id, a.user_id, {v} AS v {} GROUP BY a.variant_id, a.user_id",
        matching(nsp, b, span, measure.needs_value(), set)
    )
}

/// Per enrolled user and day of the time column (counted from the date parameter $3, in the
/// session's time zone, a `timestamp without time zone` taken as UTC): (variant_id, user_id,
/// day, n, total, mx) of the matching rows, as the timeline reads recorded results per day.
pub fn daily_sql(nsp: &str, b: &Bound, measure: Measure, span: &Span, set: EnrolledSet) -> String {
    let v = match (&b.value, measure.needs_value()) {
        (Some(v), true) => format!("s.{v}::float8"),
        _ => "1::float8".to_string(),
    };
    let time = if b.naive_time { format!("pg_catalog.timezone('UTC', s.{})", b.time) } else { format!("s.{}", b.time) };
    format!(
        "SELECT a.variant_id, a.user_id, greatest({time}::date - $3::date, 0) AS day, count(*) AS n, sum({v}) AS total, \
         max({v}) AS mx {} GROUP BY 1, 2, 3",
        matching(nsp, b, span, measure.needs_value(), set)
    )
}

/// Every matching row's value: (variant_id, user_id, v), for a quantile of every value.
pub fn rows_sql(nsp: &str, b: &Bound, span: &Span, set: EnrolledSet) -> String {
    let value = b.value.as_deref().unwrap_or("");
    format!("SELECT a.variant_id, a.user_id, s.{value}::float8 AS v {}", matching(nsp, b, span, true, set))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        json!({"relation": "public.loan_applications", "user_column": "borrower_id", "time_column": "funded_at",
               "filter": {"status": "funded", "amount": {">=": 1000}, "channel": {"in": ["web", "branch"]},
                          "deleted_at": null, "product": {"<>": null}}})
    }

    #[test]
    fn parses_and_round_trips() {
        let s = parse_spec(&spec()).unwrap();
        assert_eq!(s.relation, "public.loan_applications");
        assert_eq!(s.value_column, None);
        assert_eq!(s.filter.len(), 5);
        assert!(s.filter.contains(&Condition { column: "status".into(), test: Test::Compare("=", "funded".into()) }));
        assert!(s.filter.contains(&Condition { column: "amount".into(), test: Test::Compare(">=", "1000".into()) }));
        assert!(s.filter.contains(&Condition { column: "deleted_at".into(), test: Test::IsNull }));
        assert!(s.filter.contains(&Condition { column: "product".into(), test: Test::IsNotNull }));
        assert_eq!(parse_spec(&s.to_json()).unwrap(), s);
        // The bounds themselves are accepted.
        let most = json!({"relation": "r", "user_column": "u", "time_column": "t",
                          "filter": (0..20).map(|i| (format!("c{i}"), json!({"in": (0..100).collect::<Vec<i32>>()})))
                                           .collect::<Map<String, Value>>()});
        assert_eq!(parse_spec(&most).unwrap().filter.len(), 20);
        let long = json!({"relation": "r", "user_column": "u", "time_column": "t", "filter": {"a": "x".repeat(1000)}});
        assert!(parse_spec(&long).is_ok());
    }

    #[test]
    fn refuses_bad_sources() {
        for (bad, message) in [
            (json!("x"), "must be a JSON object"),
            (json!({"user_column": "u", "time_column": "t"}), "no \"relation\""),
            (json!({"relation": "r", "user_column": "u", "time_column": "t", "colour": 1}), "unknown key \"colour\""),
            (json!({"relation": "r", "user_column": 3, "time_column": "t"}), "must be a string"),
            (json!({"relation": "r\u{0}", "user_column": "u", "time_column": "t"}), "NUL"),
            (json!({"relation": "r", "user_column": "u", "time_column": "t", "filter": []}), "must be an object"),
            (
                json!({"relation": "r", "user_column": "u", "time_column": "t", "filter": {"a": {"like": "x"}}}),
                "unknown operator",
            ),
            (json!({"relation": "r", "user_column": "u", "time_column": "t", "filter": {"a": {"in": []}}}), "1 to 100"),
            (
                json!({"relation": "r", "user_column": "u", "time_column": "t", "filter": {"a": [1]}}),
                "string, number or boolean",
            ),
            (
                json!({"relation": "r", "user_column": "u", "time_column": "t", "filter": {"a": {"=": 1, "<": 2}}}),
                "exactly one operator",
            ),
            (
                json!({"relation": "r", "user_column": "u", "time_column": "t", "filter": {"a": "x".repeat(1001)}}),
                "longer than 1000",
            ),
            (json!({"relation": "r", "user_column": "u", "time_column": "t", "filter": {"a": "x\u{0}"}}), "NUL"),
            (
                json!({"relation": "r", "user_column": "u", "time_column": "t",
                    "filter": (0..21).map(|i| (format!("c{i}"), json!(i))).collect::<Map<String, Value>>()}),
                "at most 20",
            ),
            (
                json!({"relation": "r", "user_column": "u", "time_column": "t",
                    "filter": {"a": {"in": (0..101).collect::<Vec<i32>>()}}}),
                "1 to 100",
            ),
        ] {
            let e = parse_spec(&bad).unwrap_err();
            assert!(e.message.contains(message), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'; DROP"), "E'a\\\\''; DROP'");
        assert_eq!(
            condition_sql("\"s\"", &Test::In(vec!["a".into(), "b'".into()])),
            "(s.\"s\" OPERATOR(pg_catalog.=) 'a' OR s.\"s\" OPERATOR(pg_catalog.=) 'b''')"
        );
    }

    #[test]
    fn per_user_reads_only_the_exposed_rows() {
        let b = Bound {
            relation: "\"public\".\"loans\"".into(),
            user: "s.\"u\"".into(),
            time: "\"t\"".into(),
            naive_time: false,
            value: Some("\"amount\"".into()),
            conditions: vec!["s.\"status\" OPERATOR(pg_catalog.=) 'funded'".into()],
        };
        let sql = per_user_sql(
            "x",
            &b,
            Measure::Sum,
            &Span::After { window_seconds: Some(1209600.0), until: None, enrolled: None },
            EnrolledSet::Assignments,
        );
        assert_eq!(
            sql,
            "SELECT a.variant_id, a.user_id, sum(s.\"amount\")::float8 AS v FROM x.ab_assignments a JOIN \"public\".\"loans\" s \
             ON s.\"u\" = a.user_id WHERE a.experiment_id = $1 AND s.\"t\" >= a.assigned_at AND s.\"t\" < a.assigned_at + \
             '1209600 seconds'::pg_catalog.interval AND s.\"amount\" IS NOT NULL AND s.\"status\" OPERATOR(pg_catalog.=) 'funded' \
             GROUP BY a.variant_id, a.user_id"
        );
        let pre = per_user_sql(
            "x",
            &b,
            Measure::Presence,
            &Span::Before { seconds: 60.0, enrolled: None },
            EnrolledSet::Assignments,
        );
        assert!(
            pre.contains("s.\"t\" < a.assigned_at AND s.\"t\" >= a.assigned_at - '60 seconds'::pg_catalog.interval")
        );
        assert!(!pre.contains("IS NOT NULL"));
        let until = per_user_sql(
            "x",
            &b,
            Measure::Count,
            &Span::After { window_seconds: None, until: Some("2026-01-02T00:00:00Z".into()), enrolled: None },
            EnrolledSet::Assignments,
        );
        assert!(until.contains("s.\"t\" < '2026-01-02T00:00:00Z'::pg_catalog.timestamptz"));
        // The experiment's enrollments bound the read by constants too.
        let enrolled = Some(Enrolled { first: "2026-01-01T00:00:00Z".into(), last: "2026-01-05T00:00:00Z".into() });
        let bounded = per_user_sql(
            "x",
            &b,
            Measure::Count,
            &Span::After { window_seconds: Some(60.0), until: None, enrolled: enrolled.clone() },
            EnrolledSet::Assignments,
        );
        assert!(bounded.contains(
            "AND s.\"t\" >= '2026-01-01T00:00:00Z'::pg_catalog.timestamptz AND s.\"t\" < \
             '2026-01-05T00:00:00Z'::pg_catalog.timestamptz + '60 seconds'::pg_catalog.interval"
        ));
        let pre =
            per_user_sql("x", &b, Measure::Count, &Span::Before { seconds: 60.0, enrolled }, EnrolledSet::Assignments);
        assert!(pre.contains(
            "AND s.\"t\" >= '2026-01-01T00:00:00Z'::pg_catalog.timestamptz - '60 seconds'::pg_catalog.interval \
             AND s.\"t\" < '2026-01-05T00:00:00Z'::pg_catalog.timestamptz"
        ));
    }

    #[test]
    fn reads_with_the_enrolled_users_as_parameters() {
        let b = Bound {
            relation: "\"crm\".\"conv\"".into(),
            user: "s.\"u\"".into(),
            time: "\"t\"".into(),
            naive_time: false,
            value: None,
            conditions: vec![],
        };
        let span = Span::After { window_seconds: Some(60.0), until: None, enrolled: None };
        let sql = per_user_sql("x", &b, Measure::Count, &span, EnrolledSet::Parameters);
        assert_eq!(
            sql,
            "SELECT a.variant_id, a.user_id, count(*)::float8 AS v FROM (SELECT (e.user_id COLLATE \"C\") AS user_id, \
             e.variant_id, e.assigned_at FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.text[]), \
             pg_catalog.unnest($5::pg_catalog.int8[]), pg_catalog.unnest($6::pg_catalog.timestamptz[])) \
             AS e(user_id, variant_id, assigned_at)) a JOIN \"crm\".\"conv\" s ON s.\"u\" = \
             a.user_id WHERE s.\"t\" >= a.assigned_at AND s.\"t\" < a.assigned_at + '60 seconds'::pg_catalog.interval \
             GROUP BY a.variant_id, a.user_id"
        );
        // Nothing of the extension's tables is named in a read made as the source's owner.
        assert!(!sql.contains("x.ab_"));
        assert!(!daily_sql("x", &b, Measure::Count, &span, EnrolledSet::Parameters).contains("x.ab_"));
        assert!(!rows_sql("x", &b, &span, EnrolledSet::Parameters).contains("x.ab_"));
        assert_eq!(
            aggregated_sql("SELECT 1", &PER_USER_COLUMNS),
            "SELECT pg_catalog.array_agg(q.variant_id), pg_catalog.array_agg(q.user_id), pg_catalog.array_agg(q.v) \
             FROM (SELECT 1) q"
        );
        assert_eq!(
            unnest_sql(11, &PER_USER_COLUMNS),
            "SELECT q.variant_id, (q.user_id COLLATE \"C\") AS user_id, q.v FROM ROWS FROM \
             (pg_catalog.unnest($11::pg_catalog.int8[]), pg_catalog.unnest($12::pg_catalog.text[]), \
             pg_catalog.unnest($13::pg_catalog.float8[])) AS q(variant_id, user_id, v)"
        );
    }

    #[test]
    fn naive_times_are_utc() {
        let b = Bound {
            relation: "r".into(),
            user: "s.u".into(),
            time: "\"t\"".into(),
            naive_time: true,
            value: None,
            conditions: vec![],
        };
        let enrolled = Some(Enrolled { first: "2026-01-01T00:00:00Z".into(), last: "2026-01-05T00:00:00Z".into() });
        let sql = per_user_sql(
            "x",
            &b,
            Measure::Count,
            &Span::After { window_seconds: Some(60.0), until: None, enrolled },
            EnrolledSet::Assignments,
        );
        // Every bound is converted to UTC; the column itself is compared as it is.
        assert!(sql.contains(
            "s.\"t\" >= pg_catalog.timezone('UTC', a.assigned_at) AND s.\"t\" < pg_catalog.timezone('UTC', \
             a.assigned_at + '60 seconds'::pg_catalog.interval) AND s.\"t\" >= pg_catalog.timezone('UTC', \
             '2026-01-01T00:00:00Z'::pg_catalog.timestamptz)"
        ));
        assert!(!sql.contains("timezone('UTC', s."));
        let daily = daily_sql(
            "x",
            &b,
            Measure::Count,
            &Span::Before { seconds: 1.0, enrolled: None },
            EnrolledSet::Assignments,
        );
        assert!(daily.contains("greatest(pg_catalog.timezone('UTC', s.\"t\")::date - $3::date, 0)"));
        assert!(daily.contains("s.\"t\" < pg_catalog.timezone('UTC', a.assigned_at)"));
    }
}
