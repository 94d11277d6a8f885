"""Soundness at the boundary with PostgreSQL: partitioned tables, jsonb in every stored form,
the first cache load racing an invalidation, the bound on metric names, encodings, deep
nesting, memory bounds, the "did you mean" hint, parallel query, breakdown values, and a
property test driving every function's arguments. Nothing may crash the server or end in an
internal error (XX000)."""
import json
import threading
import time

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from conftest import CITUS, conninfo
from test_hardening import blocked
from test_operations import drop_db, fresh_db, one, two_arms

pytestmark = pytest.mark.skipif(CITUS, reason="single-node PostgreSQL internals")


@pytest.fixture
def db():
    dsn = fresh_db("ab_soundness")
    yield dsn
    drop_db("ab_soundness")


def started(c, name, **extra):
    exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(name, **extra)))
    one(c, "SELECT ab_start_experiment(%s)", exp)
    return exp


def server_start(c):
    return one(c, "SELECT pg_postmaster_start_time()")


def sqlstate(c, sql, *args):
    """The SQLSTATE the statement fails with (None when it succeeds), in a savepoint-free way:
    the connection is autocommit."""
    try:
        c.execute(sql, args)
        return None
    except psycopg.Error as e:
        return e.sqlstate


def variants_of(c, exp, users):
    return [one(c, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, u) for u in users]


# -- Item 1: the direct index probe never reads what it did not check --------------------------

def swap_for_partitioned(c, table, partition_by, partitions, primary_key=None):
    """Replaces an extension table by a partitioned copy holding the same rows, as a DBA would."""
    c.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    c.execute(f"ALTER INDEX {table}_pkey RENAME TO {table}_old_pkey")
    if primary_key:
        c.execute(f"CREATE TABLE {table} (LIKE {table}_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
                  f"PRIMARY KEY ({primary_key})) PARTITION BY {partition_by}")
        for index in one(c, "SELECT array_agg(indexdef) FROM pg_indexes WHERE tablename = %s "
                            "AND indexname NOT LIKE '%%pkey'", f"{table}_old") or []:
            c.execute(index.replace(f"ON public.{table}_old", f"ON public.{table}")
                      .replace("CREATE INDEX ", "CREATE INDEX new_"))
    else:
        c.execute(f"CREATE TABLE {table} (LIKE {table}_old INCLUDING ALL) PARTITION BY {partition_by}")
    for p in partitions:
        c.execute(p)
    c.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")
    # The extension's views read the table by OID: point them at the new one. Its sequences
    # (ab_results.id) move to the new table too.
    c.execute(PREPARE_DROP.replace("@old", f"{table}_old").replace("@new", table))
    c.execute(f"ALTER EXTENSION ab_testing DROP TABLE {table}_old")
    c.execute(f"DROP TABLE {table}_old")


# The procedure docs/operations.md describes, with @old and @new for the tables' names.
PREPARE_DROP = """
DO $$
DECLARE v regclass; s record;
BEGIN
    FOR v IN SELECT DISTINCT r.ev_class::regclass FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
             WHERE d.refobjid = '@old'::regclass AND r.ev_class <> '@old'::regclass LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', v, replace(pg_get_viewdef(v), '@old', '@new'));
    END LOOP;
    FOR s IN SELECT d.objid::regclass AS seq, a.attname FROM pg_depend d
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.refobjid = '@old'::regclass AND d.classid = 'pg_class'::regclass AND d.deptype = 'a'
               AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S' LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNED BY @new.%I', s.seq, s.attname);
    END LOOP;
END $$"""


def test_assignments_partitioned_by_hash_work_through_sql(db):
    with psycopg.connect(db, autocommit=True) as c:
        start = server_start(c)
        exp = started(c, "hashed")
        users = [f"u{i}" for i in range(40)]
        before = variants_of(c, exp, users)
    with psycopg.connect(db, autocommit=True) as c:
        swap_for_partitioned(c, "ab_assignments", "HASH (user_id)", [
            f"CREATE TABLE ab_assignments_{r} PARTITION OF ab_assignments FOR VALUES WITH (MODULUS 4, REMAINDER {r})"
            for r in range(4)])
    # A backend that cached the old relations and a fresh one both answer from the new table.
    for _ in range(2):
        with psycopg.connect(db, autocommit=True) as c:
            assert variants_of(c, exp, users) == before
            assert variants_of(c, exp, ["new-1", "new-2"]) == variants_of(c, exp, ["new-1", "new-2"])
            assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, 'u1')", exp) is True
            assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, 'nobody')", exp) is False
            assert one(c, "SELECT count(*) FROM ab_assignments WHERE experiment_id = %s", exp) == 42
    with psycopg.connect(db, autocommit=True) as c:
        one(c, "SELECT ab_stop_experiment(%s)", exp)
        c.execute("SELECT ab_delete_experiment(%s)", (exp,))
        assert one(c, "SELECT count(*) FROM ab_assignments") == 0
        assert server_start(c) == start


