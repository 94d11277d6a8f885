import os

import psycopg
import pytest

DB = "ab_client_test"


def conninfo(dbname):
    return psycopg.conninfo.make_conninfo(
        host=os.environ.get("PGHOST", "/tmp/ab_testing_pg"),
        port=os.environ.get("PGPORT", "5499"),
        user=os.environ.get("PGUSER", "postgres"),
        dbname=dbname,
    )


@pytest.fixture(scope="session")
def dsn():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
    dsn = conninfo(DB)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION ab_testing")
    yield dsn
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


@pytest.fixture
def conn(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c
