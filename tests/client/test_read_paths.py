"""The read paths of an analysis: they run read-only (a read-only transaction, a hot standby),
a row of application data dated far ahead cannot make a timeline grow, every function checks
a value read from a source by the same rule, and an analysis never reports a figure that is
not a finite number."""

import math
import os
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import conninfo

VARIANTS = [{"name": "A", "is_control": True, "traffic_allocation": 50}, {"name": "B", "traffic_allocation": 50}]


def sqlstate_of(conn, sql, args=()):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql, args)
    return e.value.sqlstate, str(e.value).splitlines()[0]


def drop(conn, pattern):
    """Stops and deletes the experiments whose names are LIKE pattern."""
    conn.execute("SELECT ab_stop_experiment(id) FROM ab_experiments WHERE name LIKE %s AND status = 'running'", (pattern,))
    conn.execute("SELECT ab_delete_experiment(id) FROM ab_experiments WHERE name LIKE %s", (pattern,))


def create(conn, name, metrics, primary, **extra):
    drop(conn, name)
    conn.execute(
        "SELECT ab_create_experiment(%s)",
        (Jsonb({"name": name, "experiment_type": "workflow", "primary_metric": primary, "min_sample_size": 2,
                "salt": name, "metrics": metrics, "variants": VARIANTS, **extra}),),
    )
    conn.execute("SELECT ab_start_experiment(%s)", (name,))


def enroll(conn, name, users):
    return {u: conn.execute("SELECT ab_get_variant(%s, %s) ->> 'variant'", (name, u)).fetchone()[0] for u in users}


def source(table, value=True):
    s = {"relation": f"rp.{table}", "user_column": "user_id", "time_column": "at"}
    if value:
        s["value_column"] = "v"
    return s


@pytest.fixture
def app(conn):
    """An application schema with two source tables (values, covariates)."""
    conn.execute("DROP SCHEMA IF EXISTS rp CASCADE")
    conn.execute("CREATE SCHEMA rp")
    conn.execute("CREATE TABLE rp.orders (user_id text, at timestamptz, v float8)")
    conn.execute("CREATE TABLE rp.before (user_id text, at timestamptz, v float8)")
    yield conn
    drop(conn, "rp %")
    conn.execute("DROP SCHEMA IF EXISTS rp CASCADE")


def orders_experiment(conn, name, users=40, covariate=False, extra=None):
    """A sum of rp.orders.v per user (no window), each user with one order of 1 to 5 after
    enrollment and, with a covariate, one row in rp.before the week before."""
    metric = {"aggregation": "sum", "source": source("orders")}
    if covariate:
        metric["covariate"] = {"lookback": "30 days", "source": source("before")}
    create(conn, name, {"amount": metric, **(extra or {})}, "amount", breakdowns=["plan"])
    users = [f"{name}-u{i}" for i in range(users)]
    for i, u in enumerate(users):
        conn.execute("SELECT ab_get_variant(%s, %s, %s)", (name, u, Jsonb({"plan": "pro" if i % 2 else "free"})))
    conn.execute(
        "INSERT INTO rp.orders SELECT u, now() + interval '1 second', 1 + (hashtext(u) & 3) FROM unnest(%s::text[]) u",
        (users,),
    )
    conn.execute(
        "INSERT INTO rp.before SELECT u, now() - interval '7 days', 1 + (hashtext(u) & 7) FROM unnest(%s::text[]) u",
        (users,),
    )
    return users


# Every function that reads an analysis, by its SQL.
READS = {
    "ab_analyze": "SELECT count(*) FROM ab_analyze(%s)",
    "ab_summary": "SELECT ab_summary(%s)",
    "ab_bayes": "SELECT count(*) FROM ab_bayes(%s)",
    "ab_plot": "SELECT ab_plot(%s)",
    "ab_timeline": "SELECT count(*) FROM ab_timeline(%s)",
    "ab_plot_timeline": "SELECT ab_plot_timeline(%s)",
    "ab_breakdown": "SELECT count(*) FROM ab_breakdown(%s, 'plan')",
    "ab_interactions": "SELECT count(*) FROM ab_interactions(%s)",
    "ab_differential_impact": "SELECT count(*) FROM ab_differential_impact(%s)",
    "ab_funnel": "SELECT count(*) FROM ab_funnel(%s)",
    "ab_retention": "SELECT count(*) FROM ab_retention(%s)",
}


