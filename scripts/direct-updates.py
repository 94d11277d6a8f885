#!/usr/bin/env python3
"""Writes the direct update scripts sql/ab_testing--A--0.15.0.sql for the releases A whose
own update chain Citus refuses once the tables are distributed: their scripts change
distributed tables with plain statements, which Citus forwards to the workers as the text
of the whole script. A direct script is the chain from A to 0.15.0 with those statements run through EXECUTE (Citus then forwards the statement
alone) and only on the coordinator (a worker runs the extension's update too, and gets the
change from the coordinator). PostgreSQL takes the shortest update path, so
`ALTER EXTENSION ab_testing UPDATE` from A runs the direct script, on one node as on Citus.

A direct script from a release before 0.12.0 also refuses to run while the extension's
schema belongs to a non-superuser, a non-superuser (predefined roles included) may create
there, or it holds a function or operator that is not the extension's (STRICT_PREFLIGHT): those releases' scripts name them without a schema.

Run it after changing the update script to 0.15.0; `--check` fails when a file differs
from what it would write (tests/client/test_operations.py runs it).
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQL = os.path.join(ROOT, "sql")
DIRECT_FROM = ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "0.9.0", "0.10.0", "0.11.0", "0.12.0", "0.13.0"]
# The release they lead to; from the next one on, they are released scripts like the others.
TARGET = "0.15.0"

# Columns added with an unnamed CHECK constraint, which Citus refuses on a distributed table:
# named as PostgreSQL names them on one node (table_column_check).
NAMED = {
    "ab_testing--0.7.0--0.8.0.sql": [
        ("ADD COLUMN allocation jsonb CHECK", "ADD COLUMN allocation jsonb CONSTRAINT ab_experiments_allocation_check CHECK"),
        ("ADD COLUMN period integer NOT NULL DEFAULT 0 CHECK",
         "ADD COLUMN period integer NOT NULL DEFAULT 0 CONSTRAINT ab_assignments_period_check CHECK"),
    ],
    "ab_testing--0.9.0--0.10.0.sql": [
        ("ADD COLUMN breakdowns text[] NOT NULL DEFAULT '{}' CHECK",
         "ADD COLUMN breakdowns text[] NOT NULL DEFAULT '{}' CONSTRAINT ab_experiments_breakdowns_check CHECK"),
        ("ADD COLUMN attributes jsonb CHECK", "ADD COLUMN attributes jsonb CONSTRAINT ab_assignments_attributes_check CHECK"),
    ],
}

# (After QUALIFY.) The roles that could run ab_analyze, kept across 0.8.0->0.9.0 as "function|role,..." with
# the role's name: a name holding "," or "|" broke the update. Kept as the argument type and
# the role's oid instead (0: PUBLIC), neither of which holds them.
FIXED = {
    "ab_testing--0.8.0--0.9.0.sql": [
        ("pg_catalog.format('%s|%s', p.oid::regprocedure, CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'PUBLIC'\n"
         "                                                            ELSE a.grantee::regrole::text END), ','), ''), true)",
         "pg_catalog.format('%s|%s', p.proargtypes[0]::pg_catalog.regtype, a.grantee), ','), ''), true)"),
        ("pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', pg_catalog.split_part(g, '|', 1), "
         "pg_catalog.split_part(g, '|', 2));",
         "pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(%s) TO %s', pg_catalog.split_part(g, '|', 1),\n"
         "            CASE pg_catalog.split_part(g, '|', 2) WHEN '0' THEN 'PUBLIC'\n"
         "            ELSE pg_catalog.split_part(g, '|', 2)::pg_catalog.oid::pg_catalog.regrole::pg_catalog.text END);"),
    ],
}

# Per released script, its statements on distributed tables, exactly as written there (after
# NAMED).
REWRITES = {
    "ab_testing--0.5.0--0.6.0.sql": [
        "ALTER TABLE ab_experiments ADD COLUMN strict_metrics boolean NOT NULL DEFAULT false;\n",
    ],
    # The fill reads ab_results, distributed: on a worker that is a distributed query from
    # within the coordinator's command, which Citus refuses.
    "ab_testing--0.6.0--0.7.0.sql": [
        ("LOCK TABLE ab_results IN SHARE MODE;\n"
         "INSERT INTO ab_user_metrics (experiment_id, metric_name, user_id, variant_id, n, total, max)\n"
         "SELECT experiment_id, metric_name, user_id, variant_id, count(*), sum(metric_value), max(metric_value)\n"
         "FROM ab_results GROUP BY experiment_id, metric_name, user_id, variant_id;\n", "ab_results"),
    ],
    "ab_testing--0.7.0--0.8.0.sql": [
        "ALTER TABLE ab_experiments ADD COLUMN allocation jsonb CONSTRAINT ab_experiments_allocation_check "
        "CHECK (jsonb_typeof(allocation) = 'object');\n",
        "ALTER TABLE ab_assignments ADD COLUMN period integer NOT NULL DEFAULT 0 CONSTRAINT ab_assignments_period_check "
        "CHECK (period >= 0);\n",
    ],
    "ab_testing--0.8.0--0.9.0.sql": [
        "ALTER TABLE ab_insights\n"
        "    ADD COLUMN relative_lift_ci_lower float8,\n"
        "    ADD COLUMN relative_lift_ci_upper float8,\n"
        "    ADD COLUMN relative_lift_p_value float8,\n"
        "    ADD COLUMN margin float8,\n"
        "    ADD COLUMN non_inferiority_p_value float8,\n"
        "    ADD COLUMN non_inferior boolean;\n",
    ],
    "ab_testing--0.9.0--0.10.0.sql": [
        "ALTER TABLE ab_experiments ADD COLUMN breakdowns text[] NOT NULL DEFAULT '{}' "
        "CONSTRAINT ab_experiments_breakdowns_check CHECK (cardinality(breakdowns) <= 5);\n",
        "ALTER TABLE ab_assignments ADD COLUMN attributes jsonb CONSTRAINT ab_assignments_attributes_check "
        "CHECK (jsonb_typeof(attributes) = 'object');\n",
    ],
    "ab_testing--0.11.0--0.12.0.sql": [
        "ALTER TABLE ab_insights ADD COLUMN source_reads jsonb, ADD COLUMN computed_by name;\n",
    ],
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

# What the released scripts' own blocks compare during the update, written with pg_catalog's
# operators and types: an extension script runs with the extension's schema on its
# search_path, where a role allowed to create objects there could otherwise put an operator
# that matches better (`<>(oid, integer)`) and run as the updating superuser.
QUALIFY = [
    ("a.grantee <> 0 AND", "a.grantee OPERATOR(pg_catalog.<>) 0::pg_catalog.oid AND"),
    ("a.grantee <> p.proowner", "a.grantee OPERATOR(pg_catalog.<>) p.proowner"),
    ("a.privilege_type = 'EXECUTE'", "a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text"),
    ("p.oid = '", "p.oid OPERATOR(pg_catalog.=) '"),
    ("CASE a.grantee WHEN 0 THEN", "CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN"),
    ("'::regprocedure", "'::pg_catalog.regprocedure"),
]


# First, as a fresh install checks: no role but superusers may create objects in the schema,
# where an operator or function of theirs could match an expression of the update better than
# pg_catalog's and run as the role updating. This also undoes, with the whole update, what such
# an object did while an earlier release's script ran before this one (from 0.11.0 or earlier).
PREFLIGHT = """DO $$
DECLARE
    creators text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname::pg_catalog.text), ', ' ORDER BY r.rolname)
      INTO creators
      FROM pg_catalog.pg_roles r
     WHERE NOT r.rolsuper AND NOT r.rolname::pg_catalog.text OPERATOR(pg_catalog.^@) 'pg_'::pg_catalog.text
       AND pg_catalog.has_schema_privilege(r.oid, '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid, 'CREATE'::pg_catalog.text);
    IF creators IS NOT NULL THEN
        RAISE EXCEPTION 'ab_testing is updated only where no role but superusers may create objects in its schema, and in schema "%" so may: %',
            '@extschema@', creators
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'an operator or function they create there could run as the role updating the extension: revoke CREATE on the schema from them for the update (REVOKE CREATE ON SCHEMA ... FROM ...), then grant it back';
    END IF;
END
$$;
"""


# Then, from a release before 0.12.0, whose update scripts name functions and operators
# without a schema (in their blocks, CHECK constraints and defaults): one in the extension's
# schema that matches better than pg_catalog's (`=(oid, regclass)`, `cardinality(text[])`)
# would run as the role updating, or be built into a constraint. So the schema must belong to
# a superuser (its owner could create objects there while the update runs), no role but
# superusers may create there (predefined roles included: a member may SET ROLE to one), and
# every function and operator there must be the extension's own: who owns one says nothing
# of who wrote it (REASSIGN OWNED hands a departing role's objects to a superuser), and a
# role may add its own to an extension it owns (a trusted one).
STRICT_PREFLIGHT = """DO $$
DECLARE
    owner oid;
    owner_is_superuser boolean;
    found text;
BEGIN
    SELECT CASE WHEN n.nspowner OPERATOR(pg_catalog.=) 'pg_database_owner'::pg_catalog.regrole::pg_catalog.oid
                THEN d.datdba ELSE n.nspowner END
      INTO owner
      FROM pg_catalog.pg_namespace n, pg_catalog.pg_database d
     WHERE n.oid OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid
       AND d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database();
    SELECT r.rolsuper INTO owner_is_superuser FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) owner;
    IF NOT owner_is_superuser THEN
        RAISE EXCEPTION 'ab_testing is updated from this release only in a schema owned by a superuser, and schema "%" is owned by role "%"',
            '@extschema@', pg_catalog.pg_get_userbyid(owner)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the update scripts of releases before 0.12.0 name functions and operators without a schema, and that role could create one there while the update runs: make a superuser the schema''s owner for the update (ALTER SCHEMA ... OWNER TO), or, for public, the database''s';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname::pg_catalog.text), ', ' ORDER BY r.rolname)
      INTO found
      FROM pg_catalog.pg_roles r
     WHERE NOT r.rolsuper
       AND NOT (r.rolname OPERATOR(pg_catalog.=) 'pg_database_owner'::pg_catalog.name AND owner_is_superuser)
       AND pg_catalog.has_schema_privilege(r.oid, '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid, 'CREATE'::pg_catalog.text);
    IF found IS NOT NULL THEN
        RAISE EXCEPTION 'ab_testing is updated from this release only where no role but superusers may create objects in its schema, and in schema "%" so may: %',
            '@extschema@', found
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'an operator or function they create there could run as the role updating the extension: revoke CREATE on the schema from them for the update (REVOKE CREATE ON SCHEMA ... FROM ...), then grant it back';
    END IF;
    SELECT pg_catalog.string_agg(o.what, ', ' ORDER BY o.what)
      INTO found
      FROM (SELECT p.oid::pg_catalog.regprocedure::pg_catalog.text AS what, 'pg_catalog.pg_proc'::pg_catalog.regclass AS cls, p.oid
              FROM pg_catalog.pg_proc p
             WHERE p.pronamespace OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid
            UNION ALL
            SELECT o.oid::pg_catalog.regoperator::pg_catalog.text, 'pg_catalog.pg_operator'::pg_catalog.regclass, o.oid
              FROM pg_catalog.pg_operator o
             WHERE o.oprnamespace OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid) o
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_depend d, pg_catalog.pg_extension e
                        WHERE d.classid OPERATOR(pg_catalog.=) o.cls::pg_catalog.oid AND d.objid OPERATOR(pg_catalog.=) o.oid
                          AND d.deptype OPERATOR(pg_catalog.=) 'e'::pg_catalog."char"
                          AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass::pg_catalog.oid
                          AND d.refobjid OPERATOR(pg_catalog.=) e.oid
                          AND e.extname OPERATOR(pg_catalog.=) 'ab_testing'::pg_catalog.name);
    IF found IS NOT NULL THEN
        RAISE EXCEPTION 'ab_testing is updated from this release only where its schema holds no function or operator but its own, and schema "%" holds: %',
            '@extschema@', found
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the update scripts of releases before 0.12.0 name functions and operators without a schema, and one of these could match better than pg_catalog''s and run as the role updating: move them to another schema for the update (ALTER FUNCTION ... SET SCHEMA, ALTER OPERATOR ... SET SCHEMA, ALTER EXTENSION ... SET SCHEMA), then move them back';
    END IF;
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


