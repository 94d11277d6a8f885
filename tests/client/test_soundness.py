"""Soundness at the boundary with PostgreSQL: partitioned tables, jsonb in every stored form,
the first cache load racing an invalidation, the bound on metric names, encodings, deep
nesting, memory bounds, the "did you mean" hint, parallel query, breakdown values, and a
property test driving every function's arguments. Nothing may crash the server or end in an
internal error (XX000)."""
import json
import re
import threading
import time

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from conftest import CITUS, conninfo
from test_hardening import blocked
from test_operations import drop_db, fresh_db, one, started, two_arms

pytestmark = pytest.mark.skipif(CITUS, reason="single-node PostgreSQL internals")


@pytest.fixture
def db():
    dsn = fresh_db("ab_soundness")
    yield dsn
    drop_db("ab_soundness")


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


def test_a_partitioned_results_table_survives_dump_and_restore_as_documented():
    """docs/operations.md: restore into a database where the extension is created and the
    table partitioned again, with pg_restore --data-only."""
    import os
    import subprocess

    host, port = os.environ.get("PGHOST", "/tmp/ab_testing_pg"), os.environ.get("PGPORT", "5499")
    partitions = ["CREATE TABLE ab_results_all PARTITION OF ab_results FOR VALUES FROM ('2000-01-01') TO ('2100-01-01')"]
    src = fresh_db("ab_part_src")
    try:
        with psycopg.connect(src, autocommit=True) as c:
            exp = started(c, "kept")
            swap_for_partitioned(c, "ab_results", "RANGE (recorded_at)", partitions,
                                 primary_key="user_id, id, recorded_at")
            for i in range(30):
                one(c, "SELECT ab_get_variant(%s, %s)", exp, f"u{i}")
                one(c, "SELECT ab_record_result(%s, 'conversion_rate', %s, %s)", exp, float(i % 2), f"u{i}")
            before = c.execute("SELECT variant, users, mean FROM ab_analyze(%s) ORDER BY 1", (exp,)).fetchall()
        dump = "/tmp/ab_soundness_partitioned.dump"
        subprocess.run(["pg_dump", "-Fc", "-h", host, "-p", port, "-U", "postgres", "-d", "ab_part_src", "-f", dump],
                       check=True)
        dst = fresh_db("ab_part_dst")
        with psycopg.connect(dst, autocommit=True) as c:
            swap_for_partitioned(c, "ab_results", "RANGE (recorded_at)", partitions,
                                 primary_key="user_id, id, recorded_at")
        subprocess.run(["pg_restore", "-h", host, "-p", port, "-U", "postgres", "-d", "ab_part_dst", "--data-only",
                        "--exit-on-error", dump], check=True)
        with psycopg.connect(dst, autocommit=True) as c:
            assert one(c, "SELECT count(*) FROM ab_results") == 30
            assert c.execute("SELECT variant, users, mean FROM ab_analyze(%s) ORDER BY 1", (exp,)).fetchall() == before
            assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, 'u1')", exp) is True
            assert one(c, "SELECT count(DISTINCT id) FROM ab_results") == 31
    finally:
        drop_db("ab_part_src")
        drop_db("ab_part_dst")


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
        # Storage parameters and extra indexes change nothing.
        c.execute("ALTER TABLE ab_assignments SET (fillfactor = 70)")
        c.execute("ALTER TABLE ab_results SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01)")
        c.execute("CREATE INDEX ON ab_results (recorded_at)")
        c.execute("CREATE INDEX ON ab_assignments USING hash (user_id)")
        with psycopg.connect(db, autocommit=True) as fresh:
            assert variants_of(fresh, exp, ["a", "b", "c"]) == before
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