# --- Item: one rule for the values read from sources ----------------------------------------

BAD = [("1e16", "1e16"), ("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e200", "1e200")]


@pytest.mark.parametrize("value,shown", BAD)
@pytest.mark.parametrize("function", sorted(READS))
def test_a_source_value_out_of_range_is_the_same_error_everywhere(app, function, value, shown):
    conn = app
    name = "rp values"
    users = orders_experiment(conn, name, users=10)
    for sql in READS.values():
        conn.execute(sql, (name,))
    before = conn.execute("SELECT count(*) FROM ab_insights").fetchone()[0]
    conn.execute("UPDATE rp.orders SET v = %s::float8 WHERE user_id = %s", (value, users[3]))
    code, message = sqlstate_of(conn, READS[function], (name,))
    assert code == "22003", message
    assert message == (
        f'metric "amount": a user\'s value read from relation "rp.orders" is {shown}, '
        "outside the range of a metric value (-1e15 to 1e15)"
    )
    assert conn.execute("SELECT count(*) FROM ab_insights").fetchone()[0] == before


@pytest.mark.parametrize("value,shown", BAD)
@pytest.mark.parametrize("function", sorted(READS))
def test_a_covariate_source_value_out_of_range_is_refused_naming_metric_and_source(app, function, value, shown):
    conn = app
    name = "rp covariates"
    users = orders_experiment(conn, name, users=10, covariate=True)
    rows = conn.execute("SELECT cuped_variance_reduction FROM ab_analyze(%s) WHERE NOT is_control", (name,)).fetchall()
    assert rows[0][0] is not None, "CUPED ran on the good covariates"
    conn.execute("UPDATE rp.before SET v = %s::float8 WHERE user_id = %s", (value, users[5]))
    code, message = sqlstate_of(conn, READS[function], (name,))
    assert code == "22003", message
    assert message == (
        f'metric "amount": a user\'s covariate read from relation "rp.before" is {shown}, '
        "outside the range of a metric value (-1e15 to 1e15)"
    )


def test_a_registered_source_is_named_by_its_name_and_the_bound_holds(app):
    conn = app
    conn.execute("SELECT ab_drop_metric_source('rp orders') FROM ab_metric_sources WHERE name = 'rp orders'")
    conn.execute("SELECT ab_create_metric_source('rp orders', %s)", (Jsonb(source("orders")),))
    try:
        name = "rp named"
        create(conn, name, {"amount": {"aggregation": "sum", "source": "rp orders"}}, "amount")
        users = [f"{name}-u{i}" for i in range(6)]
        enroll(conn, name, users)
        conn.execute("INSERT INTO rp.orders SELECT u, now() + interval '1 second', 2 FROM unnest(%s::text[]) u", (users,))
        conn.execute("UPDATE rp.orders SET v = 1e15 WHERE user_id = %s", (users[0],))
        assert conn.execute("SELECT count(*) FROM ab_analyze(%s)", (name,)).fetchone()[0] == 2, "1e15 is in range"
        conn.execute("UPDATE rp.orders SET v = -1.5e15 WHERE user_id = %s", (users[0],))
        code, message = sqlstate_of(conn, "SELECT * FROM ab_timeline(%s)", (name,))
        assert (code, message) == (
            "22003",
            'metric "amount": a user\'s value read from source "rp orders" is -1.5e15, '
            "outside the range of a metric value (-1e15 to 1e15)",
        )
        drop(conn, name)
    finally:
        conn.execute("SELECT ab_drop_metric_source('rp orders') FROM ab_metric_sources WHERE name = 'rp orders'")


# --- Item: a row dated far ahead cannot make a timeline grow --------------------------------

