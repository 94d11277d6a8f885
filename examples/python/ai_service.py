"""The AI-integration pattern: a conversation service asks ab_get_variant for the system
prompt (falling back to the default when the user is not in the experiment), calls the
model, and records resolution_rate, response_time and token_usage with ab_record_result in
the same transaction as its own writes, so a failed request leaves no result behind.

    python examples/python/ai_service.py "host=/tmp/ab_testing_pg port=5499 user=postgres dbname=ab_demo_py"

creates what it needs when missing (its conversations table and a running experiment), then
serves a few simulated conversations and prints what each user got.
"""
import sys
import time

import psycopg

DEFAULT_PROMPT = "You are a helpful mortgage assistant."
EXPERIMENT = "AI service prompt test"


def stand_in_llm(system_prompt, message):
    """A deterministic stand-in for the model call: longer prompts resolve more often."""
    resolved = (len(system_prompt) + len(message)) % 3 != 0
    return {"text": f"[{system_prompt[:20]}] answer to {message!r}", "resolved": resolved,
            "tokens": 40 + len(system_prompt) // 4 + len(message) // 4}


class ConversationService:
    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def system_prompt(self, user_id, attributes=None):
        row = self.conn.execute("SELECT ab_get_variant(%s, %s, %s::jsonb)",
                                (EXPERIMENT, user_id, psycopg.types.json.Jsonb(attributes or {}))).fetchone()
        variant = row[0]
        return variant["config"].get("system_prompt", DEFAULT_PROMPT) if variant else DEFAULT_PROMPT

    def handle(self, user_id, message, fail_after_model=False):
        """One request, one transaction: the service's own row and the metrics commit together."""
        with self.conn.transaction():
            prompt = self.system_prompt(user_id)
            start = time.perf_counter()
            answer = stand_in_llm(prompt, message)
            elapsed_ms = (time.perf_counter() - start) * 1000
            self.conn.execute("INSERT INTO conversations (user_id, message, answer) VALUES (%s, %s, %s)",
                              (user_id, message, answer["text"]))
            for metric, value in [("resolution_rate", float(answer["resolved"])), ("response_time", elapsed_ms),
                                  ("token_usage", float(answer["tokens"]))]:
                self.conn.execute("SELECT ab_record_result(%s, %s, %s, %s)", (EXPERIMENT, metric, value, user_id))
            if fail_after_model:
                raise RuntimeError("the request failed after the model answered")
            return answer


def setup(conn):
    """The service's own table, and the experiment it reads its prompt from (created and
    started when missing)."""
    with conn.transaction():
        conn.execute("CREATE TABLE IF NOT EXISTS conversations "
                     "(id bigserial PRIMARY KEY, user_id text, message text, answer text)")
        if conn.execute("SELECT 1 FROM ab_experiments WHERE name = %s", (EXPERIMENT,)).fetchone() is None:
            conn.execute("SELECT ab_start_experiment(ab_create_experiment(%s))", (psycopg.types.json.Jsonb({
                "name": EXPERIMENT, "experiment_type": "prompt", "primary_metric": "resolution_rate",
                "metrics": {"resolution_rate": {"type": "binary"}, "response_time": {"direction": "lower"},
                            "token_usage": {"aggregation": "sum", "direction": "lower"}},
                "variants": [{"name": "Control", "is_control": True, "traffic_allocation": 50,
                              "config": {"system_prompt": "Current prompt..."}},
                             {"name": "Treatment", "traffic_allocation": 50,
                              "config": {"system_prompt": "New prompt with examples..."}}]}),))


def main(conninfo):
    with psycopg.connect(conninfo) as conn:
        setup(conn)
        service = ConversationService(conn)
        for i in range(5):
            user = f"service-user-{i}"
            answer = service.handle(user, "Can I refinance my FHA loan?")
            print(f"{user}: {service.system_prompt(user)!r} -> resolved={answer['resolved']}")
        print(conn.execute("SELECT count(*) FROM ab_results r JOIN ab_experiments e ON e.id = r.experiment_id "
                           "WHERE e.name = %s", (EXPERIMENT,)).fetchone()[0], "results recorded")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "host=/tmp/ab_testing_pg port=5499 user=postgres dbname=ab_demo_py")
