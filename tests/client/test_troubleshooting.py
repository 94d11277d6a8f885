"""docs/troubleshooting.md's rows about installing and calling: each symptom as a user meets
it, with the message the row quotes."""
import psycopg
import pytest

from conftest import conninfo
from test_operations import drop_db, fresh_db

ROLE = "ab_trouble_owner"


@pytest.fixture
def empty_db():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS ab_trouble WITH (FORCE)")
        c.execute("CREATE DATABASE ab_trouble")
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            c.execute(f"CREATE ROLE {ROLE}")
        c.execute(f"ALTER DATABASE ab_trouble OWNER TO {ROLE}")
    yield conninfo("ab_trouble")
    drop_db("ab_trouble")
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP ROLE IF EXISTS {ROLE}")


def test_installing_needs_a_superuser_an_existing_schema_and_the_search_path(empty_db):
    with psycopg.connect(empty_db, autocommit=True) as c:
        c.execute(f"SET ROLE {ROLE}")  # the database's owner, not a superuser
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match='permission denied to create extension "ab_testing"'):
            c.execute("CREATE EXTENSION ab_testing")
        c.execute("RESET ROLE")
        with pytest.raises(psycopg.errors.InvalidSchemaName, match='schema "testing" does not exist'):
            c.execute("CREATE EXTENSION ab_testing SCHEMA testing")
        c.execute("CREATE SCHEMA testing")
        c.execute("CREATE EXTENSION ab_testing SCHEMA testing")
        with pytest.raises(psycopg.errors.UndefinedFunction, match=r"function ab_get_variant\(unknown, unknown\) does not exist"):
            c.execute("SELECT ab_get_variant('x', 'u')")
        assert c.execute("SELECT testing.ab_sample_size(0.5, 0.05)").fetchone()[0] == 1570
        c.execute("SET search_path = testing, public")
        assert c.execute("SELECT ab_sample_size(0.5, 0.05)").fetchone()[0] == 1570


def test_what_a_driver_or_an_argument_order_slip_gives():
    dsn = fresh_db("ab_trouble_calls")
    with psycopg.connect(dsn, autocommit=True) as c:
        with pytest.raises(psycopg.errors.UndefinedFunction,
                           match=r"function ab_record_result\(unknown, unknown, boolean, unknown\) does not exist"):
            c.execute("SELECT ab_record_result(%s, 'resolution_rate', %s, %s)", ("e", True, "u"))
        with pytest.raises(psycopg.ProgrammingError, match="cannot adapt type 'dict'"):
            c.execute("SELECT ab_get_variant(%s, %s, %s)", ("e", "u", {"loan_type": "fha"}))
        with pytest.raises(psycopg.errors.UndefinedFunction,
                           match=r"function ab_record_covariate\(unknown, unknown, numeric, unknown\) does not exist"):
            c.execute("SELECT ab_record_covariate('e', 'spend', 12.5, 'u1')")
    drop_db("ab_trouble_calls")