def jsonb_forms(c, value, pad_key="pad"):
    """(label, SQL expression) pairs that give `value` as a literal, a parameter, and read from
    a table in each storage form: short (1-byte header), long inline, TOASTed and compressed."""
    text = json.dumps(value)
    c.execute("DROP TABLE IF EXISTS forms")
    c.execute("CREATE TABLE forms (form text PRIMARY KEY, j jsonb)")
    c.execute("ALTER TABLE forms ALTER COLUMN j SET STORAGE EXTERNAL")
    padded = dict(value) if isinstance(value, dict) else None
    rows = [("stored", value)]
    if padded is not None:
        rows += [("long", {**padded, pad_key: "x" * 300}),
                 ("toasted", {**padded, pad_key: "".join(chr(65 + (i * 7919) % 26) for i in range(5000))})]
    for form, v in rows:
        c.execute("INSERT INTO forms VALUES (%s, %s)", (form, Jsonb(v)))
    if padded is not None:
        c.execute("CREATE TABLE forms_main (form text PRIMARY KEY, j jsonb)")
        c.execute("INSERT INTO forms_main VALUES ('compressed', %s)", (Jsonb({**padded, pad_key: "y" * 6000}),))
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
        # Definitions: the padding is a valid description, so every form creates the experiment.
        for label, expr in jsonb_forms(c, two_arms("defined"), pad_key="description"):
            exp = c.execute(f"SELECT ab_create_experiment({expr})", {"p": Jsonb(two_arms("defined"))}).fetchone()[0]
            assert one(c, "SELECT ab_get_experiment(%s) ->> 'name'", exp) == "defined", label
            c.execute("SELECT ab_delete_experiment(%s)", (exp,))
        big = two_arms("big", description="d" * 5000)
        c.execute("CREATE TABLE defs AS SELECT %s::jsonb AS d", (Jsonb(big),))
        exp = one(c, "SELECT ab_create_experiment(d) FROM defs")
        one(c, "SELECT ab_start_experiment(%s)", exp)
        prior = {"mean": 0, "sd": 0.05}
        for label, expr in jsonb_forms(c, prior):
            if label in ("long", "toasted", "compressed"):
                assert sqlstate(c, f"SELECT * FROM ab_bayes({exp}, {expr})") == "22023", label
                continue
            assert c.execute(f"SELECT * FROM ab_bayes(%(e)s, {expr})", {"e": exp, "p": Jsonb(prior)}).fetchall(), label


# -- Item 3: the first cache load of a backend misses no invalidation ---------------------------

def test_a_first_load_blocked_while_the_experiment_stops_does_not_keep_it_running(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "stopping")
    first = psycopg.connect(db, autocommit=True)
    try:
        out = {}

        def call():
            try:
                out["first"] = one(first, "SELECT ab_get_variant(%s, 'u1') ->> 'variant'", exp)
            except Exception as e:  # reported below
                out["error"] = e

        with psycopg.connect(db) as stopper, psycopg.connect(db, autocommit=True) as watcher:
            # The first load reads pg_extension after taking its snapshot: hold it there.
            stopper.execute("LOCK TABLE pg_catalog.pg_extension IN ACCESS EXCLUSIVE MODE")
            t = threading.Thread(target=call)
            t.start()
            assert blocked(watcher, first.info.backend_pid)
            one(stopper, "SELECT ab_stop_experiment(%s)", exp)
            stopper.commit()
            t.join(30)
        assert "error" not in out, out
        # Its snapshot predates the stop: the statement may still have enrolled u1. The next
        # call must see the stop, as a fresh backend does.
        assert one(first, "SELECT ab_get_variant(%s, 'u2')", exp) is None
        assert one(first, "SELECT ab_record_result(%s, 'conversion_rate', 1, 'u1')", exp) is False
    finally:
        first.close()


# -- Item 4: the bound on metric names counts only names some committed call recorded ----------