def test_results_partitioned_by_time_with_retention(db):
    with psycopg.connect(db, autocommit=True) as c:
        start = server_start(c)
        exp = started(c, "retained")
        swap_for_partitioned(c, "ab_results", "RANGE (recorded_at)", [
            "CREATE TABLE ab_results_before PARTITION OF ab_results FOR VALUES FROM ('2000-01-01') TO ('2026-01-01')",
            "CREATE TABLE ab_results_since PARTITION OF ab_results FOR VALUES FROM ('2026-01-01') TO ('2100-01-01')",
        ], primary_key="user_id, id, recorded_at")
        for i in range(20):
            one(c, "SELECT ab_get_variant(%s, %s)", exp, f"u{i}")
            assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', %s, %s)", exp, i % 2, f"u{i}") is True
        # Old results, as if recorded years ago.
        c.execute("INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value, recorded_at) "
                  "SELECT experiment_id, variant_id, user_id, 'old_metric', 1, '2020-01-01' FROM ab_assignments")
        assert one(c, "SELECT count(*) FROM ab_results_before") == 20
        # Retention: drop the old partition; everything else goes on.
        c.execute("DROP TABLE ab_results_before")
        c.execute("SELECT ab_rebuild_user_metrics(%s)", (exp,))
        assert one(c, "SELECT sum(users)::int FROM ab_analyze(%s) WHERE metric_name = 'conversion_rate'", exp) == 20
        one(c, "SELECT ab_stop_experiment(%s)", exp)
        c.execute("SELECT ab_delete_experiment(%s)", (exp,))
        assert one(c, "SELECT count(*) FROM ab_results") == 0
        assert server_start(c) == start


def test_a_delete_under_repeatable_read_sees_late_rows_of_a_partitioned_table(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "late")
        swap_for_partitioned(c, "ab_results", "RANGE (recorded_at)", [
            "CREATE TABLE ab_results_all PARTITION OF ab_results FOR VALUES FROM ('2000-01-01') TO ('2100-01-01')",
        ], primary_key="user_id, id, recorded_at")
        one(c, "SELECT ab_get_variant(%s, 'u')", exp)
        one(c, "SELECT ab_stop_experiment(%s)", exp)
    with psycopg.connect(db) as deleter, psycopg.connect(db, autocommit=True) as writer:
        deleter.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        one(deleter, "SELECT count(*) FROM ab_results")
        writer.execute("INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                       "SELECT experiment_id, variant_id, user_id, 'm', 1 FROM ab_assignments")
        with pytest.raises(errors.SerializationFailure, match="rows were written to ab_results"):
            deleter.execute("SELECT ab_delete_experiment(%s)", (exp,))


def test_other_index_forms_are_read_through_sql(db):
    """A primary key rebuilt with another operator class, or an assignments table whose primary
    key has another name, is never probed directly, and the answers stay right."""
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "rebuilt")
        before = variants_of(c, exp, ["a", "b", "c"])
        c.execute("ALTER TABLE ab_assignments DROP CONSTRAINT ab_assignments_pkey")
        c.execute("CREATE UNIQUE INDEX ab_assignments_pkey ON ab_assignments (experiment_id, user_id text_pattern_ops)")
        with psycopg.connect(db, autocommit=True) as fresh:
            assert variants_of(fresh, exp, ["a", "b", "c"]) == before
        c.execute("DROP INDEX ab_assignments_pkey")
        c.execute("ALTER TABLE ab_assignments ADD CONSTRAINT other_name PRIMARY KEY (experiment_id, user_id)")
        with psycopg.connect(db, autocommit=True) as fresh:
            assert variants_of(fresh, exp, ["a", "b", "c"]) == before
            assert one(fresh, "SELECT ab_record_result(%s, 'conversion_rate', 1, 'a')", exp) is True


# -- Item 2: jsonb arguments in every form ------------------------------------------------------

