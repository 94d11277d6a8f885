"""For teams on SQLAlchemy: the functions are plain SQL, so text() is all it takes.

    python examples/python/sqlalchemy_snippet.py /tmp/ab_testing_pg 5499 ab_demo_py "AI service prompt test" user-1

asks for a user's variant and records a resolution for them.
"""
import sys

from sqlalchemy import create_engine, text


def variant_for(engine, experiment, user_id):
    with engine.begin() as conn:
        return conn.execute(text("SELECT ab_get_variant(:e, :u)"), {"e": experiment, "u": user_id}).scalar()


def record(engine, experiment, metric, value, user_id):
    with engine.begin() as conn:
        return conn.execute(text("SELECT ab_record_result(:e, :m, :v, :u)"),
                            {"e": experiment, "m": metric, "v": value, "u": user_id}).scalar()


def make_engine(host, port, dbname):
    # psycopg 3 driver; the socket directory goes in the host query parameter.
    return create_engine(f"postgresql+psycopg://postgres@/{dbname}?host={host}&port={port}")


if __name__ == "__main__":
    host, port, dbname, experiment, user = sys.argv[1:6]
    engine = make_engine(host, port, dbname)
    print("variant:", variant_for(engine, experiment, user))
    print("recorded:", record(engine, experiment, "resolution_rate", 1.0, user))
