"""The examples in examples/python run against the test cluster and do what they say."""
import os
import re
import subprocess
import sys

import psycopg
import pytest
from psycopg.types.json import Jsonb

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python"))

import ai_service  # noqa: E402
import demo  # noqa: E402
import sqlalchemy_snippet  # noqa: E402
from conftest import conninfo  # noqa: E402
from test_operations import drop_db, fresh_db  # noqa: E402


def test_demo_runs_every_experiment_to_its_verdict():
    dsn = fresh_db("ab_example_demo")
    lines = []
    outcomes = demo.run(dsn, users=1200, out=lines.append)
    assert outcomes["Lead Qualification Prompt Test"]["winner"] == "Treatment"
    assert outcomes["Model Comparison"]["winner"] is None
    assert outcomes["layer"]["in_two"] == 0
    assert 60 < outcomes["layer"]["held_out"] < 180
    with psycopg.connect(dsn) as c:
        # Users held out of the layer are in none of its experiments.
        assert c.execute("""SELECT count(*) FROM ab_assignments a JOIN ab_experiments e ON e.id = a.experiment_id
                            WHERE e.name IN ('Confidence threshold', 'Escalation wording')
                            AND ab_layer_group('agent settings', a.user_id) = 'holdout'""").fetchone()[0] == 0
    assert "Recommendation" in "\n".join(lines)
    # The metric read from the CRM's loan_applications table: enrolled users only, by the window.
    funded = [line for line in lines if line.strip().startswith("loan_funded_14d")]
    assert len(funded) == 1 and "significant=True" in funded[0], lines
    with psycopg.connect(dsn) as c:
        mean = c.execute("SELECT mean FROM ab_analyze('Lead Qualification Prompt Test') "
                         "WHERE metric_name = 'loan_funded_14d' AND variant = 'Treatment'").fetchone()[0]
        by_hand = c.execute(
            "SELECT avg((l.borrower_id IS NOT NULL)::int) FROM ab_assignments a "
            "JOIN ab_variants v ON v.id = a.variant_id AND v.name = 'Treatment' "
            "JOIN ab_experiments e ON e.id = a.experiment_id AND e.name = 'Lead Qualification Prompt Test' "
            "LEFT JOIN LATERAL (SELECT borrower_id FROM loan_applications l WHERE l.borrower_id = a.user_id "
            "AND l.status = 'funded' AND l.funded_at >= a.assigned_at "
            "AND l.funded_at < a.assigned_at + interval '14 days' LIMIT 1) l ON true").fetchone()[0]
        assert float(by_hand) == pytest.approx(mean, rel=1e-12)
    # The breakdown by the loan type stored at enrollment: one row per segment and treatment.
    assert "  by loan type (p-values adjusted across the segments):" in lines
    assert sorted(line.split()[0] for line in lines if line.startswith("    ") and "n=" in line) == ["conventional", "fha", "va"]
    with psycopg.connect(dsn) as c:
        # The model comparison's ratio metric and capped metric.
        ratio = c.execute("""SELECT metric_type, diff, significant FROM ab_analyze('Model Comparison')
                             WHERE metric_name = 'tokens_per_conversation' AND variant = 'provider-b'""").fetchone()
        assert ratio[0] == "ratio" and ratio[1] < 0 and ratio[2], ratio
        summary = c.execute("SELECT ab_summary('Model Comparison')").fetchone()[0]
        assert "token_usage (per-user sum, capped at " in summary and "(the 99th percentile)" in summary, summary
    # A second run would delete the first one's experiments: only with replace=True.
    with pytest.raises(SystemExit, match="already has Agent settings holdout, Confidence threshold"):
        demo.run(dsn, users=10, out=lines.append)
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM ab_experiments WHERE winner_variant = 'Treatment'").fetchone()[0] >= 1
    assert demo.run(dsn, users=300, out=lines.append, replace=True)["layer"]["in_two"] == 0
    drop_db("ab_example_demo")