def test_a_row_dated_9999_answers_a_timeline_in_bounded_time_and_memory(app):
    conn = app
    name = "rp far ahead"
    users = orders_experiment(conn, name, users=20)
    start = time.monotonic()
    normal = conn.execute("SELECT * FROM ab_timeline(%s) ORDER BY 1, 2, 3", (name,)).fetchall()
    normal_seconds = time.monotonic() - start
    assert {r[0] for r in normal} and len({r[0] for r in normal}) <= 2  # today (and maybe tomorrow at UTC midnight)

    conn.execute("INSERT INTO rp.orders VALUES (%s, '9999-12-31 12:00+00', 3)", (users[0],))
    conn.execute("SET statement_timeout = '60s'")
    start = time.monotonic()
    rows = conn.execute("SELECT * FROM ab_timeline(%s) ORDER BY 1, 2, 3", (name,)).fetchall()
    elapsed = time.monotonic() - start
    # Nothing beyond today: the row belongs to a day that has not happened.
    assert rows == normal
    assert elapsed < max(10.0, 20 * normal_seconds), elapsed
    days = conn.execute("SELECT count(DISTINCT day) FROM ab_timeline(%s)", (name,)).fetchone()[0]
    assert days <= 2
    svg = conn.execute("SELECT ab_plot_timeline(%s)", (name,)).fetchone()[0]
    assert len(svg) < 100_000
    # The backend's memory stays that of a small query (the unbounded timeline took gigabytes):
    # its memory contexts, and where the server runs on the same host as the test its peak resident size
    # (the statistics' memory is Rust's, outside the contexts).
    used = conn.execute("SELECT sum(total_bytes) FROM pg_backend_memory_contexts").fetchone()[0]
    assert used < 64 * 1024 * 1024, used
    status = f"/proc/{conn.execute('SELECT pg_backend_pid()').fetchone()[0]}/status"
    if os.path.exists(status):
        peak_kb = next(int(line.split()[1]) for line in open(status) if line.startswith("VmHWM:"))
        assert peak_kb < 512 * 1024, peak_kb
    # The analysis itself still counts the row (it has no days).
    conn.execute("SELECT count(*) FROM ab_analyze(%s)", (name,))


def test_a_stopped_experiment_timeline_ends_at_its_stop(app):
    conn = app
    name = "rp stopped"
    users = orders_experiment(conn, name, users=10)
    conn.execute("SELECT ab_stop_experiment(%s)", (name,))
    conn.execute("INSERT INTO rp.orders VALUES (%s, now() + interval '400 days', 3)", (users[0],))
    days = conn.execute("SELECT count(DISTINCT day) FROM ab_timeline(%s)", (name,)).fetchone()[0]
    assert days <= 2


def test_a_long_timeline_can_be_cancelled(app):
    """Each day's analysis checks for a cancel: a statement timeout stops a long timeline
    promptly (here 3600 days, enrollment dated back by hand); past ten years of days a
    timeline is refused outright (54000)."""
    conn = app
    name = "rp long"
    orders_experiment(conn, name, users=10)
    conn.execute(
        "UPDATE ab_assignments SET assigned_at = assigned_at - interval '300 years' "
        "WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = %s)",
        (name,),
    )
    code, message = sqlstate_of(conn, "SELECT count(*) FROM ab_timeline(%s)", (name,))
    assert code == "54000" and message.startswith("a timeline covers at most 3660 days"), message
    conn.execute(
        "UPDATE ab_assignments SET assigned_at = now() - interval '3600 days' "
        "WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = %s)",
        (name,),
    )
    conn.execute("SET statement_timeout = '1ms'")
    start = time.monotonic()
    code, _ = sqlstate_of(conn, "SELECT count(*) FROM ab_timeline(%s)", (name,))
    elapsed = time.monotonic() - start
    conn.execute("RESET statement_timeout")
    assert code == "57014"
    assert elapsed < 5.0, elapsed


# --- Smaller items: ratios, quantiles, bandits ----------------------------------------------

def ratio_experiment(conn, name, denominators):
    create(
        conn,
        name,
        {"revenue": {"aggregation": "sum"}, "visits": {"aggregation": "sum"},
         "per_visit": {"type": "ratio", "numerator": "revenue", "denominator": "visits"}},
        "per_visit",
    )
    users = [f"{name}-u{i}" for i in range(30)]
    enroll(conn, name, users)
    for i, u in enumerate(users):
        conn.execute("SELECT ab_record_result(%s, 'revenue', %s, %s)", (name, 1.0 + i % 4, u))
        conn.execute("SELECT ab_record_result(%s, 'visits', %s, %s)", (name, denominators(i), u))
    return users