def test_names_from_rolled_back_or_empty_calls_do_not_pass_the_bound(db):
    with psycopg.connect(db, autocommit=True) as a, psycopg.connect(db, autocommit=True) as b:
        exp = started(a, "bounded")
        one(a, "SELECT ab_get_variant(%s, 'u')", exp)
        a.execute("BEGIN")
        assert one(a, "SELECT ab_record_result(%s, 'rolled_back', 1, 'u')", exp) is True
        a.execute("ROLLBACK")
        a.execute("BEGIN")
        a.execute("SAVEPOINT s")
        assert one(a, "SELECT ab_record_result(%s, 'to_savepoint', 1, 'u')", exp) is True
        a.execute("ROLLBACK TO SAVEPOINT s")
        a.execute("COMMIT")
        # A prepared transaction rolled back later (scripts/cluster.sh enables them).
        a.execute("BEGIN")
        assert one(a, "SELECT ab_record_result(%s, 'prepared', 1, 'u')", exp) is True
        a.execute("PREPARE TRANSACTION 'ab_bounded'")
        a.execute("ROLLBACK PREPARED 'ab_bounded'")
        assert one(a, "SELECT ab_record_result(%s, 'nothing_written', 1, 'not-assigned')", exp) is False
        # Another session fills the experiment up to the bound.
        filled = 0
        for i in range(200):
            if sqlstate(b, "SELECT ab_record_result(%s, %s, 1, 'u')", exp, f"m{i}") == "54000":
                break
            filled += 1
        assert one(b, "SELECT count(DISTINCT metric_name) FROM ab_results WHERE experiment_id = %s", exp) == filled
        for name in ["rolled_back", "to_savepoint", "prepared", "nothing_written", "new"]:
            with pytest.raises(errors.ProgramLimitExceeded, match="already has 100 metrics"):
                a.execute("SELECT ab_record_result(%s, %s, 1, 'u')", (exp, name))
        assert one(a, "SELECT count(DISTINCT metric_name) FROM ab_results WHERE experiment_id = %s", exp) == filled


def test_the_delete_lock_trigger_refuses_a_row_without_an_id(db):
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE TABLE misplaced (x int)")
        c.execute("CREATE TRIGGER misplaced_lock BEFORE DELETE ON misplaced FOR EACH ROW "
                  "EXECUTE FUNCTION ab_lock_experiment_for_delete()")
        c.execute("INSERT INTO misplaced VALUES (1)")
        with pytest.raises(errors.ObjectNotInPrerequisiteState,
                           match='the deleted row has no bigint "id" column') as e:
            c.execute("DELETE FROM misplaced")
        assert e.value.diag.message_hint == "the trigger belongs on ab_experiments"
        assert one(c, "SELECT count(*) FROM misplaced") == 1


# -- Item 5: encodings and deep nesting -----------------------------------------------------------

@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
def test_a_non_utf8_database_is_refused_at_create_extension(encoding):
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS ab_other_encoding")
        c.execute(f"CREATE DATABASE ab_other_encoding ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' "
                  "TEMPLATE template0")
    try:
        with psycopg.connect(conninfo("ab_other_encoding"), autocommit=True) as c:
            with pytest.raises(errors.FeatureNotSupported, match="ab_testing needs a UTF8 database, and database "
                                                                 f'"ab_other_encoding" is {encoding}') as e:
                c.execute("CREATE EXTENSION ab_testing")
            assert "ENCODING 'UTF8'" in e.value.diag.message_hint
            assert one(c, "SELECT count(*) FROM pg_class WHERE relname ~ '^ab_'") == 0
    finally:
        with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS ab_other_encoding")


def deep(levels):
    return "[" * levels + "1" + "]" * levels


