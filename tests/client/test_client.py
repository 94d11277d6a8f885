"""The extension through a real driver (psycopg) and several sessions at once."""
import random
import threading

import psycopg
import pytest
import xxhash
from psycopg.types.json import Jsonb

ORIGINAL_BODY = {
    "name": "Lead Qualification Prompt Test",
    "description": "Testing new prompt with examples",
    "experiment_type": "prompt",
    "primary_metric": "resolution_rate",
    "variants": [
        {"name": "Control", "is_control": True, "traffic_allocation": 50.0,
         "config": {"system_prompt": "Current prompt..."}},
        {"name": "Treatment", "is_control": False, "traffic_allocation": 50.0,
         "config": {"system_prompt": "New prompt with examples..."}},
    ],
    "min_sample_size": 100,
}


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


def two_arms(name, **extra):
    return {"name": name, "experiment_type": "feature", "primary_metric": "conversion_rate",
            "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50},
                         {"name": "b", "traffic_allocation": 50}], **extra}


@pytest.mark.citus
def test_whole_flow_from_python(conn):
    # A fixed salt: the same users in each arm on every run, so the p-value below is fixed too.
    exp_id = one(conn, "SELECT ab_create_experiment(%s)", Jsonb({**ORIGINAL_BODY, "salt": "whole flow"}))
    name = ORIGINAL_BODY["name"]
    one(conn, "SELECT ab_start_experiment(%s)", name)
    rng = random.Random(7)
    for i in range(600):
        user = f"borrower-{i}"
        v = one(conn, "SELECT ab_get_variant(%s, %s, %s, %s)", name, user, Jsonb({"loan_type": "fha"}), f"s-{i}")
        assert v["variant"] in ("Control", "Treatment")
        assert v["config"]["system_prompt"].endswith("...")
        rate = 0.55 if v["variant"] == "Control" else 0.72
        for _ in range(2):
            assert one(conn, "SELECT ab_record_result(%s, 'resolution_rate', %s, %s)", name,
                       float(rng.random() < rate), user) is True
    rows = conn.execute("SELECT variant, users, p_value, significant FROM ab_analyze(%s)", (exp_id,)).fetchall()
    assert [r[0] for r in rows] == ["Control", "Treatment"]
    assert sum(r[1] for r in rows) == 600
    assert rows[1][3] is True and rows[1][2] < 1e-3
    assert "Recommendation: ship \"Treatment\"" in one(conn, "SELECT ab_summary(%s)", name)
    out = one(conn, "SELECT ab_stop_experiment(%s, declare_winner => true)", name)
    assert out["winner"] == "Treatment" and out["status"] == "stopped"
    info = one(conn, "SELECT ab_get_experiment(%s)", exp_id)
    assert info["status"] == "stopped" and info["winner"] == "Treatment"
    assert info["users_assigned"] == 600 and info["results_recorded"] == 1200
    one(conn, "SELECT ab_delete_experiment(%s)", exp_id)
    assert one(conn, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp_id) == 0


@pytest.mark.citus
def test_errors_reach_the_client_with_their_sqlstate(conn):
    with pytest.raises(psycopg.errors.UndefinedObject, match='experiment "nope" does not exist'):
        conn.execute("SELECT ab_get_variant('nope', 'u1')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="traffic allocations sum to 120"):
        body = two_arms("bad")
        body["variants"][1]["traffic_allocation"] = 70
        conn.execute("SELECT ab_create_experiment(%s)", (Jsonb(body),))
    assert one(conn, "SELECT count(*) FROM ab_experiments WHERE name = 'bad'") == 0


@pytest.mark.citus
def test_assignment_is_reproducible_outside_the_database(conn):
    """The guide's algorithm (docs/guide.md), reimplemented here, agrees with every stored assignment."""
    body = two_arms("reproducible")
    body["variants"] = [{"name": "a", "is_control": True, "traffic_allocation": 33.33},
                        {"name": "b", "traffic_allocation": 33.33},
                        {"name": "c", "traffic_allocation": 20}]
    exp_id = one(conn, "SELECT ab_create_experiment(%s)", Jsonb(body))
    one(conn, "SELECT ab_start_experiment(%s)", exp_id)
    salt = one(conn, "SELECT ab_get_experiment(%s) ->> 'salt'", exp_id)
    bounds = [("a", 3333), ("b", 6666), ("c", 8666)]
    for i in range(2000):
        user = f"user-{i}"
        point = (xxhash.xxh3_64_intdigest(salt.encode() + b"\x00" + user.encode()) * 10000) >> 64
        expected = next((n for n, end in bounds if point < end), None)
        got = one(conn, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp_id, user)
        assert got == expected, (user, point)


@pytest.mark.citus
def test_racing_sessions_agree_on_new_users(dsn, conn):
    exp_id = one(conn, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("race")))
    one(conn, "SELECT ab_start_experiment(%s)", exp_id)
    users = [f"racer-{i}" for i in range(300)]
    seen = {}
    errors = []
    barrier = threading.Barrier(6)

    def worker(k):
        order = users[:]
        random.Random(k).shuffle(order)
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                barrier.wait()
                for u in order:
                    v = c.execute("SELECT ab_get_variant(%s, %s) ->> 'variant'", (exp_id, u)).fetchone()[0]
                    seen.setdefault(u, set()).add(v)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    assert all(len(v) == 1 and None not in v for v in seen.values())
    assert one(conn, "SELECT count(*) FROM ab_assignments WHERE experiment_id = %s", exp_id) == 300