def test_a_ratio_of_tiny_denominators_is_refused_not_infinite(app):
    conn = app
    name = "rp tiny"
    ratio_experiment(conn, name, lambda i: 1e-300 * (1 + i % 3))
    for function in ["ab_analyze", "ab_summary", "ab_bayes", "ab_plot"]:
        code, message = sqlstate_of(conn, READS[function], (name,))
        assert code == "22003", message
        assert message.startswith('metric "per_visit": the '), message
        assert message.endswith(
            'not a finite number: its denominator "visits" is too close to 0 for the ratio to be computed'
        ), message
    # The parts themselves are valid metrics (1e-300 is in range): their timeline answers.
    rows = conn.execute("SELECT variant, users, mean FROM ab_timeline(%s, 'visits')", (name,)).fetchall()
    assert rows and all(r[1] > 0 and r[2] is not None and math.isfinite(r[2]) for r in rows), rows
    # No stored row, no infinite figure anywhere.
    assert conn.execute(
        "SELECT count(*) FROM ab_insights i JOIN ab_experiments e ON e.id = i.experiment_id WHERE e.name = %s", (name,)
    ).fetchone()[0] == 0


def test_all_zero_denominators_say_so(app):
    conn = app
    name = "rp zero"
    ratio_experiment(conn, name, lambda i: 0.0)
    rows = conn.execute(
        "SELECT variant, users, mean, diff FROM ab_analyze(%s) WHERE metric_name = 'per_visit' ORDER BY variant", (name,)
    ).fetchall()
    assert [r[0] for r in rows] == ["A", "B"]
    assert all(r[1] > 0 and r[2] is None and r[3] is None for r in rows), rows
    summary = conn.execute("SELECT ab_summary(%s)", (name,)).fetchone()[0]
    assert 'the denominator "visits" of ratio metric "per_visit" is 0 for every user of A' in summary, summary
    assert "has 0" not in summary and "no data" not in summary


def test_a_quantile_of_equal_values_reports_the_value(app):
    conn = app
    name = "rp flat"
    create(
        conn,
        name,
        {"latency": {"aggregation": "mean"},
         "p90": {"type": "quantile", "of": "latency", "quantile": 0.9, "level": "event"},
         "median": {"type": "quantile", "of": "latency", "quantile": 0.5}},
        "median",
    )
    users = [f"{name}-u{i}" for i in range(60)]
    got = enroll(conn, name, users)
    for u in users:
        for _ in range(2):
            conn.execute("SELECT ab_record_result(%s, 'latency', %s, %s)", (name, 250.0, u))
    rows = conn.execute(
        "SELECT metric_name, variant, users, mean, diff, ci_lower, ci_upper, p_value FROM ab_analyze(%s) "
        "WHERE metric_type = 'quantile' ORDER BY 1, 2",
        (name,),
    ).fetchall()
    per = {v: sum(1 for x in got.values() if x == v) for v in ("A", "B")}
    assert rows == [
        ("median", "A", per["A"], 250.0, None, None, None, None),
        ("median", "B", per["B"], 250.0, 0.0, 0.0, 0.0, 1.0),
        ("p90", "A", per["A"], 250.0, None, None, None, None),
        ("p90", "B", per["B"], 250.0, 0.0, 0.0, 0.0, 1.0),
    ]
    summary = conn.execute("SELECT ab_summary(%s)", (name,)).fetchone()[0]
    assert "quantile 250.0000" in summary and "no data" not in summary, summary
    # Different constants in the two arms: the difference is exact, and certain.
    for u, v in got.items():
        if v == "B":
            conn.execute("SELECT ab_record_result(%s, 'latency', %s, %s)", (name, 250.0, u))
    row = conn.execute(
        "SELECT diff, p_value FROM ab_analyze(%s) WHERE metric_name = 'median' AND variant = 'B'", (name,)
    ).fetchone()
    assert row == (0.0, 1.0)