def jsonb_forms(c, value):
    """(label, SQL expression) pairs that give `value` as a literal, a parameter, and read from
    a table in each storage form: short (1-byte header), long inline, TOASTed and compressed."""
    text = json.dumps(value)
    c.execute("DROP TABLE IF EXISTS forms")
    c.execute("CREATE TABLE forms (form text PRIMARY KEY, j jsonb)")
    c.execute("ALTER TABLE forms ALTER COLUMN j SET STORAGE EXTERNAL")
    padded = dict(value) if isinstance(value, dict) else None
    rows = [("stored", value)]
    if padded is not None:
        rows += [("long", {**padded, "pad": "x" * 300}),
                 ("toasted", {**padded, "pad": "".join(chr(65 + (i * 7919) % 26) for i in range(5000))})]
    for form, v in rows:
        c.execute("INSERT INTO forms VALUES (%s, %s)", (form, Jsonb(v)))
    if padded is not None:
        c.execute("CREATE TABLE forms_main (form text PRIMARY KEY, j jsonb)")
        c.execute("INSERT INTO forms_main VALUES ('compressed', %s)", (Jsonb({**padded, "pad": "y" * 6000}),))
        c.execute("INSERT INTO forms SELECT 'compressed_copy', j FROM forms_main")
        assert one(c, "SELECT pg_column_compression(j) IS NOT NULL FROM forms_main") is True
        c.execute("DROP TABLE forms_main")
    forms = [("literal", f"'{text}'::jsonb"), ("parameter", "%(p)s")]
    forms += [(form, f"(SELECT j FROM forms WHERE form = '{form}')") for form, _ in rows]
    if padded is not None:
        forms.append(("compressed", "(SELECT j FROM forms WHERE form = 'compressed_copy')"))
        assert one(c, "SELECT pg_column_size(j) < 1000 FROM forms WHERE form = 'compressed_copy'") is True
    return forms


def test_attributes_in_every_jsonb_form(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "targeted", target_segments={"plan": ["pro"]})
        for label, expr in jsonb_forms(c, {"plan": "pro"}):
            got = c.execute(f"SELECT ab_get_variant(%(e)s, %(u)s, {expr})",
                            {"e": exp, "u": f"user-{label}", "p": Jsonb({"plan": "pro"})}).fetchone()[0]
            assert got is not None, label
        # {} stored (the smallest jsonb): no match, no error, nothing read past its end.
        c.execute("CREATE TABLE empty_attrs AS SELECT '{}'::jsonb AS a")
        assert one(c, "SELECT ab_get_variant(%s, 'empty', a) FROM empty_attrs", exp) is None
        # A PL/pgSQL variable filled from a table.
        c.execute("""CREATE FUNCTION assign_from_table(e bigint, u text) RETURNS jsonb LANGUAGE plpgsql AS $$
                     DECLARE a jsonb; BEGIN SELECT j INTO a FROM forms WHERE form = 'stored';
                     RETURN ab_get_variant(e, u, a); END $$""")
        assert one(c, "SELECT assign_from_table(%s, 'plpgsql')", exp) is not None


def test_definitions_and_priors_in_every_jsonb_form(db):
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE TABLE events (user_id text, at timestamptz, amount float8)")
        source = {"relation": "public.events", "user_column": "user_id", "time_column": "at"}
        for label, expr in jsonb_forms(c, source):
            if label in ("long", "toasted", "compressed"):
                # Read in full (an unknown key "pad" is then refused, as it should be).
                assert sqlstate(c, f"SELECT ab_create_metric_source('x', {expr})") == "22023", label
                continue
            c.execute(f"SELECT ab_create_metric_source(%(n)s, {expr})", {"n": f"src_{label}", "p": Jsonb(source)})
        assert one(c, "SELECT count(*) FROM ab_metric_sources") == 3
        for label, expr in jsonb_forms(c, two_arms("defined")):
            if label not in ("literal", "parameter", "stored"):
                state = sqlstate(c, f"SELECT ab_create_experiment({expr})")
                assert state == "22023", label  # the unknown "pad" key, read without a crash
                continue
            body = dict(two_arms(f"defined-{label}"))
            c.execute(f"SELECT ab_create_experiment({expr.replace('defined', f'defined-{label}')})",
                      {"p": Jsonb(body)})
        big = two_arms("big", description="d" * 5000)
        c.execute("CREATE TABLE defs AS SELECT %s::jsonb AS d", (Jsonb(big),))
        exp = one(c, "SELECT ab_create_experiment(d) FROM defs")
        one(c, "SELECT ab_start_experiment(%s)", exp)
        prior = {"mean": 0, "sd": 0.05}
        for label, expr in jsonb_forms(c, prior):
            if label in ("long", "toasted", "compressed"):
                assert sqlstate(c, f"SELECT * FROM ab_bayes({exp}, {expr})") == "22023", label
                continue
            c.execute(f"SELECT * FROM ab_bayes(%(e)s, {expr})", {"e": exp, "p": Jsonb(prior)})
