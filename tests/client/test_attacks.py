"""Attacks on the trust boundaries, each performed and shown to fail: a source's code that
writes or runs DDL during its read (renaming a schema, altering a role), a schema owner
that can swap a checked name, an extension schema that a non-superuser owns, an analysis
started from a source's own code, an administrator rewriting what a stored analysis
records of its sources, and a timeline asked to span centuries."""
import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import conninfo
from test_operations import drop_db, fresh_db, one, two_arms

DB = "ab_attacks"
APP, ADMIN, ANALYST = "ab_atk_app", "ab_atk_admin", "ab_atk_analyst"


def drop_roles():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        for r in (APP, ADMIN, ANALYST):
            c.execute(f"DROP ROLE IF EXISTS {r}")


@pytest.fixture
def db():
    drop_db(DB)
    drop_db(DB + "_owned")
    drop_roles()
    dsn = fresh_db(DB)
    with psycopg.connect(dsn, autocommit=True) as c:
        for r in (APP, ADMIN, ANALYST):
            c.execute(f"CREATE ROLE {r}")
        one(c, "SELECT ab_grant_app(%s)", APP)
        one(c, "SELECT ab_grant_admin(%s)", ADMIN)
        one(c, "SELECT ab_grant_analyst(%s)", ANALYST)
        # The application runs its own migrations in a schema of its own.
        c.execute(f"CREATE SCHEMA crm AUTHORIZATION {APP}")
        c.execute(f"GRANT USAGE ON SCHEMA crm TO {ADMIN}, {ANALYST}")
        c.execute(f"SET ROLE {APP}")
        c.execute("CREATE TABLE crm.conv (uid text, at timestamptz, v numeric)")
        c.execute(f"GRANT SELECT ON crm.conv TO {ADMIN}, {ANALYST}")
        c.execute("RESET ROLE")
    yield dsn
    drop_db(DB)
    drop_db(DB + "_owned")
    drop_roles()


def source_experiment(c, name, relation):
    source = {"relation": relation, "user_column": "uid", "time_column": "at", "value_column": "v"}
    exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(
        name, primary_metric="amount", metrics={"amount": {"aggregation": "sum", "source": source}})))
    one(c, "SELECT ab_start_experiment(%s)", exp)
    for i in range(20):
        one(c, "SELECT ab_get_variant(%s, %s)", exp, f"u{i}")
    return exp


def test_a_source_s_code_cannot_write_or_run_ddl_during_its_read(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = source_experiment(c, "conversions", "crm.conv")
        c.execute("INSERT INTO crm.conv SELECT 'u' || g, now() + interval '1 minute', g FROM generate_series(0, 19) g")
        # Later, the application puts a view in the table's place whose function renames the
        # schema (to plant objects under checked names), alters its role and forges rows.
        c.execute(f"SET ROLE {APP}")
        c.execute("ALTER TABLE crm.conv RENAME TO conv_t")
        c.execute("""CREATE FUNCTION crm.swap(what text) RETURNS boolean LANGUAGE plpgsql AS $f$
            BEGIN
                IF what = 'rename' THEN ALTER SCHEMA crm RENAME TO crm_old; END IF;
                IF what = 'role' THEN ALTER ROLE ab_atk_app CREATEROLE; END IF;
                IF what = 'forge' THEN
                    INSERT INTO public.ab_results (experiment_id, variant_id, user_id, metric_name, metric_value)
                    SELECT experiment_id, variant_id, user_id, 'amount', 1e6 FROM public.ab_assignments;
                END IF;
                RETURN true;
            END $f$""")
        c.execute(f"GRANT SELECT ON crm.conv_t TO {ADMIN}, {ANALYST}")
        c.execute("RESET ROLE")
        for what in ["rename", "role", "forge"]:
            c.execute(f"SET ROLE {APP}")
            c.execute(f"CREATE OR REPLACE VIEW crm.conv AS SELECT * FROM crm.conv_t WHERE crm.swap('{what}')")
            c.execute(f"GRANT SELECT ON crm.conv TO {ADMIN}, {ANALYST}")
            c.execute("RESET ROLE")
            for role in [None, ADMIN, ANALYST]:
                c.execute(f"SET ROLE {role}" if role else "RESET ROLE")
                with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="read-only transaction"):
                    c.execute("SELECT * FROM ab_analyze(%s)", (exp,))
                c.execute("RESET ROLE")
        assert one(c, "SELECT count(*) FROM pg_namespace WHERE nspname = 'crm'") == 1
        assert one(c, "SELECT rolcreaterole FROM pg_roles WHERE rolname = %s", APP) is False
        assert one(c, "SELECT count(*) FROM ab_results") == 0
        # Without the function's writes, the same view is read (as its owner) and analysed.
        c.execute(f"SET ROLE {APP}")
        c.execute("CREATE OR REPLACE VIEW crm.conv AS SELECT * FROM crm.conv_t WHERE crm.swap('none')")
        c.execute("RESET ROLE")
        c.execute(f"SET ROLE {ANALYST}")
        assert one(c, "SELECT sum(users) FROM ab_analyze(%s) WHERE metric_name = 'amount'", exp) == 20


