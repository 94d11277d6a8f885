"""The original module's demonstration, through the SQL functions with psycopg: sample
experiments are created, simulated users go through them, and each one ends with the winner
the data supports (or the reason there is none). One metric is read from the CRM's own
loan_applications table (created here if missing), which the simulation writes as an
application would.

    createdb -h /tmp/ab_testing_pg -p 5499 -U postgres ab_demo_py
    psql -h /tmp/ab_testing_pg -p 5499 -U postgres ab_demo_py -c "CREATE EXTENSION ab_testing"
    python examples/python/demo.py "host=/tmp/ab_testing_pg port=5499 user=postgres dbname=ab_demo_py"

It refuses a database that already has experiments (or a layer) of the names it uses, such as
the database of scripts/demo.sh; --replace deletes and recreates them.
"""
import random
import sys

import psycopg
from psycopg.types.json import Jsonb

EXPERIMENTS = [
    # (definition, per-variant behaviour: variant -> (resolution chance, response time ms))
    ({"name": "Lead Qualification Prompt Test", "description": "Testing new prompt with examples",
      "experiment_type": "prompt", "primary_metric": "resolution_rate",
      "variants": [
          {"name": "Control", "is_control": True, "traffic_allocation": 50.0, "config": {"system_prompt": "Current prompt..."}},
          {"name": "Treatment", "is_control": False, "traffic_allocation": 50.0,
           "config": {"system_prompt": "New prompt with examples..."}}],
      "min_sample_size": 100, "salt": "demo-prompt",
      "metrics": {"resolution_rate": {"type": "binary", "mde": 0.05}, "response_time": {"direction": "lower"},
                  # Read from the CRM's own loan_applications table, nothing recorded for it: a
                  # borrower counts when a loan of theirs is funded within 14 days of enrollment.
                  "loan_funded_14d": {"type": "binary", "window": "14 days",
                                      "source": {"relation": "public.loan_applications", "user_column": "borrower_id",
                                                 "time_column": "funded_at", "filter": {"status": "funded"}}}},
      # Each borrower's loan type is stored at enrollment, to break the analysis down by.
      "breakdowns": ["loan_type"]},
     {"Control": (0.60, 1200), "Treatment": (0.70, 1250)}),
    ({"name": "Model Comparison", "description": "One provider against another", "experiment_type": "model",
      "primary_metric": "satisfaction_score", "min_sample_size": 100, "salt": "demo-model",
      "variants": [
          {"name": "provider-a", "is_control": True, "traffic_allocation": 70, "config": {"model": "provider-a-large"}},
          {"name": "provider-b", "traffic_allocation": 30, "config": {"model": "provider-b-large"}}],
      # Tokens per conversation is a ratio of two recorded metrics; token usage is capped at
      # its 99th percentile so that the rare borrower who pastes a whole loan file cannot decide it.
      "metrics": {"satisfaction_score": {}, "response_time": {"direction": "lower"},
                  "conversations": {"aggregation": "count"},
                  "token_usage": {"aggregation": "sum", "direction": "lower", "cap": {"percentile": 0.99}},
                  "tokens_per_conversation": {"type": "ratio", "numerator": "token_usage",
                                              "denominator": "conversations", "direction": "lower"}}},
     {"provider-a": (3.9, 900), "provider-b": (3.9, 700)}),
]


LAYER_EXPERIMENTS = [
    # Two agent settings tested at once on the same users' conversations: they go in one layer,
    # so no user is in both, and a 10% holdout measures what the layer ships overall.
    ({"name": "Confidence threshold", "experiment_type": "agent_config", "primary_metric": "resolution_rate",
      "layer": {"name": "agent settings", "percentage": 45}, "metrics": {"resolution_rate": {"type": "binary"}},
      "variants": [{"name": "0.8", "is_control": True, "traffic_allocation": 50, "config": {"confidence_threshold": 0.8}},
                   {"name": "0.9", "traffic_allocation": 50, "config": {"confidence_threshold": 0.9}}]},
     {"0.8": 0.60, "0.9": 0.66}),
    ({"name": "Escalation wording", "experiment_type": "prompt", "primary_metric": "resolution_rate",
      "layer": {"name": "agent settings", "percentage": 45}, "metrics": {"resolution_rate": {"type": "binary"}},
      "variants": [{"name": "formal", "is_control": True, "traffic_allocation": 50, "config": {"tone": "formal"}},
                   {"name": "friendly", "traffic_allocation": 50, "config": {"tone": "friendly"}}]},
     {"formal": 0.60, "friendly": 0.64}),
]
HOLDOUT = {"name": "Agent settings holdout", "experiment_type": "agent_config", "primary_metric": "resolution_rate",
           "layer": {"name": "agent settings", "holdout": True}, "metrics": {"resolution_rate": {"type": "binary"}},
           "variants": [{"name": "holdout", "is_control": True, "traffic_allocation": 10},
                        {"name": "exposed", "traffic_allocation": 90}]}