def test_deep_nesting_is_invalid_parameter_value(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "deep", target_segments={"plan": ["pro"]})
        cases = [
            ("SELECT * FROM ab_bayes(%s, %s::jsonb)", (exp, deep(200)), "prior cannot be read: it is nested more than"),
            ("SELECT ab_get_variant(%s, 'u', %s::jsonb)", (exp, '{"plan": ' + deep(200) + "}"),
             "attributes cannot be read: it is nested more than"),
            ("SELECT ab_create_experiment(%s::jsonb)",
             (json.dumps(two_arms("deeper", description="x"))[:-1] + ', "salt": ' + deep(200) + "}",),
             "invalid experiment definition: it is nested more than"),
            ("SELECT ab_create_metric_source('s', %s::jsonb)", ('{"relation": ' + deep(5000) + "}",),
             "nested more than"),
        ]
        for sql, args, message in cases:
            with pytest.raises(errors.InvalidParameterValue, match=message):
                c.execute(sql, args)
        # A definition stored nested too deeply (written by hand) is refused the same way.
        c.execute("UPDATE ab_variants SET config = %s::jsonb WHERE experiment_id = %s", ('{"a": ' + deep(300) + "}", exp))
        with psycopg.connect(db, autocommit=True) as fresh:
            with pytest.raises(errors.InvalidParameterValue, match="a stored jsonb value cannot be read"):
                fresh.execute("SELECT ab_get_variant(%s, 'u', '{\"plan\": \"pro\"}')", (exp,))


# -- Item 6: what data can make the extension allocate outside PostgreSQL's memory -------------

def rss_anon_kb(c):
    pid = c.info.backend_pid
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon")


def test_large_attributes_are_refused_before_they_are_copied(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "big attributes", target_segments={"plan": ["pro"]})
        with pytest.raises(errors.InvalidParameterValue, match=r"attributes is \d+ bytes, at most 1048576 are allowed"):
            c.execute("SELECT ab_get_variant(%s, 'u', jsonb_build_object('plan', 'pro', 'pad', repeat('x', 2000000)))",
                      (exp,))
        assert one(c, "SELECT ab_get_variant(%s, 'u', jsonb_build_object('plan', 'pro', 'pad', repeat('x', 900000)))",
                   exp) is not None
        # Definitions, sources and priors are bounded before they are read too.
        with pytest.raises(errors.InvalidParameterValue,
                           match=r"experiment definition is \d+ bytes, at most 4194304 are allowed"):
            c.execute("SELECT ab_create_experiment(%s::jsonb || jsonb_build_object('description', repeat('x', 5000000)))",
                      (Jsonb(two_arms("too big")),))
        with pytest.raises(errors.InvalidParameterValue, match=r"prior is \d+ bytes, at most 65536 are allowed"):
            c.execute("SELECT * FROM ab_bayes(%s, jsonb_build_object('mean', 0, 'sd', 1, 'x', repeat('x', 70000)))",
                      (exp,))
        with pytest.raises(errors.InvalidParameterValue,
                           match=r"metric source definition is \d+ bytes, at most 1048576 are allowed"):
            c.execute("SELECT ab_create_metric_source('s', jsonb_build_object('relation', repeat('x', 2000000)))")
        # A stored definition written by hand past what the library reads: refused, not copied.
        c.execute("UPDATE ab_variants SET config = jsonb_build_object('pad', repeat('x', 5000000)) "
                  "WHERE experiment_id = %s AND name = 'b'", (exp,))
        with psycopg.connect(db, autocommit=True) as fresh:
            with pytest.raises(errors.ProgramLimitExceeded,
                               match=r"a stored jsonb value is \d+ bytes, at most 4194304 are allowed"):
                fresh.execute("SELECT ab_get_variant(%s, 'v', '{\"plan\": \"pro\"}')", (exp,))


def test_the_definition_cache_is_bounded(db):
    with psycopg.connect(db, autocommit=True) as c:
        ids = []
        for i in range(50):
            body = two_arms(f"large-{i}")
            # About 900 kB of variant configuration each (the definition limit is 1 MB).
            body["variants"][0]["config"] = {"blob": "a" * 450_000}
            body["variants"][1]["config"] = {"blob": "b" * 450_000}
            ids.append(one(c, "SELECT ab_create_experiment(%s)", Jsonb(body)))
            one(c, "SELECT ab_start_experiment(%s)", ids[-1])
    with psycopg.connect(db, autocommit=True) as c:
        one(c, "SELECT ab_get_variant(%s, 'warm')", ids[0])
        before = rss_anon_kb(c)
        for _ in range(2):
            for exp in ids:
                assert one(c, "SELECT ab_get_variant(%s, 'u') IS NOT NULL", exp) is True
        grown = rss_anon_kb(c) - before
        # 50 definitions of ~900 kB would be ~45 MB if all were kept; the cache keeps 8 MB.
        assert grown < 25_000, grown


