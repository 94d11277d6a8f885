"""Citus operations on a live cluster, as docs/citus.md's runbook gives them: adding a worker
and rebalancing, draining and removing it, and a worker that crashes, each while sessions
assign and record through the coordinator. The runbook's blocks (`readme-test: citus; NAME`)
are read from docs/citus.md and run here, against scripts/citus-cluster.sh's cluster."""
import os
import random
import re
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import WORKER_PORTS, conninfo, fresh_citus
from test_operations import PER_USER_STATE_MISMATCHES, one, two_arms
from test_readme import ROOT, blocks

pytestmark = pytest.mark.citus_only

SPARE_PORT = 5513
CLUSTER = os.path.join(ROOT, "scripts", "citus-cluster.sh")


def runbook():
    """docs/citus.md's runbook blocks by name."""
    found = {}
    for b in blocks(os.path.join(ROOT, "docs", "citus.md")):
        m = re.match(r"citus; (\S+)$", b.marker or "")
        if m:
            found[m.group(1)] = b.text
    return found


def run_runbook(c, name, **names):
    """Runs the block's statements on `c`, with the docs' example hosts and ports replaced."""
    text = runbook()[name]
    for placeholder, value in names.items():
        text = text.replace(placeholder, str(value))
    for statement in [s.strip() for s in re.sub(r"--[^\n]*", "", text).split(";") if s.strip()]:
        c.execute(statement)


def cluster(*args):
    subprocess.run([CLUSTER, *args], check=True, capture_output=True)


class Traffic:
    """Sessions through the coordinator assigning new users and recording results, each call
    kept as acknowledged only when it returned; errors are counted by SQLSTATE."""

    def __init__(self, exp, sessions=3, seed=0):
        self.exp, self.stop = exp, threading.Event()
        self.variants, self.results, self.errors, self.times = {}, [], {}, []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(seed * 100 + k,)) for k in range(sessions)]
        for t in self.threads:
            t.start()

    def run(self, seed):
        rng = random.Random(seed)
        conn = None
        n = 0
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(conninfo("postgres"), autocommit=True)
                n += 1
                user = f"s{seed}-u{n}"
                v = one(conn, "SELECT ab_get_variant(%s, %s) ->> 'variant'", self.exp, user)
                with self.lock:
                    self.variants[user] = v
                value = float(rng.random() < 0.4)
                if one(conn, "SELECT ab_record_result(%s, 'conversion_rate', %s, %s)", self.exp, value, user):
                    with self.lock:
                        self.results.append((user, value))
                        self.times.append(time.monotonic())
            except psycopg.Error as e:
                with self.lock:
                    self.errors[e.sqlstate] = self.errors.get(e.sqlstate, 0) + 1
                if conn is not None and (conn.closed or conn.broken):
                    conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
            assert not t.is_alive()


def check_kept(c, exp, traffic, before_variants):
    """Every acknowledged assignment and result is there once, the per-user state equals the
    raw results, and the users assigned before keep their variants."""
    stored = dict(c.execute("SELECT a.user_id, v.name FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id "
                            "WHERE a.experiment_id = %s", (exp,)).fetchall())
    for user, v in list(traffic.variants.items()) + list(before_variants.items()):
        assert stored.get(user) == v, user
    assert one(c, "SELECT count(*) FROM ab_assignments WHERE experiment_id = %s", exp) == len(stored)
    recorded = {}
    for user, n in c.execute("SELECT user_id, count(*) FROM ab_results WHERE experiment_id = %s GROUP BY 1",
                             (exp,)).fetchall():
        recorded[user] = n
    acknowledged = {}
    for user, _ in traffic.results:
        acknowledged[user] = acknowledged.get(user, 0) + 1
    for user, n in acknowledged.items():
        assert recorded.get(user, 0) >= n, user
    assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
    for user in random.Random(5).sample(sorted(stored), 40):
        assert one(c, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, user) == stored[user]


@pytest.fixture
def citus():
    dsn = fresh_citus()
    with psycopg.connect(dsn, autocommit=True) as c:
        # "ops" gets the traffic; "quiet" only its rows from before, for an analysis to compare.
        ids = []
        for name in ("ops", "quiet"):
            exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(name, salt=name)))
            one(c, "SELECT ab_start_experiment(%s)", exp)
            for i in range(200):
                one(c, "SELECT ab_get_variant(%s, %s)", exp, f"before-{i}")
                one(c, "SELECT ab_record_result(%s, 'conversion_rate', %s, %s)", exp, float(i % 3 == 0), f"before-{i}")
            ids.append(exp)
        before = dict(c.execute("SELECT a.user_id, v.name FROM ab_assignments a JOIN ab_variants v "
                                "ON v.id = a.variant_id WHERE a.experiment_id = %s", (ids[0],)).fetchall())
    yield dsn, ids, before
    with psycopg.connect(dsn, autocommit=True) as c:
        if one(c, "SELECT count(*) FROM pg_dist_node WHERE nodeport = %s", SPARE_PORT):
            c.execute("SELECT citus_drain_node('127.0.0.1', %s, shard_transfer_mode => 'block_writes')", (SPARE_PORT,))
            c.execute("SELECT citus_remove_node('127.0.0.1', %s)", (SPARE_PORT,))
    cluster("spare-destroy")
    cluster("start")
    fresh_citus()