def guarded(statement, table=None):
    """The statement through EXECUTE, unless this is a Citus worker's own run of the update and
    the table (the one it alters, or `table`) is distributed (the coordinator's statement then
    changes it on every node). Everything in the block is qualified (see QUALIFY)."""
    sql = " ".join(line.strip() for line in statement.strip().rstrip(";").splitlines())
    sql = re.sub(r"ALTER TABLE (?!@extschema@\.)", "ALTER TABLE @extschema@.", sql)
    table = f"@extschema@.{table}" if table else re.match(r"ALTER TABLE (@extschema@\.\w+)", sql).group(1)
    return f"""DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '{table}'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE '{sql.replace(chr(39), chr(39) * 2)}';
    END IF;
END
$$;
"""


def body(name):
    with open(os.path.join(SQL, name)) as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    # The script's header: its comment lines and the \echo guard.
    while lines and (lines[0].startswith("--") or lines[0].startswith("\\echo") or not lines[0].strip()):
        lines.pop(0)
    text = "".join(lines)
    for plain, qualified in QUALIFY:
        text = text.replace(plain, qualified)
    for plain, named in NAMED.get(name, []) + FIXED.get(name, []):
        assert text.count(plain) == 1, (name, plain)
        text = text.replace(plain, named)
    for statement in REWRITES.get(name, []):
        statement, table = statement if isinstance(statement, tuple) else (statement, None)
        assert text.count(statement) == 1, (name, statement)
        statements = re.split(r"(?<=;)\n", statement.rstrip("\n"))
        text = text.replace(statement, "".join(guarded(s, table) for s in statements if s.strip()))
    return text


def direct(start, end):
    parts = [f"-- {start} -> {end} in one step, written by scripts/direct-updates.py (do not edit):\n"
             f"-- the update chain with its statements on distributed tables run on the Citus coordinator\n"
             f"-- only, through EXECUTE. tests/client/test_operations.py checks that an updated database\n"
             f"-- matches a fresh install object by object.\n"
             f"\\echo Use \"ALTER EXTENSION ab_testing UPDATE TO '{end}'\" to load this file. \\quit\n\n", PREFLIGHT]
    if tuple(int(x) for x in start.split(".")) < (0, 12, 0):
        parts.append(STRICT_PREFLIGHT)
    for name in chain(start, end):
        parts.append(f"\n-- {name}\n")
        parts.append(body(name))
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