# -- Item 7: the "did you mean" hint names experiments only to roles that may read them ---------

def test_the_hint_names_no_experiment_to_a_role_that_cannot_read_them(db):
    with psycopg.connect(db, autocommit=True) as c:
        started(c, "secret launch")
        c.execute("DROP ROLE IF EXISTS ab_leaky")
        c.execute("CREATE ROLE ab_leaky")
        try:
            c.execute("GRANT EXECUTE ON FUNCTION ab_get_variant(text, text, jsonb, text) TO ab_leaky")
            assert one(c, "SELECT has_table_privilege('ab_leaky', 'ab_experiments', 'SELECT')") is False
            with pytest.raises(errors.UndefinedObject, match='did you mean "secret launch"'):
                c.execute("SELECT ab_get_variant('secret lunch', 'u')")
            c.execute("SET ROLE ab_leaky")
            with pytest.raises(errors.UndefinedObject) as e:
                c.execute("SELECT ab_get_variant('secret lunch', 'u')")
            assert str(e.value).startswith('experiment "secret lunch" does not exist')
            assert "secret launch" not in str(e.value)
            c.execute("RESET ROLE")
        finally:
            c.execute("RESET ROLE")
            c.execute("DROP OWNED BY ab_leaky")
            c.execute("DROP ROLE ab_leaky")


# -- Item 8: functions marked parallel safe, run in parallel workers ------------------------------

def test_parallel_safe_functions_answer_the_same_in_a_parallel_worker(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "parallel", metrics={"conversion_rate": {"type": "binary"}}, breakdowns=["plan"])
        c.execute("SELECT ab_create_layer('pl', 10)")
        for i in range(60):
            one(c, "SELECT ab_get_variant(%s, %s, %s)", exp, f"u{i}", Jsonb({"plan": ["free", "pro"][i % 2]}))
            one(c, "SELECT ab_record_result(%s, 'conversion_rate', %s, %s)", exp, float(i % 3 == 0), f"u{i}")
        c.execute("CREATE TABLE users AS SELECT 'u' || g AS u FROM generate_series(1, 200) g")
        queries = [
            ("SELECT string_agg(ab_layer_group('pl', u), ',' ORDER BY u) FROM users", ()),
            ("SELECT count(*), sum(posterior_mean) FROM ab_bayes(%s)", (exp,)),
            ("SELECT ab_summary(%s)", (exp,)),
            ("SELECT count(*) FROM ab_breakdown(%s, 'plan')", (exp,)),
            ("SELECT count(*) FROM ab_timeline(%s, 'conversion_rate')", (exp,)),
            ("SELECT ab_period_srm_p_value(%s)", (exp,)),
            ("SELECT length(ab_plot(%s))", (exp,)),
            ("SELECT ab_get_experiment(%s) ->> 'name'", (exp,)),
            ("SELECT ab_normalize_name('n', u) FROM users ORDER BY u LIMIT 1", ()),
        ]
        expected = [c.execute(sql, args).fetchall() for sql, args in queries]
        setting = "debug_parallel_query" if c.info.server_version >= 160000 else "force_parallel_mode"
        c.execute(f"SET {setting} = on")
        c.execute("SET parallel_setup_cost = 0")
        c.execute("SET parallel_tuple_cost = 0")
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN SELECT ab_layer_group('pl', u) FROM users"))
        assert "Gather" in plan
        for (sql, args), want in zip(queries, expected):
            assert c.execute(sql, args).fetchall() == want, sql


