import os

import psycopg
import pytest

DB = "ab_client_test"

# AB_CITUS=1: the tests marked `citus` run against a Citus coordinator (PGHOST/PGPORT) whose
# workers listen on AB_CITUS_WORKERS; each test database is then the coordinator's `postgres`
# database with the extension created afresh and distributed by ab_distribute().
CITUS = os.environ.get("AB_CITUS") == "1"
WORKER_PORTS = [p for p in os.environ.get("AB_CITUS_WORKERS", "").split(",") if p]


def pytest_configure(config):
    config.addinivalue_line("markers", "citus: also runs against a Citus cluster (AB_CITUS=1)")
    config.addinivalue_line("markers", "citus_only: runs only against a Citus cluster")


def pytest_collection_modifyitems(config, items):
    selected, deselected = [], []
    for item in items:
        marks = {m.name for m in item.iter_markers()}
        if CITUS:
            ok = "citus" in marks or "citus_only" in marks
        else:
            ok = "citus_only" not in marks
        (selected if ok else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def conninfo(dbname, port=None):
    return psycopg.conninfo.make_conninfo(
        host=os.environ.get("PGHOST", "/tmp/ab_testing_pg"),
        port=port or os.environ.get("PGPORT", "5499"),
        user=os.environ.get("PGUSER", "postgres"),
        dbname="postgres" if CITUS else dbname,
    )


def fresh_citus():
    """The extension created afresh on the Citus cluster and distributed."""
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        if c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'ab_testing'").fetchone()[0]:
            c.execute("SELECT ab_drop_shards()")
        c.execute("DROP EXTENSION IF EXISTS ab_testing CASCADE")
        c.execute("CREATE EXTENSION ab_testing")
        c.execute("SELECT ab_distribute()")
    return conninfo("postgres")


@pytest.fixture(scope="session")
def dsn():
    if CITUS:
        yield fresh_citus()
        return
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