def test_the_demo_script_of_scripts_demo_sh_runs_to_a_winner():
    """demo/demo.sql, as scripts/demo.sh runs it (psql, ON_ERROR_STOP), in a fresh database."""
    fresh_db("ab_example_demo_sql")
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    out = subprocess.run(["psql", "-X", "-q", "-h", os.environ.get("PGHOST", "/tmp/ab_testing_pg"),
                          "-p", os.environ.get("PGPORT", "5499"), "-U", "postgres", "-d", "ab_example_demo_sql",
                          "-f", os.path.join(root, "demo", "demo.sql")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "Declared winner: Treatment" in out.stdout
    assert "Recommendation: ship \"Treatment\"" in out.stdout
    # The ratio metric and the capped metric, in the summary.
    assert "tokens_per_conversation (ratio: token_usage / conversations, delta method, lower is better)" in out.stdout
    assert "token_usage (per-user sum, capped at 2964.09 (the 99th percentile), lower is better)" in out.stdout
    # The guardrail: slower, but within its margin, so the winner may ship.
    assert "guardrail (at most 150 higher than the control): passed" in out.stdout
    # The metric read from the CRM's loan_applications table.
    assert "loan_funded_14d (binary: share of users with a matching row, read from public.loan_applications " \
           "within 14 days of enrollment, higher is better)" in out.stdout, out.stdout
    assert re.search(r"^ loan_funded_14d +\| Treatment ", out.stdout, re.M), out.stdout
    # The breakdown by loan type: the three segments' rows.
    assert "== 5b. The primary metric by loan type" in out.stdout
    for loan_type in ("conventional", "fha", "va"):
        assert re.search(rf"^ {loan_type} +\| Treatment ", out.stdout, re.M), out.stdout
    drop_db("ab_example_demo_sql")


@pytest.fixture
def service_db():
    dsn = fresh_db("ab_example_service")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE conversations (id bigserial PRIMARY KEY, user_id text, message text, answer text)")
        c.execute("SELECT ab_create_experiment(%s)", (Jsonb({
            "name": ai_service.EXPERIMENT, "experiment_type": "prompt", "primary_metric": "resolution_rate",
            "variants": [{"name": "Control", "is_control": True, "traffic_allocation": 40,
                          "config": {"system_prompt": "Current prompt..."}},
                         {"name": "Treatment", "traffic_allocation": 40,
                          "config": {"system_prompt": "New prompt with examples..."}}]}),))
        c.execute("SELECT ab_start_experiment(%s)", (ai_service.EXPERIMENT,))
    yield dsn
    drop_db("ab_example_service")


def test_ai_service_records_metrics_with_its_own_writes(service_db):
    with psycopg.connect(service_db) as conn:
        service = ai_service.ConversationService(conn)
        prompts = {service.system_prompt(f"borrower-{i}") for i in range(200)}
        conn.commit()
        # 20% of the traffic is not enrolled and gets the default prompt.
        assert prompts == {"Current prompt...", "New prompt with examples...", ai_service.DEFAULT_PROMPT}
        for i in range(50):
            service.handle(f"borrower-{i}", f"question {i}")
        recorded = conn.execute("SELECT count(*) FROM ab_results").fetchone()[0]
        enrolled = conn.execute("SELECT count(*) FROM ab_assignments WHERE user_id IN "
                                "(SELECT 'borrower-' || g FROM generate_series(0, 49) g)").fetchone()[0]
        assert recorded == 3 * enrolled
        assert conn.execute("SELECT count(*) FROM conversations").fetchone()[0] == 50
        with pytest.raises(RuntimeError):
            service.handle("borrower-1", "this one fails", fail_after_model=True)
        assert conn.execute("SELECT count(*) FROM ab_results").fetchone()[0] == recorded
        assert conn.execute("SELECT count(*) FROM conversations").fetchone()[0] == 50


def test_sqlalchemy_snippet(service_db):
    engine = sqlalchemy_snippet.make_engine(os.environ.get("PGHOST", "/tmp/ab_testing_pg"),
                                            os.environ.get("PGPORT", "5499"), "ab_example_service")
    variant = sqlalchemy_snippet.variant_for(engine, ai_service.EXPERIMENT, "orm-user-3")
    if variant is not None:
        assert variant["variant"] in ("Control", "Treatment")
        assert sqlalchemy_snippet.record(engine, ai_service.EXPERIMENT, "resolution_rate", 1.0, "orm-user-3") is True
    assert sqlalchemy_snippet.record(engine, ai_service.EXPERIMENT, "resolution_rate", 1.0, "never-seen") is False
    engine.dispose()
