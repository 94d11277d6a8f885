#!/usr/bin/env python3
"""Writes the direct update scripts sql/ab_testing--A--0.15.0.sql for the releases A whose
own update chain Citus refuses once the tables are distributed: their scripts change
distributed tables with plain statements, which Citus forwards to the workers as the text
of the whole script. A direct script is the chain from A to 0.15.0 with those statements run through EXECUTE (Citus then forwards the statement
alone) and only on the coordinator (a worker runs the extension's update too, and gets the
change from the coordinator). PostgreSQL takes the shortest update path, so
`ALTER EXTENSION ab_testing UPDATE` from A runs the direct script, on one node as on Citus.

Run it after changing the update script to 0.15.0; `--check` fails when a file differs
from what it would write (tests/client/test_operations.py runs it).
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQL = os.path.join(ROOT, "sql")
DIRECT_FROM = ["0.12.0", "0.13.0"]
# The release they lead to; from the next one on, they are released scripts like the others.
TARGET = "0.15.0"

# Per released script, its statements on distributed tables, exactly as written there.
REWRITES = {
    "ab_testing--0.12.0--0.13.0.sql": [
        "ALTER TABLE @extschema@.ab_user_metrics SET (fillfactor = 90);\n",
    ],
    "ab_testing--0.13.0--0.14.0.sql": [
        "ALTER TABLE ab_audit DROP CONSTRAINT ab_audit_action_check;\n"
        "ALTER TABLE ab_audit ADD CONSTRAINT ab_audit_action_check\n"
        "    CHECK (action IN ('created', 'started', 'stopped', 'deleted',\n"
        "                      'stepped', 'rolled_back', 'resumed', 'shipped', 'completed'));\n",
        "ALTER TABLE ab_experiments ADD COLUMN randomization_unit text CONSTRAINT ab_experiments_randomization_unit_check\n"
        "                     CHECK (randomization_unit IS NULL OR randomization_unit = ANY (breakdowns));\n",
    ],
}

GUARD = """CREATE FUNCTION ab_update_on_citus_worker(t regclass) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() '
                'AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)' INTO worker USING t;
    END IF;
    RETURN worker;
END
$$;
"""

def chain(start, end):
    """The update scripts from start to end, one release at a time."""
    direct_names = {f"ab_testing--{a}--{TARGET}.sql" for a in DIRECT_FROM}
    steps = {}
    for name in os.listdir(SQL):
        m = re.fullmatch(r"ab_testing--([0-9.]+)--([0-9.]+)\.sql", name)
        if m and name not in direct_names:
            steps[m.group(1)] = (m.group(2), name)
    out, at = [], start
    while at != end:
        at, name = steps[at]
        out.append(name)
    return out


def guarded(statement):
    """The statement through EXECUTE, unless this is a Citus worker's own run of the update and
    the table is distributed (the coordinator's statement then changes it on every node)."""
    sql = " ".join(line.strip() for line in statement.strip().rstrip(";").splitlines())
    sql = re.sub(r"ALTER TABLE (?!@extschema@\.)", "ALTER TABLE @extschema@.", sql)
    table = re.match(r"ALTER TABLE (@extschema@\.\w+)", sql).group(1)
    return (f"DO $$\nBEGIN\n    IF NOT @extschema@.ab_update_on_citus_worker('{table}') THEN\n"
            f"        EXECUTE '{sql.replace(chr(39), chr(39) * 2)}';\n    END IF;\nEND\n$$;\n")


def body(name):
    with open(os.path.join(SQL, name)) as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    # The script's header: its comment lines and the \echo guard.
    while lines and (lines[0].startswith("--") or lines[0].startswith("\\echo") or not lines[0].strip()):
        lines.pop(0)
    text = "".join(lines)
    for statement in REWRITES.get(name, []):
        assert text.count(statement) == 1, (name, statement)
        statements = re.split(r"(?<=;)\n", statement.rstrip("\n"))
        text = text.replace(statement, "".join(guarded(s) for s in statements if s.strip()))
    return text


def direct(start, end):
    parts = [f"-- {start} -> {end} in one step, written by scripts/direct-updates.py (do not edit):\n"
             f"-- the update chain with its statements on distributed tables run on the Citus coordinator\n"
             f"-- only, through EXECUTE. tests/client/test_operations.py checks that an updated database\n"
             f"-- matches a fresh install object by object.\n"
             f"\\echo Use \"ALTER EXTENSION ab_testing UPDATE TO '{end}'\" to load this file. \\quit\n\n", GUARD]
    for name in chain(start, end):
        parts.append(f"\n-- {name}\n")
        parts.append(body(name))
    parts.append("\nDROP FUNCTION ab_update_on_citus_worker(regclass);\n")
    return "".join(parts)


def main():
    check = "--check" in sys.argv[1:]
    end = TARGET
    stale = []
    for start in DIRECT_FROM:
        path = os.path.join(SQL, f"ab_testing--{start}--{end}.sql")
        text = direct(start, end)
        current = open(path).read() if os.path.exists(path) else None
        if current != text:
            if check:
                stale.append(os.path.basename(path))
            else:
                with open(path, "w") as f:
                    f.write(text)
    if stale:
        sys.exit(f"not up to date (run scripts/direct-updates.py): {', '.join(stale)}")


if __name__ == "__main__":
    main()