def test_one_broken_bandit_does_not_stop_the_others_reweighting(app):
    conn = app
    names = ["rp bandit 1", "rp bandit 2", "rp bandit 3"]
    for name in names:
        drop(conn, name)
        conn.execute(
            "SELECT ab_create_experiment(%s)",
            (Jsonb({"name": name, "experiment_type": "prompt", "primary_metric": "won", "salt": name,
                    "metrics": {"won": {"type": "binary"}}, "variants": VARIANTS,
                    "allocation": {"mode": "bandit", "update_every": "1 hour", "burn_in_users": 0}}),),
        )
        conn.execute("SELECT ab_start_experiment(%s)", (name,))
        for i, (u, v) in enumerate(enroll(conn, name, [f"{name}-u{i}" for i in range(40)]).items()):
            conn.execute("SELECT ab_record_result(%s, 'won', %s, %s)", (name, float(v == "B" or i % 3 == 0), u))
        # Due: the current period started over an hour ago.
        conn.execute(
            "UPDATE ab_allocations SET started_at = started_at - interval '2 hours' "
            "WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = %s)",
            (name,),
        )
    conn.execute(
        "DELETE FROM ab_allocations WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = %s)", (names[1],)
    )
    notices = []
    conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    rows = {r[0]: r for r in conn.execute("SELECT * FROM ab_reweight_due()").fetchall() if r[0] in names}
    assert set(rows) == set(names)
    assert rows[names[0]][2] is True and rows[names[2]][2] is True, rows
    broken = rows[names[1]]
    assert broken[1:4] == (None, False, None)
    assert broken[4].startswith("failed: ") and broken[4].endswith("(SQLSTATE 55000)"), broken
    # The server's log has it too (a scheduler keeps no rows).
    assert ("WARNING", f'ab_reweight_due: experiment "{names[1]}" {broken[4]}') in notices, notices
    # The others' new periods are stored; the broken one wrote nothing.
    periods = dict(conn.execute(
        "SELECT e.name, count(a.*) FROM ab_experiments e LEFT JOIN ab_allocations a ON a.experiment_id = e.id "
        "WHERE e.name = ANY(%s) GROUP BY e.name", (names,)).fetchall())
    assert periods == {names[0]: 2, names[1]: 0, names[2]: 2}
    drop(conn, "rp bandit %")


# --- Item: every read works read-only, on a hot standby too -----------------------------------

def bindir():
    found = shutil.which("pg_config")
    if found:
        return subprocess.run([found, "--bindir"], check=True, capture_output=True, text=True).stdout.strip()
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    version = os.environ.get("AB_PG_VERSION", "15")
    return subprocess.run([os.path.join(root, "scripts", "pg-versions.sh"), "bin", version],
                          check=True, capture_output=True, text=True).stdout.strip()