def analysis(c, exp):
    return c.execute("SELECT * FROM ab_analyze(%s)", (exp,)).fetchall()


def same_analysis(a, b):
    from test_citus import assert_same_analysis
    assert_same_analysis(a, b)


def test_adding_a_worker_and_rebalancing_under_traffic_keeps_every_row(citus):
    dsn, (exp, quiet), before = citus
    cluster("spare-start")
    with psycopg.connect(dsn, autocommit=True) as c:
        quiet_before = analysis(c, quiet)
        traffic = Traffic(exp)
        time.sleep(1)
        run_runbook(c, "add-worker", **{"10.0.0.4": "127.0.0.1", "5432": SPARE_PORT})
        time.sleep(1)
        traffic.finish()
        moved = one(c, "SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) "
                       "WHERE n.nodeport = %s AND p.shardid IN (SELECT shardid FROM pg_dist_shard "
                       "WHERE logicalrelid = 'ab_results'::regclass)", SPARE_PORT)
        assert moved > 0
        print("add-worker:", traffic.errors, len(traffic.variants), "assigned,", len(traffic.results), "recorded")
        assert traffic.errors == {}
        assert len(traffic.results) > 0
        check_kept(c, exp, traffic, before)
        same_analysis(quiet_before, analysis(c, quiet))
        # Draining the worker again, under traffic, keeps them too.
        traffic = Traffic(exp, seed=1)
        time.sleep(1)
        run_runbook(c, "remove-worker", **{"10.0.0.4": "127.0.0.1", "5432": SPARE_PORT})
        traffic.finish()
        print("remove-worker:", traffic.errors, len(traffic.variants), "assigned,", len(traffic.results), "recorded")
        assert traffic.errors == {}
        assert one(c, "SELECT count(*) FROM pg_dist_node WHERE nodeport = %s", SPARE_PORT) == 0
        check_kept(c, exp, traffic, before)
        same_analysis(quiet_before, analysis(c, quiet))


def test_a_worker_that_crashes_during_writes_loses_nothing_acknowledged(citus):
    dsn, (exp, quiet), before = citus
    created, create_errors, stop = [], {}, threading.Event()

    def lifecycle():
        # Experiments created meanwhile: each writes the reference tables on every node (two-phase commit).
        with psycopg.connect(dsn, autocommit=True) as c:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(f"during-{n}")))
                    created.append(f"during-{n}")
                except psycopg.Error as e:
                    create_errors[e.sqlstate] = create_errors.get(e.sqlstate, 0) + 1
                    if c.broken:
                        return
                time.sleep(0.1)

    with psycopg.connect(dsn, autocommit=True) as c:
        quiet_before = analysis(c, quiet)
        traffic = Traffic(exp)
        creator = threading.Thread(target=lifecycle)
        creator.start()
        time.sleep(1)
        recorded_before_crash = len(traffic.results)
        cluster("crash", "2")  # as a power loss would: no shutdown checkpoint
        down = time.monotonic()
        time.sleep(2)
        up = time.monotonic()
        cluster("start")
        time.sleep(2)
        stop.set()
        creator.join(timeout=60)
        traffic.finish()
        print("crash:", traffic.errors, create_errors, len(traffic.results), "recorded,", recorded_before_crash,
              "before the crash,", len(created), "created")
        assert len(traffic.results) > recorded_before_crash  # recording went on after the restart
        # Users on the other worker were served while this one was down.
        assert sum(1 for t in traffic.times if down + 0.5 < t < up) > 0
        # What the application saw while the worker was down: connection failures, to retry.
        assert set(traffic.errors) | set(create_errors) <= {"08006", "08001", "XX000"}
    # A new session: this one's cached connection to the worker died with it.
    with psycopg.connect(dsn, autocommit=True) as c:
        run_runbook(c, "after-crash")
        for port in [5510] + [int(p) for p in WORKER_PORTS]:
            with psycopg.connect(conninfo("postgres", port=port)) as node:
                assert one(node, "SELECT count(*) FROM pg_prepared_xacts") == 0, port
        check_kept(c, exp, traffic, before)
        names = {r[0] for r in c.execute("SELECT name FROM ab_experiments").fetchall()}
        assert set(created) <= names
        # Every node's copy of the reference table holds the same experiments.
        copies = {r[0] for r in c.execute("SELECT result FROM run_command_on_placements('ab_experiments', "
                                          "'SELECT string_agg(name, '','' ORDER BY id) FROM %s')").fetchall()}
        assert len(copies) == 1
        same_analysis(quiet_before, analysis(c, quiet))