def test_a_relation_in_a_schema_another_role_owns_is_read_as_that_role_or_refused(db):
    """The schema's owner can put another relation under the checked name between the check
    and the read: it counts as one of the relation's owners."""
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE TABLE crm.ledger (uid text, at timestamptz, v numeric)")  # owned by the superuser
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f'runs code of role "{APP}"'):
            source_experiment(c, "ledger", "crm.ledger")
        assert one(c, "SELECT count(*) FROM ab_experiments") == 0


def test_the_extension_refuses_a_schema_a_non_superuser_owns(db):
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"CREATE DATABASE {DB}_owned OWNER {APP}")
    with psycopg.connect(conninfo(DB + "_owned"), autocommit=True) as c:
        # public belongs to the database's owner, the application.
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute("CREATE EXTENSION ab_testing")
        assert str(e.value).splitlines()[0] == (
            f'ab_testing must be installed in a schema owned by a superuser, and schema "public" is owned by role "{APP}"')
        assert "CREATE SCHEMA ab_testing AUTHORIZATION" in e.value.diag.message_hint
        c.execute(f"CREATE SCHEMA app_owned AUTHORIZATION {APP}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match='schema "app_owned" is owned by role'):
            c.execute("CREATE EXTENSION ab_testing SCHEMA app_owned")
        assert one(c, "SELECT count(*) FROM pg_extension WHERE extname = 'ab_testing'") == 0
        c.execute("CREATE SCHEMA ab_testing")
        c.execute("CREATE EXTENSION ab_testing SCHEMA ab_testing")
        assert one(c, "SELECT ab_testing.ab_sample_size(0.5, 0.05)") == 1570


def test_an_analysis_started_from_a_source_s_code_reads_no_source(db):
    """An administrator's view calls ab_analyze on an experiment reading a table it may not
    SELECT, hoping to run while a superuser analyses its own experiment: refused."""
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE SCHEMA pay")
        c.execute("CREATE TABLE pay.salaries (uid text, at timestamptz, v numeric)")
        payroll = source_experiment(c, "payroll", "pay.salaries")
        c.execute("INSERT INTO pay.salaries VALUES ('u1', now() + interval '1 minute', 100001)")
        c.execute(f"CREATE SCHEMA adm AUTHORIZATION {ADMIN}")
        c.execute(f"SET ROLE {ADMIN}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM ab_analyze(%s)", (payroll,))
        c.execute("CREATE TABLE adm.t (uid text, at timestamptz, v numeric)")
        c.execute("""CREATE FUNCTION adm.leak() RETURNS boolean LANGUAGE plpgsql AS $f$
            BEGIN
                PERFORM * FROM public.ab_analyze('payroll');
                RAISE NOTICE 'leaked';
                RETURN true;
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'nested: % %', SQLSTATE, SQLERRM;
                RETURN true;
            END $f$""")
        c.execute("CREATE VIEW adm.v AS SELECT * FROM adm.t WHERE adm.leak()")
        bait = source_experiment(c, "bait", "adm.v")
        c.execute("INSERT INTO adm.t SELECT 'u' || g, now() + interval '1 minute', 1 FROM generate_series(0, 3) g")
        c.execute("RESET ROLE")
        notices = []
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        c.execute("SELECT * FROM ab_analyze(%s)", (bait,)).fetchall()
        assert notices and "leaked" not in notices
        assert all(n.startswith("nested: 42501 ") and "cannot be read from inside the read of another" in n
                   for n in notices), notices


def test_an_administrator_cannot_rewrite_stored_analyses(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("stored")))
        one(c, "SELECT ab_start_experiment(%s)", exp)
        for i in range(10):
            one(c, "SELECT ab_get_variant(%s, %s)", exp, f"u{i}")
            one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, %s)", exp, f"u{i}")
        c.execute("SELECT * FROM ab_analyze(%s)", (exp,))
        c.execute(f"SET ROLE {ADMIN}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table ab_insights"):
            c.execute("UPDATE ab_insights SET source_reads = NULL")
        # Nor copy a stored row's figures into a new one: they are not readable.
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table ab_insights"):
            c.execute("INSERT INTO ab_insights SELECT * FROM ab_insights")
        # Deleting an experiment's stored analyses stays an administrator's right.
        c.execute("DELETE FROM ab_insights WHERE experiment_id = %s", (exp,))
        c.execute("RESET ROLE")
        assert one(c, "SELECT count(*) FROM ab_insights") == 0