def as_postgres(args, **kw):
    """PostgreSQL's programs refuse to run as root: run them as postgres."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def standby(dsn):
    """A streaming replica of the cluster the tests use (pg_basebackup -R), hot standby on (with
    feedback, and replay waiting for reads), listening only on a socket in its own directory; destroyed afterwards."""
    bin_dir = bindir()
    home = tempfile.mkdtemp(prefix="ab_standby_")
    os.chmod(home, 0o755)
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    data = os.path.join(home, "data")
    port = free_port()
    host = os.environ.get("PGHOST", "/tmp/ab_testing_pg")
    primary_port = os.environ.get("PGPORT", "5499")
    started = False
    try:
        as_postgres([os.path.join(bin_dir, "pg_basebackup"), "-h", host, "-p", primary_port, "-U",
                     os.environ.get("PGUSER", "postgres"), "-D", data, "-R", "-X", "stream", "-c", "fast"])
        as_postgres(["sh", "-c", f"cat >> {data}/postgresql.conf <<'CONF'\n"
                     f"port = {port}\nunix_socket_directories = '{home}'\nlisten_addresses = ''\n"
                     # Reads are never canceled by a recovery conflict (a row the primary's vacuum
                     # removed, a page pinned while replay cleans it: PostgreSQL's own behaviour
                     # on a lagging standby, not what these tests look at): replay waits instead.
                     "hot_standby = on\nhot_standby_feedback = on\nmax_standby_streaming_delay = -1\n"
                     "shared_buffers = 32MB\nCONF\n"])
        as_postgres([os.path.join(bin_dir, "pg_ctl"), "-D", data, "-l", os.path.join(home, "log"), "-w", "-t", "120", "start"])
        started = True
        dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        yield psycopg.conninfo.make_conninfo(host=home, port=port, user=os.environ.get("PGUSER", "postgres"),
                                             dbname=dbname)
    finally:
        if started:
            as_postgres([os.path.join(bin_dir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"])
        shutil.rmtree(home, ignore_errors=True)


def caught_up(primary, standby_conn, timeout=60):
    lsn = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if standby_conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
            return
        time.sleep(0.1)
    raise AssertionError("the standby did not catch up")


def replica_data(conn):
    """A fixed experiment with a source metric and CUPED, a ratio, a quantile, a funnel, a
    retention metric and a breakdown, a bandit, and a layer: everything the read functions and
    views show."""
    name = "rp replica"
    users = orders_experiment(conn, name, users=40, covariate=True, extra={
        "clicks": {"aggregation": "sum"},
        "amount_per_click": {"type": "ratio", "numerator": "amount", "denominator": "clicks"},
        "median_clicks": {"type": "quantile", "of": "clicks", "quantile": 0.5},
        "visited": {"type": "binary"},
        "visit_then_click": {"funnel": {"steps": ["visited", "clicks"], "window": "1 day"}},
        "clicked_day_0": {"retention": {"metric": "clicks", "days": [0, 1]}},
    })
    for i, u in enumerate(users):
        if i % 3:
            conn.execute("SELECT ab_record_result(%s, 'visited', 1, %s)", (name, u))
        conn.execute("SELECT ab_record_result(%s, 'clicks', %s, %s)", (name, float(i % 5), u))
    drop(conn, "rp replica bandit")
    conn.execute(
        "SELECT ab_create_experiment(%s)",
        (Jsonb({"name": "rp replica bandit", "experiment_type": "prompt", "primary_metric": "won", "salt": "rpb",
                "metrics": {"won": {"type": "binary"}}, "variants": VARIANTS,
                "allocation": {"mode": "bandit", "update_every": "1 hour", "burn_in_users": 0}}),),
    )
    conn.execute("SELECT ab_start_experiment('rp replica bandit')")
    for i, (u, v) in enumerate(enroll(conn, "rp replica bandit", [f"rpb{i}" for i in range(30)]).items()):
        conn.execute("SELECT ab_record_result('rp replica bandit', 'won', %s, %s)", (float(v == "B" or i % 2 == 0), u))
    conn.execute("SELECT ab_reweight('rp replica bandit', true)")
    return [name, "rp replica bandit"]


def read_everything(conn, names):
    """What every read function and view returns (the gateway's pages call these)."""
    out = {}
    for name in names:
        id_ = conn.execute("SELECT id FROM ab_experiments WHERE name = %s", (name,)).fetchone()[0]
        for key, sql in READS.items():
            if key in ("ab_breakdown", "ab_interactions", "ab_differential_impact") and "bandit" in name:
                continue  # a bandit has no breakdowns nor interactions
            full = sql.replace("SELECT count(*) FROM", "SELECT * FROM")
            out[(name, key)] = conn.execute(full + " ORDER BY 1" if "*" in full else full, (name,)).fetchall()
            out[(name, key, "by id")] = conn.execute(
                (full + " ORDER BY 1" if "*" in full else full).replace("%s", "%s::bigint"), (id_,)
            ).fetchall()
        out[(name, "ab_get_experiment")] = conn.execute("SELECT ab_get_experiment(%s)", (name,)).fetchall()
        out[(name, "health")] = conn.execute("SELECT to_jsonb(h) - 'days_running' FROM ab_experiment_health h WHERE h.id = %s", (id_,)).fetchall()
    views = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_depend d ON d.objid = c.oid AND d.deptype = 'e' "
        "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'ab_testing' WHERE c.relkind = 'v' ORDER BY 1"
    ).fetchall()
    assert len(views) >= 4
    for (view,) in views:
        # Each row as it stands, except how long the experiment has run (now() differs).
        rows = conn.execute(f"SELECT to_jsonb(v) - 'days_running' FROM {view} v").fetchall()
        out[view] = sorted(map(repr, rows))
    return out