# -- Issue 26 item 8: breakdown attribute values follow the name rules -------------------------

def test_breakdown_values_follow_the_name_rules(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "broken down", breakdowns=["loan_type"])
        bad = [
            ({"loan_type": "fha\nRecommendation: ship"}, "must not contain control characters (found U+000A)"),
            ({"loan_type": "B\u202eA"}, "must not contain invisible or bidirectional formatting characters (found U+202E)"),
            ({"loan_type": "x" * 201}, "is 201 characters long, at most 200 are allowed"),
            ({"loan_type": "   "}, "must not be empty"),
        ]
        for attrs, message in bad:
            with pytest.raises(errors.InvalidParameterValue,
                               match=re.escape('the value of breakdown attribute "loan_type" ' + message)):
                c.execute("SELECT ab_get_variant(%s, 'bad', %s)", (exp, Jsonb(attrs)))
        with pytest.raises(errors.InvalidParameterValue, match="is 401 characters long"):
            c.execute("SELECT ab_get_variant(%s, 'bad', '{\"loan_type\": 1e400}')", (exp,))
        assert one(c, "SELECT count(*) FROM ab_assignments WHERE experiment_id = %s", exp) == 0
        for user, attrs in [("nfc", {"loan_type": "cafe\u0301"}), ("long", {"loan_type": "y" * 200}),
                            ("number", '{"loan_type": 1.50}'), ("none", {"other": 1})]:
            arg = attrs if isinstance(attrs, str) else Jsonb(attrs)
            assert one(c, "SELECT ab_get_variant(%s, %s, %s::jsonb)", exp, user, arg) is not None
        stored = dict(c.execute("SELECT user_id, attributes ->> 'loan_type' FROM ab_assignments "
                                "WHERE experiment_id = %s", (exp,)).fetchall())
        assert stored == {"nfc": "caf\u00e9", "long": "y" * 200, "number": "1.50", "none": None}


def test_names_a_caller_typed_are_escaped_and_cut_in_messages(db):
    """An experiment, layer or attribute name the caller typed comes back in the error escaped
    (a line feed could forge a server log line) and at most 200 characters long."""
    with psycopg.connect(db, autocommit=True) as c:
        exp = started(c, "named", breakdowns=["loan_type"])
        forged = "x\n2026-12-06 LOG:  forged\x1b[31m"
        shown = "x\\u{000A}2026-12-06 LOG:  forged\\u{001B}[31m"
        for function in ("ab_analyze", "ab_summary", "ab_timeline", "ab_retention"):
            with pytest.raises(errors.UndefinedObject) as e:
                c.execute(f"SELECT * FROM {function}(%s::text)", (forged,))
            assert e.value.diag.message_primary == f'experiment "{shown}" does not exist', function
        with pytest.raises(errors.UndefinedObject) as e:
            c.execute("SELECT ab_layer_group(%s, 'u')", (forged,))
        assert e.value.diag.message_primary == f'layer "{shown}" does not exist'
        with pytest.raises(errors.InvalidParameterValue) as e:
            c.execute("SELECT * FROM ab_breakdown(%s, %s)", (exp, "a" * 1_000_000))
        assert e.value.diag.message_primary == (
            'experiment "named" stores no attribute "' + "a" * 200 + '..." for breakdowns')


# -- The property test: every function, odd arguments, no internal error, no crash --------------