def test_every_runbook_block_runs_here():
    assert set(runbook()) == {"add-worker", "remove-worker", "after-crash", "one-node", "grow"}


def single_node_analysis(calls):
    """The answer of the same calls on the plain PostgreSQL the Citus tests compare with."""
    from test_citus import SINGLE_NODE, on_one_node
    if not SINGLE_NODE:
        pytest.skip("AB_SINGLE_NODE_DSN names no single-node database to compare with")
    return on_one_node("ab_ops_reference", calls)


def lifecycle(c, nsp="public"):
    exp = one(c, f"SELECT {nsp}.ab_create_experiment(%s)", Jsonb(two_arms("one-node", salt="one-node")))
    one(c, f"SELECT {nsp}.ab_start_experiment(%s)", exp)
    for i in range(300):
        one(c, f"SELECT {nsp}.ab_get_variant(%s, %s)", exp, f"user-{i}")
        one(c, f"SELECT {nsp}.ab_record_result(%s, 'conversion_rate', %s, %s)", exp, float(i % 3 == 0), f"user-{i}")
    return c.execute(f"SELECT * FROM {nsp}.ab_analyze(%s)", (exp,)).fetchall()


@pytest.fixture
def spare_database():
    """A database `grow` on the spare node (and on worker 1, to add it): a Citus of its own."""
    cluster("spare-start")
    ports = [SPARE_PORT, int(WORKER_PORTS[0])]
    for port in ports:
        with psycopg.connect(conninfo("postgres", port=port), autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS grow WITH (FORCE)")
            c.execute("CREATE DATABASE grow")
    yield lambda port: psycopg.conninfo.make_conninfo(conninfo("postgres", port=port), dbname="grow")
    for port in ports:
        with psycopg.connect(conninfo("postgres", port=port), autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS grow WITH (FORCE)")
    cluster("spare-destroy")


def test_citus_on_one_node_works_and_grows_to_a_worker(spare_database):
    coordinator, worker = {"'10.0.0.1', 5432": f"'127.0.0.1', {SPARE_PORT}"}, \
        {"'10.0.0.2', 5432": f"'127.0.0.1', {WORKER_PORTS[0]}"}
    with psycopg.connect(spare_database(int(WORKER_PORTS[0])), autocommit=True) as w:
        w.execute("CREATE EXTENSION citus")
    with psycopg.connect(spare_database(SPARE_PORT), autocommit=True) as c:
        run_runbook(c, "one-node", **coordinator)
        assert one(c, "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'ab_results'::regclass") == 1
        same_analysis(single_node_analysis(lifecycle), lifecycle(c))
        exp = one(c, "SELECT id FROM ab_experiments WHERE name = 'one-node'")
        before = analysis(c, exp)
        run_runbook(c, "grow", **coordinator, **worker)
        on_coordinator = one(c, "SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) "
                                "JOIN pg_dist_shard s USING (shardid) WHERE n.nodeport = %s "
                                "AND s.logicalrelid = 'ab_results'::regclass", SPARE_PORT)
        assert on_coordinator == 0
        same_analysis(before, analysis(c, exp))
        assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, 'user-1')", exp) is True
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []


def test_schema_based_sharding_leaves_the_extension_tables_to_ab_distribute(spare_database):
    with psycopg.connect(spare_database(SPARE_PORT), autocommit=True) as c:
        c.execute("CREATE EXTENSION citus")
        c.execute(f"SELECT citus_set_coordinator_host('127.0.0.1', {SPARE_PORT})")
        c.execute(f"SELECT citus_set_node_property('127.0.0.1', {SPARE_PORT}, 'shouldhaveshards', true)")
        c.execute("SET citus.enable_schema_based_sharding TO on")
        c.execute("CREATE SCHEMA crm")
        c.execute("CREATE EXTENSION ab_testing SCHEMA crm")
        assert one(c, "SELECT count(*) FROM citus_schemas WHERE schema_name = 'crm'::regnamespace") == 1
        assert one(c, "SELECT count(*) FROM pg_dist_partition") == 0  # the tables stay local
        expected = single_node_analysis(lifecycle)
        same_analysis(expected, lifecycle(c, "crm"))
        c.execute("SELECT crm.ab_distribute()")
        assert one(c, "SELECT partmethod FROM pg_dist_partition WHERE logicalrelid = 'crm.ab_results'::regclass") == "h"
        exp = one(c, "SELECT id FROM crm.ab_experiments WHERE name = 'one-node'")
        same_analysis(expected, c.execute("SELECT * FROM crm.ab_analyze(%s)", (exp,)).fetchall())
        assert one(c, "SELECT crm.ab_record_result(%s, 'conversion_rate', 1, 'user-1')", exp) is True