@pytest.mark.citus
def test_other_sessions_see_changes_at_once(dsn, conn):
    """A session's cache of experiment definitions follows another session's changes."""
    one(conn, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("watched")))
    one(conn, "SELECT ab_start_experiment('watched')")
    with psycopg.connect(dsn, autocommit=True) as app:
        assert one(app, "SELECT ab_get_variant('watched', 'u1')") is not None  # cached now
        conn.execute("UPDATE ab_variants SET traffic_allocation = CASE name WHEN 'a' THEN 0 ELSE 100 END "
                      "WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'watched')")
        assert {one(app, "SELECT ab_get_variant('watched', %s) ->> 'variant'", f"n{i}") for i in range(30)} == {"b"}
        one(conn, "SELECT ab_stop_experiment('watched')")
        assert one(app, "SELECT ab_get_variant('watched', 'u1')") is None
        assert one(app, "SELECT ab_record_result('watched', 'conversion_rate', 1, 'u1')") is False
        one(conn, "SELECT ab_delete_experiment('watched')")
        with pytest.raises(psycopg.errors.UndefinedObject):
            app.execute("SELECT ab_get_variant('watched', 'u1')")
        one(conn, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("watched")))
        assert one(app, "SELECT ab_get_variant('watched', 'u1')") is None  # the new one is a draft
        one(conn, "SELECT ab_start_experiment('watched')")
        assert one(app, "SELECT ab_get_variant('watched', 'u1')") is not None


@pytest.mark.citus
def test_a_rolled_back_change_leaves_the_cache_right(dsn, conn):
    one(conn, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("rollback")))
    one(conn, "SELECT ab_start_experiment('rollback')")
    with psycopg.connect(dsn) as tx:
        one(tx, "SELECT ab_stop_experiment('rollback')")
        assert one(tx, "SELECT ab_get_variant('rollback', 'u1')") is None
        tx.rollback()
        assert one(tx, "SELECT ab_get_variant('rollback', 'u1')") is not None
    assert one(conn, "SELECT status FROM ab_experiments WHERE name = 'rollback'") == "running"


@pytest.mark.citus
def test_the_plot_is_well_formed_xml_whatever_the_names(conn):
    """Parsed by Python's XML parser (the server's own check needs a build with libxml)."""
    import xml.etree.ElementTree as ET
    exp = one(conn, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("plotted <&> \"names\"")))
    one(conn, "SELECT ab_start_experiment(%s)", exp)
    for i in range(40):
        user = f"p-{i}"
        one(conn, "SELECT ab_get_variant(%s, %s)", exp, user)
        one(conn, "SELECT ab_record_result(%s, 'conversion_rate', %s, %s)", exp, float(i % 3 == 0), user)
        one(conn, "SELECT ab_record_result(%s, %s, %s, %s)", exp, "a<b & c>\"d\"", float(i % 5), user)
    # Written by hand (or by an older version): a name with control characters.
    conn.execute("INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) "
                 "SELECT experiment_id, variant_id, user_id, E'bell\\x01\\x08 ]]>', 1 FROM ab_assignments "
                 "WHERE experiment_id = %s", (exp,))
    one(conn, "SELECT ab_stop_experiment(%s)", exp)  # under Citus, rebuilt only when stopped
    one(conn, "SELECT ab_rebuild_user_metrics(%s)", exp)
    svg = one(conn, "SELECT ab_plot(%s)", exp)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    text = "".join(root.itertext())
    assert "a<b & c>\"d\"" in text and "conversion_rate" in text


def test_readme_named_arguments_for_covariates(conn):
    """The reference's named-argument call of ab_record_covariate."""
    exp = one(conn, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("named arguments")))
    conn.execute("SELECT ab_record_covariate(%s, 'spend', user_id => 'u1', value => 12.5)", (exp,))
    assert conn.execute("SELECT user_id, value FROM ab_covariates WHERE experiment_id = %s", (exp,)).fetchall() == \
        [("u1", 12.5)]