def run_layer(conn, users, rng, out):
    """Mutually exclusive experiments in a layer with a holdout: each user gets at most one of
    the layer's experiments, the holdout none, and the holdout experiment compares everyone
    exposed with the users held out."""
    if conn.execute("SELECT 1 FROM ab_layers WHERE name = 'agent settings'").fetchone():
        for (exp_id, status) in conn.execute("SELECT e.id, e.status FROM ab_layer_experiments m JOIN ab_experiments e "
                                             "ON e.id = m.experiment_id JOIN ab_layers l ON l.id = m.layer_id "
                                             "WHERE l.name = 'agent settings'").fetchall():
            if status == "running":
                conn.execute("SELECT ab_stop_experiment(%s)", (exp_id,))
            conn.execute("SELECT ab_delete_experiment(%s)", (exp_id,))
        conn.execute("SELECT ab_delete_layer('agent settings')")
    conn.execute("SELECT ab_create_layer('agent settings', holdout_percentage => 10)")
    for definition in [d for d, _ in LAYER_EXPERIMENTS] + [HOLDOUT]:
        conn.execute("SELECT ab_start_experiment(ab_create_experiment(%s))", (Jsonb(definition),))
    out("created layer 'agent settings' (10% holdout) with 'Confidence threshold' and 'Escalation wording' (45% each)")
    in_two = held_out = 0
    for i in range(users):
        user = f"agent-user-{i}"
        exposure = conn.execute("SELECT ab_get_variant(%s, %s) ->> 'variant'", (HOLDOUT["name"], user)).fetchone()[0]
        chance = 0.60
        enrolled = 0
        for definition, behaviour in LAYER_EXPERIMENTS:
            variant = conn.execute("SELECT ab_get_variant(%s, %s)", (definition["name"], user)).fetchone()[0]
            if variant:
                enrolled += 1
                chance = behaviour[variant["variant"]]
                resolved = float(rng.random() < chance)
                conn.execute("SELECT ab_record_result(%s, 'resolution_rate', %s, %s)", (definition["name"], resolved, user))
        in_two += enrolled > 1
        held_out += exposure == "holdout"
        # The holdout experiment records the layer's outcome for everyone, exposed or not.
        conn.execute("SELECT ab_record_result(%s, 'resolution_rate', %s, %s)",
                     (HOLDOUT["name"], float(rng.random() < chance), user))
    out(f"  {held_out} users held out, {in_two} users in both experiments")
    row = conn.execute("SELECT users, round(diff::numeric, 3), p_value FROM ab_analyze(%s) WHERE NOT is_control",
                       (HOLDOUT["name"],)).fetchone()
    out(f"  cumulative impact of the layer: exposed n={row[0]} diff={row[1]} p={row[2]:.2g}")
    return {"in_two": in_two, "held_out": held_out}


def existing(conn):
    """The experiments and the layer of this demo that the database already has."""
    names = [d["name"] for d, _ in EXPERIMENTS + LAYER_EXPERIMENTS] + [HOLDOUT["name"]]
    found = [r[0] for r in conn.execute("SELECT name FROM ab_experiments WHERE name = ANY(%s) ORDER BY name", (names,))]
    if conn.execute("SELECT 1 FROM ab_layers WHERE name = 'agent settings'").fetchone():
        found.append("layer 'agent settings'")
    return found