# The gateway's results list and experiment page, as gateway/src/main.rs queries them (the
# page in one REPEATABLE READ transaction; the list without the summaries' interactions).
LIST_PAGE = """SELECT coalesce(jsonb_agg(jsonb_build_object(
    'id', o.id, 'name', o.name, 'status', o.status, 'users', o.users_assigned, 'winner', o.winner_variant,
    'progress', h.sample_progress, 'srm_p', h.srm_p_value,
    'layer', (SELECT l.name FROM ab_layer_experiments m JOIN ab_layers l ON l.id = m.layer_id WHERE m.experiment_id = o.id),
    'recommendation', CASE WHEN o.status = 'running' THEN substring(ab_summary(o.id) FROM 'Recommendation: ([^\n]*)') END)
    ORDER BY o.id DESC), '[]')
  FROM ab_experiment_overview o LEFT JOIN ab_experiment_health h ON h.id = o.id"""
PAGE = [
    "SELECT ab_get_experiment(%(id)s)",
    "SELECT to_jsonb(h) - 'days_running' FROM ab_experiment_health h WHERE h.id = %(id)s",
    "SELECT coalesce(jsonb_agg(to_jsonb(a)), '[]') FROM ab_analyze(%(id)s::bigint) a",
    "SELECT ab_summary(%(id)s::bigint)",
    "SELECT ab_plot(%(id)s::bigint)",
]


def gateway_pages(dsn, names):
    out = {}
    with psycopg.connect(dsn) as c:
        c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        c.execute("SET LOCAL ab_testing.summary_interactions = off")
        out["list"] = c.execute(LIST_PAGE).fetchall()
        c.rollback()
        for name in names:
            id_ = c.execute("SELECT id FROM ab_experiments WHERE name = %s", (name,)).fetchone()[0]
            out[name] = [c.execute(sql, {"id": id_}).fetchall() for sql in PAGE]
            c.rollback()
    return out


def test_every_read_runs_on_a_hot_standby_and_equals_the_primary(app, dsn, standby):
    conn = app
    names = replica_data(conn)
    primary = read_everything(conn, names)
    stored = conn.execute("SELECT count(*), max(computed_at) FROM ab_insights").fetchone()
    assert stored[0] > 0, "ab_analyze stores where the transaction can write"
    with psycopg.connect(standby, autocommit=True) as replica:
        caught_up(conn, replica)
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        on_replica = read_everything(replica, names)
        assert replica.execute("SELECT count(*), max(computed_at) FROM ab_insights").fetchone() == stored
        # The same rows, the stored history aside (the primary's ab_analyze calls above added to it).
        for key in primary:
            if key in ("ab_latest_insights",):
                continue
            assert on_replica[key] == primary[key], key
        # The gateway's pages: the same on the replica.
        assert gateway_pages(standby, names) == gateway_pages(dsn, names)
        # Errors stay errors (not 25006): a value out of range, on the replica too.
        conn.execute("UPDATE rp.orders SET v = 'NaN' WHERE user_id = (SELECT min(user_id) FROM rp.orders)")
        caught_up(conn, replica)
        code, message = sqlstate_of(replica, "SELECT * FROM ab_analyze('rp replica')")
        assert code == "22003" and "is NaN" in message, message
        # A write is still refused there, with PostgreSQL's own error, and the session goes on.
        code, message = sqlstate_of(replica, "SELECT ab_reweight('rp replica bandit', true)")
        assert (code, message) in [
            ("25006", "cannot execute SELECT FOR UPDATE in a read-only transaction"),
            ("XX000", "cannot assign TransactionIds during recovery"),
        ], (code, message)
        assert replica.execute("SELECT ab_get_experiment('rp replica') ->> 'status'").fetchone() == ("running",)


def same_answer(a, b):
    """Equal, floats to 1e-12 relative: sums over a join may run in another order when the
    planner's statistics changed between the two reads."""
    from test_operations import same_rows
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(r, tuple) for r in a + b):
        return same_rows(a, b)
    return a == b