def test_a_timeline_of_centuries_is_refused(db):
    with psycopg.connect(db, autocommit=True) as c:
        exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("ancient")))
        one(c, "SELECT ab_start_experiment(%s)", exp)
        one(c, "SELECT ab_get_variant(%s, 'u1')", exp)
        c.execute("INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at) "
                  "SELECT %s, 'ancient', min(id), now() - interval '1000 years' FROM ab_variants WHERE experiment_id = %s",
                  (exp, exp))
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as e:
            c.execute("SELECT count(*) FROM ab_timeline('ancient', NULL)")
        assert str(e.value).splitlines()[0].startswith("a timeline covers at most 3660 days, and this one would cover 365")


def test_a_view_that_filters_on_current_user_sees_its_owner(db):
    """The documented limit of reading a source as its owner: a view that filters on
    current_user returns the owner's rows, not the analysing role's."""
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(f"SET ROLE {APP}")
        c.execute("CREATE TABLE crm.owned (uid text, at timestamptz, v numeric, owner name)")
        c.execute("CREATE VIEW crm.mine AS SELECT uid, at, v FROM crm.owned WHERE owner = current_user")
        c.execute(f"GRANT SELECT ON crm.owned, crm.mine TO {ANALYST}, {ADMIN}")
        c.execute("RESET ROLE")
        exp = source_experiment(c, "mine", "crm.mine")
        c.execute(f"INSERT INTO crm.owned SELECT 'u' || g, now() + interval '1 minute', 1, "
                  f"CASE WHEN g < 5 THEN '{APP}' ELSE '{ANALYST}' END FROM generate_series(0, 19) g")
        c.execute(f"SET ROLE {ANALYST}")
        # Directly, the analyst sees its own 15 rows; through the extension, the owner's 5.
        assert one(c, "SELECT count(*) FROM crm.mine") == 15
        assert one(c, "SELECT round(sum(users * mean)::numeric, 9) FROM ab_analyze(%s) WHERE metric_name = 'amount'",
                   exp) == 5