def run(conninfo, users=1500, seed=2026, out=print, replace=False):
    rng = random.Random(seed)
    tokens_rng = random.Random(seed + 1)  # its own stream: the other metrics' draws stay as they were
    tokens = {"provider-a": 900, "provider-b": 760}
    outcomes = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        found = existing(conn)
        if found and not replace:
            raise SystemExit(f"this database already has {', '.join(found)}: run the demo in an empty database, "
                             "or pass --replace to delete and recreate them")
        # The CRM's table of loan applications, which the application writes anyway.
        conn.execute("CREATE TABLE IF NOT EXISTS public.loan_applications (id bigserial PRIMARY KEY, "
                     "borrower_id text NOT NULL, status text NOT NULL, funded_at timestamptz, amount numeric(12, 2))")
        funding_rng = random.Random(seed + 2)
        funding = {"Control": 0.25, "Treatment": 0.40}
        for definition, behaviour in EXPERIMENTS:
            name = definition["name"]
            conn.execute("SELECT ab_delete_experiment(id) FROM ab_experiments WHERE name = %s AND status <> 'running'", (name,))
            exp_id = conn.execute("SELECT ab_create_experiment(%s)", (Jsonb(definition),)).fetchone()[0]
            conn.execute("SELECT ab_start_experiment(%s)", (exp_id,))
            out(f"created and started {name!r} (id {exp_id})")
            for i in range(users):
                user = f"{name[:4].lower()}-user-{i}"
                # A covariate: the user's satisfaction before the experiment (CUPED for the
                # experiment measuring satisfaction).
                before = rng.gauss(3.8, 0.5)
                if definition["primary_metric"] == "satisfaction_score":
                    conn.execute("SELECT ab_record_covariate(%s, 'satisfaction_score', %s, %s)", (exp_id, user, before))
                variant = conn.execute("SELECT ab_get_variant(%s, %s, %s)",
                                       (exp_id, user, Jsonb({"loan_type": rng.choice(["fha", "va", "conventional"])}))).fetchone()[0]
                if variant is None:
                    continue
                chance, latency = behaviour[variant["variant"]]
                if "loan_funded_14d" in definition["metrics"]:
                    # The borrower's application; a funding after 14 days does not count.
                    funded = funding_rng.random() < funding[variant["variant"]]
                    conn.execute("INSERT INTO public.loan_applications (borrower_id, status, funded_at, amount) "
                                 "VALUES (%s, %s, CASE WHEN %s THEN now() + %s * interval '1 day' END, %s)",
                                 (user, "funded" if funded else "declined", funded, funding_rng.randint(0, 20),
                                  funding_rng.randint(120, 400) * 1000))
                for _ in range(rng.randint(1, 3)):
                    if definition["primary_metric"] == "resolution_rate":
                        value = float(rng.random() < chance)
                    else:
                        value = min(5.0, max(0.0, 0.5 * before + 0.5 * rng.gauss(chance, 0.6)))
                    conn.execute("SELECT ab_record_result(%s, %s, %s, %s)", (exp_id, definition["primary_metric"], value, user))
                    conn.execute("SELECT ab_record_result(%s, 'response_time', %s, %s)", (exp_id, rng.gauss(latency, 150), user))
                    if "token_usage" in definition.get("metrics", {}):
                        used = tokens_rng.gammavariate(4.0, tokens[variant["variant"]] / 4.0)
                        used *= 60 if tokens_rng.random() < 0.005 else 1
                        conn.execute("SELECT ab_record_result(%s, 'conversations', 1, %s)", (exp_id, user))
                        conn.execute("SELECT ab_record_result(%s, 'token_usage', %s, %s)", (exp_id, round(used), user))
            health = conn.execute("SELECT users_per_variant, srm_p_value FROM ab_experiment_health WHERE id = %s",
                                  (exp_id,)).fetchone()
            out(f"  users per variant {health[0]}, sample ratio p = {health[1]:.3f}")
            for row in conn.execute("SELECT metric_name, variant, users, round(mean::numeric, 3), round(diff::numeric, 3), "
                                    "p_value, significant FROM ab_analyze(%s) WHERE NOT is_control", (exp_id,)):
                out(f"  {row[0]:20} {row[1]:12} n={row[2]:<5} mean={row[3]} diff={row[4]} p={row[5]:.2g} significant={row[6]}")
            if definition.get("breakdowns"):
                out("  by loan type (p-values adjusted across the segments):")
                for row in conn.execute("SELECT value, variant, users, round(diff::numeric, 3), p_value_adjusted, significant "
                                        "FROM ab_breakdown(%s, 'loan_type') WHERE metric_name = %s AND NOT is_control",
                                        (exp_id, definition["primary_metric"])):
                    out(f"    {row[0] or '(not given)':14} {row[1]:12} n={row[2]:<5} diff={row[3]} p={row[4]:.2g} significant={row[5]}")
            result = conn.execute("SELECT ab_stop_experiment(%s, declare_winner => true)", (exp_id,)).fetchone()[0]
            out(f"  stopped: winner {result['winner']!r} ({result['reason']})")
            outcomes[name] = result
        outcomes["layer"] = run_layer(conn, users, rng, out)
        out("")
        out(conn.execute("SELECT ab_summary(%s)", (EXPERIMENTS[0][0]["name"],)).fetchone()[0])
        for row in conn.execute("SELECT name, status, users_assigned, results_recorded, winner_variant FROM ab_experiment_overview"):
            out(f"{row[0]:32} {row[1]:8} users={row[2]:<6} results={row[3]:<6} winner={row[4]}")
    return outcomes


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--replace"]
    run(args[0] if args else "host=/tmp/ab_testing_pg port=5499 user=postgres dbname=ab_demo_py",
        replace="--replace" in sys.argv[1:])