def test_no_function_fails_internally_on_odd_arguments(db):
    """Calls every ab_* function (aggregates included, trigger functions aside) with arguments
    drawn from pools of odd values: jsonb in every storage form, deep nesting, huge values,
    control and bidirectional characters, NaN and infinities, NULLs, extremes. Any XX000, a lost
    connection or a server restart fails the test. Seeded and bounded in time."""
    import random

    rng = random.Random(34)
    with psycopg.connect(db, autocommit=True) as c:
        start = server_start(c)
        exp = started(c, "fuzzed", target_segments={"plan": ["pro"]}, breakdowns=["plan"])
        one(c, "SELECT ab_get_variant(%s, 'known')", exp)
        c.execute("CREATE TABLE odd (k text PRIMARY KEY, j jsonb)")
        c.execute("INSERT INTO odd VALUES ('short', '{\"plan\": \"pro\"}'), ('empty', '{}'), "
                  "('long', jsonb_build_object('plan', 'pro', 'pad', repeat('x', 300))), "
                  "('toasted', (SELECT jsonb_object_agg('k' || g, md5(g::text)) FROM generate_series(1, 400) g)), "
                  "('deep', %s::jsonb), ('huge_number', '{\"plan\": 1e400}'), "
                  "('big', jsonb_build_object('plan', repeat('p', 1500000)))", (deep(3000),))
        pools = {
            "text": ["'fuzzed'", "''", "'known'", "repeat('x', 100000)", "E'a\\nb\\x01'", "U&'B\\202EA'",
                     "'josé'", "'1e400'", "NULL", "'conversion_rate'", "'plan'", "'pl'", "'bonferroni'"],
            "bigint": [str(exp), "0", "-1", "9223372036854775807", "NULL"],
            "integer": ["0", "-1", "2147483647", "NULL"],
            "double precision": ["0", "-1", "'NaN'", "'Infinity'", "'-Infinity'", "1e308", "5e-324", "NULL", "0.05"],
            "boolean": ["true", "false", "NULL"],
            "name": ["'nobody_at_all'", "NULL", "'postgres'"],
            "jsonb": ["'{}'", "'null'", "'[]'", "'1e400'", "'\"s\"'", "NULL", "%s::jsonb" % repr(deep(200)),
                      "'{\"plan\": \"pro\"}'", "'{\"mean\": 0, \"sd\": 1e308}'"]
                     + [f"(SELECT j FROM odd WHERE k = '{k}')" for k in
                        ["short", "empty", "long", "toasted", "deep", "huge_number", "big"]],
            "bigint[]": ["ARRAY[1, 2]::bigint[]", "ARRAY[]::bigint[]", "ARRAY[-1, NULL]::bigint[]", "NULL",
                         "array_fill(1::bigint, ARRAY[100000])"],
            "double precision[]": ["ARRAY[0.5, 0.5]", "ARRAY[]::float8[]", "ARRAY['NaN', 1]::float8[]", "NULL",
                                   "ARRAY[1e308, -1e308]"],
        }
        functions = c.execute(
            "SELECT p.proname, p.prokind, array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t) "
            "FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e' "
            "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'ab_testing' "
            "WHERE p.prorettype <> 'trigger'::regtype AND p.proname NOT IN ('ab_distribute', 'ab_drop_shards') "
            "ORDER BY 1, 3").fetchall()
        assert len(functions) > 50
        c.execute("SET statement_timeout = '5s'")
        deadline = time.time() + 40
        calls, states = 0, {}
        for _ in range(40):
            for name, kind, types in functions:
                if time.time() > deadline:
                    break
                args = [rng.choice(pools.get(t, ["NULL"])) for t in types]
                if kind == "a":
                    sql = f"SELECT {name}({', '.join('v' + str(i) for i in range(len(args)))}) FROM (VALUES " \
                          f"({', '.join(args)}), ({', '.join(args)})) x({', '.join('v' + str(i) for i in range(len(args)))})"
                else:
                    sql = f"SELECT * FROM {name}({', '.join(args)})"
                try:
                    c.execute(sql)
                    state = "ok"
                except psycopg.Error as e:
                    state = e.sqlstate
                    assert state is not None and not c.closed, f"connection lost: {sql[:300]}: {e}"
                    assert state != "XX000", f"{sql[:300]}: {e}"
                assert not c.closed, sql[:300]
                calls += 1
                states[state] = states.get(state, 0) + 1
        assert calls >= len(functions), calls
        print(calls, "calls", states)
        assert server_start(c) == start