@pytest.mark.parametrize("how", ["SET TRANSACTION READ ONLY", "SET default_transaction_read_only = on"])
def test_every_read_runs_in_a_read_only_transaction(app, how):
    conn = app
    names = replica_data(conn)
    expected = read_everything(conn, names)
    stored = conn.execute("SELECT count(*) FROM ab_insights").fetchone()[0]
    # One read-only transaction, or (the session's default) each statement in its own.
    conn.autocommit = not how.startswith("SET TRANSACTION")
    try:
        conn.execute(how)
        got = read_everything(conn, names)
        assert conn.execute("SHOW transaction_read_only").fetchone()[0] == "on"
        assert conn.execute("SELECT count(*) FROM ab_insights").fetchone()[0] == stored
        code, _ = sqlstate_of(conn, "SELECT ab_reweight('rp replica bandit', true)")
        assert code == "25006"
    finally:
        conn.rollback()
        conn.autocommit = True
        conn.execute("RESET default_transaction_read_only")
    for key in expected:
        if key != "ab_latest_insights":
            assert same_answer(got[key], expected[key]), key
    # Where the transaction can write, ab_analyze stores its rows.
    conn.execute("SELECT count(*) FROM ab_analyze('rp replica')")
    assert conn.execute("SELECT count(*) FROM ab_insights").fetchone()[0] > stored


@pytest.mark.parametrize("table,period", [("ab_allocations", 2147483647), ("ab_assignments", 1000000)])
def test_a_period_number_written_by_hand_cannot_size_an_analysis(app, table, period):
    conn = app
    name = "rp periods"
    drop(conn, name)
    conn.execute(
        "SELECT ab_create_experiment(%s)",
        (Jsonb({"name": name, "experiment_type": "prompt", "primary_metric": "won", "salt": name,
                "metrics": {"won": {"type": "binary"}}, "variants": VARIANTS,
                "allocation": {"mode": "bandit", "update_every": "1 hour", "burn_in_users": 0}}),),
    )
    conn.execute("SELECT ab_start_experiment(%s)", (name,))
    for u, v in enroll(conn, name, [f"rpp{i}" for i in range(20)]).items():
        conn.execute("SELECT ab_record_result(%s, 'won', %s, %s)", (name, float(v == "B"), u))
    id_ = conn.execute("SELECT id FROM ab_experiments WHERE name = %s", (name,)).fetchone()[0]
    conn.execute(f"UPDATE {table} SET period = %s WHERE experiment_id = %s AND ctid = "
                 f"(SELECT min(ctid) FROM {table} WHERE experiment_id = %s)", (period, id_, id_))
    message = (f"experiment {id_} has a weight period numbered {period}, outside 0 to 99999")
    for function in ["ab_analyze", "ab_summary", "ab_timeline"]:
        start = time.monotonic()
        assert sqlstate_of(conn, READS[function], (name,)) == ("54000", message)
        assert time.monotonic() - start < 5
    assert sqlstate_of(conn, "SELECT ab_period_srm_p_value(%s)", (id_,)) == ("54000", message)
    drop(conn, name)


@pytest.mark.parametrize("value", ["1e16", "NaN", "Infinity", "-Infinity", "1e200"])
def test_a_recorded_covariate_keeps_the_same_rule(app, value):
    """Recorded covariates are held to the rule when recorded (and by the table's check, for
    rows written by hand), so the analysis never reads one out of range."""
    conn = app
    name = "rp recorded covariates"
    create(conn, name, {"score": {}}, "score")
    enroll(conn, name, ["rc1"])
    code, message = sqlstate_of(conn, "SELECT ab_record_covariate(%s, 'score', 'rc1', %s::float8)", (name, value))
    assert code == "22023" and "must be a finite number between -1e15 and 1e15" in message, message
    code, _ = sqlstate_of(
        conn,
        "INSERT INTO ab_covariates (experiment_id, user_id, metric_name, value) "
        "SELECT id, 'rc1', 'score', %s::float8 FROM ab_experiments WHERE name = %s",
        (value, name),
    )
    assert code == "23514"
    assert conn.execute("SELECT count(*) FROM ab_covariates c JOIN ab_experiments e ON e.id = c.experiment_id "
                        "WHERE e.name = %s", (name,)).fetchone()[0] == 0
