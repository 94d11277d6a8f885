"""What a DBA relies on: dump and restore, upgrades, crash recovery, and concurrent
lifecycle changes while applications assign and record."""
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import CITUS, conninfo, fresh_citus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = os.environ.get("PGHOST", "/tmp/ab_testing_pg")
PORT = os.environ.get("PGPORT", "5499")


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


def release(version):
    """A release's number as a tuple, to compare: "0.10.0" comes after "0.6.0"."""
    return tuple(int(x) for x in version.split("."))


def two_arms(name, **extra):
    return {"name": name, "experiment_type": "feature", "primary_metric": "conversion_rate", "min_sample_size": 10,
            "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50},
                         {"name": "b", "traffic_allocation": 50}], **extra}


def started(c, name, **extra):
    """A running two-arm experiment (two_arms with `extra`); returns its id."""
    exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(name, **extra)))
    one(c, "SELECT ab_start_experiment(%s)", exp)
    return exp


def fresh_db(name, version=None):
    if CITUS:
        assert version is None
        return fresh_citus()
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(conninfo(name), autocommit=True) as c:
        c.execute("CREATE EXTENSION ab_testing" + (f" VERSION '{version}'" if version else ""))
    return conninfo(name)


def drop_db(name):
    if CITUS:
        return
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def populate(c, name="kept"):
    """An experiment with assignments, results, covariates, insights and audit rows."""
    exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(name, salt="kept")))
    one(c, "SELECT ab_start_experiment(%s)", exp)
    rng = random.Random(3)
    for i in range(300):
        user = f"user-{i}"
        v = one(c, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, user)
        one(c, "SELECT ab_record_result(%s, 'conversion_rate', %s, %s)", exp,
            float(rng.random() < (0.3 if v == "a" else 0.5)), user)
        c.execute("SELECT ab_record_covariate(%s, 'conversion_rate', %s, %s)", (exp, user, rng.random()))
    c.execute("SELECT * FROM ab_analyze(%s)", (exp,))
    return exp


def analysis(c, exp):
    return c.execute("SELECT * FROM ab_analyze(%s)", (exp,)).fetchall()


def same_rows(a, b):
    """Rows equal, floats to 1e-12 relative: an analysis read from the per-user state (kept
    since 0.6.0) sums in another order than one read from the raw results."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        if len(ra) != len(rb):
            return False
        for x, y in zip(ra, rb):
            if isinstance(x, float) and isinstance(y, float):
                if not (x == y or (x != x and y != y) or abs(x - y) <= 1e-12 * max(abs(x), abs(y))):
                    return False
            elif x != y:
                return False
    return True


def counts(c):
    tables = ["ab_experiments", "ab_variants", "ab_assignments", "ab_results", "ab_user_metrics", "ab_covariates",
              "ab_insights", "ab_audit", "ab_layers", "ab_layer_experiments", "ab_metric_sources"]
    return {t: one(c, f"SELECT count(*) FROM {t}") for t in tables if one(c, "SELECT to_regclass(%s) IS NOT NULL", t)}


def test_uninstalling_and_the_roles_a_dump_needs(dsn):
    """What docs/operations.md's Uninstalling and Backup sections say: a dump carries the grants but not
    the roles; an object of the user's over the tables blocks DROP EXTENSION until CASCADE,
    which drops it too; the tables go; the granted role stays."""
    db = fresh_db("ab_uninstall")
    role = "ab_uninstall_app"
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        if not one(c, "SELECT count(*) FROM pg_roles WHERE rolname = %s", role):
            c.execute(f"CREATE ROLE {role}")
    with psycopg.connect(db, autocommit=True) as c:
        populate(c)
        c.execute("SELECT ab_grant_app(%s)", (role,))
        c.execute("CREATE VIEW my_results AS SELECT experiment_id, count(*) FROM ab_results GROUP BY 1")
    dump = subprocess.run(["pg_dump", "-h", HOST, "-p", PORT, "-U", "postgres", "-d", "ab_uninstall"],
                          capture_output=True, text=True, check=True).stdout
    assert f"TO {role};" in dump and "CREATE ROLE" not in dump
    with psycopg.connect(db, autocommit=True) as c:
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            c.execute("DROP EXTENSION ab_testing")
        assert one(c, "SELECT count(*) FROM ab_results") > 0
        c.execute("DROP EXTENSION ab_testing CASCADE")
        assert one(c, "SELECT count(*) FROM pg_class WHERE relname LIKE 'ab\\_%%' OR relname = 'my_results'") == 0
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        assert one(c, "SELECT count(*) FROM pg_roles WHERE rolname = %s", role) == 1
    drop_db("ab_uninstall")
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP ROLE {role}")


def test_dump_and_restore_keep_everything(dsn):
    src = fresh_db("ab_dump_src")
    with psycopg.connect(src, autocommit=True) as c:
        exp = populate(c)
        c.execute("SELECT ab_create_layer('restored', 5)")
        layered = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("layered", layer={"name": "restored", "percentage": 30})))
        one(c, "SELECT ab_start_experiment(%s)", layered)
        users = [f"layer-user-{i}" for i in range(200)]
        groups = [one(c, "SELECT ab_layer_group('restored', %s)", u) for u in users]
        variants = [one(c, "SELECT ab_get_variant(%s, %s)", layered, u) for u in users]
        # A metric read from an application table, through a registered source.
        c.execute("CREATE TABLE public.funded (borrower text, at timestamptz)")
        one(c, "SELECT ab_create_metric_source('funded', %s)",
            Jsonb({"relation": "public.funded", "user_column": "borrower", "time_column": "at"}))
        sourced = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(
            "from a table", salt="t", primary_metric="funded", metrics={"funded": {"type": "binary", "source": "funded"}})))
        one(c, "SELECT ab_start_experiment(%s)", sourced)
        for i in range(100):
            one(c, "SELECT ab_get_variant(%s, %s)", sourced, f"borrower-{i}")
        c.execute("INSERT INTO public.funded SELECT 'borrower-' || g, now() FROM generate_series(0, 99, 3) g")
        from_table = analysis(c, sourced)
        assert sum(r[3] for r in from_table) == 100
        before, before_counts = analysis(c, exp), counts(c)
    dump = "/tmp/ab_testing_dump.custom"
    subprocess.run(["pg_dump", "-Fc", "-h", HOST, "-p", PORT, "-U", "postgres", "-d", "ab_dump_src", "-f", dump],
                   check=True)
    drop_db("ab_dump_dst")
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute("CREATE DATABASE ab_dump_dst")
    subprocess.run(["pg_restore", "-h", HOST, "-p", PORT, "-U", "postgres", "-d", "ab_dump_dst", "--exit-on-error", dump],
                   check=True)
    with psycopg.connect(conninfo("ab_dump_dst"), autocommit=True) as c:
        after_counts = counts(c)
        after = analysis(c, exp)
        assert after_counts == before_counts
        # Floats to 1e-12 relative: the restored tables may be read in another order (the plan
        # follows the statistics, which PostgreSQL 18's pg_dump carries), and sums of floats
        # depend on their order in the last bits.
        assert same_rows(after, before)
        assert same_rows(analysis(c, sourced), from_table)
        assert after_counts["ab_user_metrics"] > 0
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
        # Sequences were restored too: new rows do not collide with restored ones.
        new = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("after restore")))
        assert new > exp
        # Layers keep their salts and ranges: users fall where they did, and a new experiment
        # of the layer takes the next free range.
        assert [one(c, "SELECT ab_layer_group('restored', %s)", u) for u in users] == groups
        assert [one(c, "SELECT ab_get_variant(%s, %s)", layered, u) for u in users] == variants
        one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("layered 2", layer={"name": "restored", "percentage": 30})))
        assert c.execute("SELECT range_start, range_end FROM ab_layer_experiments ORDER BY 1").fetchall() == \
            [(500, 3500), (3500, 6500)]
        assert one(c, "SELECT ab_get_variant(%s, 'user-1') ->> 'variant'", exp) in ("a", "b")
    drop_db("ab_dump_src")
    drop_db("ab_dump_dst")


SIGNATURE = """
WITH members AS (
  SELECT classid, objid FROM pg_depend
  WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ab_testing') AND deptype = 'e')
SELECT 'function ' || p.oid::regprocedure || ' returns ' || pg_get_function_result(p.oid)
       || ' args ' || pg_get_function_arguments(p.oid) || ' ' || p.prokind::text || p.provolatile::text || p.proparallel::text
       || ' strict=' || p.proisstrict || ' definer=' || p.prosecdef || ' config=' || coalesce(p.proconfig::text, '')
       || ' src=' || md5(p.prosrc) || ' acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(p.proacl) a), '')
       || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
UNION ALL
SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(c.relacl) a), '')
       || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
       || ' options=' || coalesce(c.reloptions::text, '')
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull
       || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' collation=' || coalesce(co.collname, '')
       || ' acl=' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x), '')
       || ' comment=' || coalesce(col_description(c.oid, a.attnum), '')
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
UNION ALL
SELECT 'columns in order ' || c.relname || ': ' || string_agg(a.attname, ', ' ORDER BY a.attnum)
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
GROUP BY c.relname
UNION ALL
SELECT 'view ' || c.relname || ' ' || md5(pg_get_viewdef(c.oid))
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid AND c.relkind IN ('v', 'm')
UNION ALL
SELECT 'sequence ' || c.relname || ' ' || format_type(s.seqtypid, NULL) || ' start=' || s.seqstart || ' by=' || s.seqincrement
       || ' min=' || s.seqmin || ' max=' || s.seqmax || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid JOIN pg_sequence s ON s.seqrelid = c.oid
UNION ALL
SELECT 'constraint ' || c.relname || ' ' || pg_get_constraintdef(k.oid)
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid JOIN pg_constraint k ON k.conrelid = c.oid
UNION ALL
SELECT 'index ' || regexp_replace(pg_get_indexdef(i.indexrelid), ' ON \\S+\\.', ' ON ')
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid JOIN pg_index i ON i.indrelid = c.oid
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
JOIN pg_trigger t ON t.tgrelid = c.oid AND NOT t.tgisinternal
UNION ALL
SELECT 'dumped ' || unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'ab_testing'
"""


# Rows where ab_user_metrics differs from what ab_results says: counts and maxima exactly,
# sums up to what summation order can change (relative to the sum of the magnitudes).
PER_USER_STATE_MISMATCHES = """
SELECT coalesce(s.experiment_id, r.experiment_id), coalesce(s.metric_name, r.metric_name),
       coalesce(s.user_id, r.user_id), s.n, r.n, s.total, r.total, s.max, r.max
FROM ab_user_metrics s
FULL JOIN (SELECT experiment_id, metric_name, user_id, variant_id, count(*) AS n, sum(metric_value) AS total,
                  max(metric_value) AS max, sum(abs(metric_value)) AS magnitude
           FROM ab_results GROUP BY 1, 2, 3, 4) r USING (experiment_id, metric_name, user_id, variant_id)
WHERE s.n IS DISTINCT FROM r.n OR s.max IS DISTINCT FROM r.max
   OR abs(s.total - r.total) > 1e-12 * greatest(1, r.magnitude)
"""


def signature(dsn):
    with psycopg.connect(dsn) as c:
        return sorted(r[0] for r in c.execute(SIGNATURE).fetchall())


def releases():
    """Every earlier release, oldest first: the versions the update scripts in sql/ start from."""
    return sorted({f.split("--")[1] for f in os.listdir(os.path.join(ROOT, "sql")) if f.count("--") == 2}, key=release)


def cargo_version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        return next(line.split('"')[1] for line in f if line.startswith("version = "))


def test_upgrade_from_every_release_keeps_data_and_matches_a_fresh_install(dsn):
    """Each earlier release as PostgreSQL builds it: 0.1.0's script and the update scripts up to
    that release, what a database updated since 0.1.0 ran. An install of the release's own full
    script gave the same objects (pg_dump --binary-upgrade, compared when those scripts left the
    sources), and released scripts never change (the next test)."""
    with psycopg.connect(dsn) as c:
        current = one(c, "SELECT default_version FROM pg_available_extensions WHERE name = 'ab_testing'")
        # Left over from an older install, another full script would stand in for the chain.
        scripts = {r[0] for r in c.execute(
            "SELECT f FROM pg_ls_dir((SELECT setting FROM pg_config WHERE name = 'SHAREDIR') || '/extension') f "
            "WHERE f LIKE 'ab\\_testing--%.sql' AND f NOT LIKE '%--%--%'")}
    assert scripts == {"ab_testing--0.1.0.sql", f"ab_testing--{current}.sql"}, \
        f"install scripts other than 0.1.0's and this version's: {sorted(scripts)} (run scripts/install.sh)"
    assert releases()[0] == "0.1.0" and current not in releases()
    fresh = signature(dsn)
    for version in releases():
        old = fresh_db("ab_upgrade", version)
        with psycopg.connect(old, autocommit=True) as c:
            assert one(c, "SELECT extversion FROM pg_extension WHERE extname = 'ab_testing'") == version
            exp = populate(c)
            # Declared metrics before strict metric sets existed: it keeps accepting any name.
            declared = one(c, "SELECT ab_create_experiment(%s)",
                           Jsonb(two_arms("declared", salt="d", metrics={"conversion_rate": {}})))
            one(c, "SELECT ab_start_experiment(%s)", declared)
            before, before_counts = analysis(c, exp)[:], counts(c)
            c.execute("ALTER EXTENSION ab_testing UPDATE")
            assert one(c, "SELECT extversion FROM pg_extension WHERE extname = 'ab_testing'") == current
            after_counts = counts(c)
            assert {t: after_counts[t] for t in before_counts} == before_counts
            # The same numbers; 0.9.0's ab_analyze has six more columns at the end.
            assert same_rows([row[:len(before[0])] for row in analysis(c, exp)], before)
            # Per-user state filled from the results recorded before (0.7.0).
            assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
            one(c, "SELECT ab_get_variant(%s, 'u')", declared)
            if release(version) < (0, 6, 0):
                assert one(c, "SELECT ab_get_experiment(%s) -> 'strict_metrics'", declared) is False
                assert one(c, "SELECT ab_record_result(%s, 'undeclared', 1, 'u')", declared) is True
            else:
                assert one(c, "SELECT ab_get_experiment(%s) -> 'strict_metrics'", declared) is True
                with pytest.raises(psycopg.errors.InvalidParameterValue):
                    one(c, "SELECT ab_record_result(%s, 'undeclared', 1, 'u')", declared)
                c.rollback()
            assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, 'u')", declared) is True
            assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
            strict = one(c, "SELECT ab_create_experiment(%s)",
                         Jsonb(two_arms("declared now", metrics={"conversion_rate": {}})))
            assert one(c, "SELECT ab_get_experiment(%s) -> 'strict_metrics'", strict) is True
            one(c, "SELECT ab_stop_experiment(%s, true)", exp)
        upgraded = signature(old)
        missing = sorted(set(fresh) - set(upgraded))
        extra = sorted(set(upgraded) - set(fresh))
        assert not missing and not extra, f"upgrade from {version} differs from a fresh install:\n" \
            + "\n".join(["missing: " + m for m in missing] + ["extra:   " + e for e in extra])
    drop_db("ab_upgrade")


# The scripts of released versions as they shipped: databases ran them, so they never change (a
# fix goes into the next update script), and the tests' chain is what those databases ran. A
# release adds its update script here.
RELEASED_SCRIPTS = {
    "ab_testing--0.1.0.sql": "f978ec71c70b02e0168714cf078d9aa61c16e2de7cea106d83c28d0f4687d8fd",
    "ab_testing--0.1.0--0.2.0.sql": "51dff845479c173e60434f97fb775d570ba02991457c6696e4b2fb38bca4fc26",
    "ab_testing--0.2.0--0.3.0.sql": "df7fec1a5f7e91914100c40bf401953f110cf28c200d4eed6c3e05e23abbf085",
    "ab_testing--0.3.0--0.4.0.sql": "a08a7f5645c326e5a3fce7bd9da9becaa296e437a4243c5ab06e3adc6a3342ae",
    "ab_testing--0.4.0--0.5.0.sql": "39ffd09856cb67a32caf258363c7df3587aeff115e515d2aaaaeae7404eda8ac",
    "ab_testing--0.5.0--0.6.0.sql": "a0598803b57d4630988274fd38f1a0d472250447ac395ce9ae995a83bc993df1",
    "ab_testing--0.6.0--0.7.0.sql": "70d52f59a9122b40a6049fcdcddcdff89f6d7e899cd70ed551d5235b9b7c8561",
    "ab_testing--0.7.0--0.8.0.sql": "85aed422801a84a935c49227e29912a2f6e7784d06df82bc4e4dfc3d574d00df",
    "ab_testing--0.8.0--0.9.0.sql": "c33faa7a00e1c460b039b5290791b18262187760acfc164c9a3dae21fc8e8e1d",
    "ab_testing--0.9.0--0.10.0.sql": "4c124d1e9a27770110f1eeaa5d706fdc917952db20673b86243655cacdc2d4bf",
    "ab_testing--0.10.0--0.11.0.sql": "82bcfbaaa28deca21a272d001087c6e430256b4521c0e4d5ab46f39a26eb9990",
    "ab_testing--0.11.0--0.12.0.sql": "33a7c05c1ec8e90a7da8e236dce85e4cb0fb98bc42fbe8c9a5571b24e8053d12",
    "ab_testing--0.12.0--0.13.0.sql": "507971f20a2c8503ec0080df77031d6427873a3545a884c780251ffe1a6cde14",
    "ab_testing--0.13.0--0.14.0.sql": "7ae61bae6644b12941e9a9ddf5ea4e9273cd998abfe31700ba71655d4f27df78",
    "ab_testing--0.14.0--0.15.0.sql": "45d213031013a535adefd0ce709211850d1ef913755ec2bf780c458b931f959b",
    "ab_testing--0.12.0--0.15.0.sql": "2c07d2ace61e17a1582f6a6493c61fda5770e08710b42f236ce0ffc7918f396c",
    "ab_testing--0.13.0--0.15.0.sql": "6e8cfd0b73424fc952b1a866d806281cbfe092443a44bf3e23b461370da9bd44",
    "ab_testing--0.15.0--0.16.0.sql": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "ab_testing--0.16.0--0.17.0.sql": "2c6af1f9ed5271cea717553862468cc15be6eb895851a371a1aee0b62a169ed2",
}


# Scripts new in the version being built besides its update script: they join
# RELEASED_SCRIPTS, with their SHA-256, when the next version starts.
NEW_SCRIPTS = {f"ab_testing--0.{minor}.0--0.15.0.sql" for minor in range(1, 12)}


def test_released_install_and_update_scripts_never_change():
    """Every script in sql/ but the update to the version being built and NEW_SCRIPTS is a
    released one, byte for byte as released."""
    sql = os.path.join(ROOT, "sql")
    scripts = {f for f in os.listdir(sql) if f.startswith("ab_testing--") and not f.endswith(f"--{cargo_version()}.sql")}
    scripts -= NEW_SCRIPTS
    assert scripts == set(RELEASED_SCRIPTS), f"not in RELEASED_SCRIPTS: {sorted(scripts - set(RELEASED_SCRIPTS))}, " \
        f"missing from sql/: {sorted(set(RELEASED_SCRIPTS) - scripts)}"
    changed = []
    for name, digest in RELEASED_SCRIPTS.items():
        with open(os.path.join(sql, name), "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != digest:
                changed.append(name)
    assert changed == [], f"released scripts changed: {changed}"


def test_direct_updates_are_generated_and_taken(dsn):
    """The direct scripts from every release before 0.14.0 to 0.15.0 (Citus refuses those
    releases' own scripts on a distributed installation; those before 0.12.0 name functions and
    operators without a schema) are what scripts/direct-updates.py writes from the chain, and
    PostgreSQL takes them: the shortest path. The upgrade test above checks that they give what
    a fresh install has."""
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "direct-updates.py"), "--check"], check=True)
    with psycopg.connect(dsn) as c:
        paths = dict(c.execute("SELECT source, path FROM pg_extension_update_paths('ab_testing') "
                               "WHERE target = '0.15.0' AND path IS NOT NULL").fetchall())
    direct = [f"0.{minor}.0" for minor in range(1, 15)]
    assert {v: paths[v] for v in direct} == {v: f"{v}--0.15.0" for v in direct}, paths


# Operators and a function a role allowed to create objects in the extension's schema could
# plant there, each matching an expression of an install or update script better than
# pg_catalog's would; each logs when it runs as a superuser.
TRAPS = [("<>", "oid", "integer"), ("=", "oid", "integer"), ("=", "oid", "regprocedure"), ("=", "oid", "regrole"),
         ("=", "oid", "regnamespace"), ("=", "oid", "regclass"), ("=", "name", "text")]


def plant_traps(c, role):
    c.execute("CREATE TABLE public.trap_log (who name, what text)")
    c.execute("GRANT INSERT ON public.trap_log TO PUBLIC")
    c.execute(f"ALTER TABLE public.trap_log OWNER TO {role}")
    c.execute(f"SET ROLE {role}")
    for k, (op, left, right) in enumerate(TRAPS):
        c.execute(f"""CREATE FUNCTION public.trap_{k}(a {left}, b {right}) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN
                IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                    INSERT INTO public.trap_log VALUES (current_user, '{op}({left}, {right})');
                END IF;
                RETURN a::text OPERATOR(pg_catalog.{op}) b::text;
            END $$""")
        c.execute(f"CREATE OPERATOR public.{op} (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = public.trap_{k})")
    c.execute("""CREATE FUNCTION public.ab_update_on_citus_worker(t text) RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.trap_log VALUES (current_user, 'ab_update_on_citus_worker'); RETURN false; END $$""")
    c.execute("RESET ROLE")


def refused(c, statement, version, *words):
    """`statement` fails with 42501, its message and hint saying `words`, and changes nothing."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        c.execute(statement)
    said = e.value.diag.message_primary + " " + e.value.diag.message_hint
    assert all(w in said for w in words), (version, said)
    assert one(c, "SELECT extversion FROM pg_extension WHERE extname = 'ab_testing'") == version
    if one(c, "SELECT to_regclass('public.trap_log') IS NOT NULL"):
        assert c.execute("SELECT * FROM public.trap_log").fetchall() == [], version


def test_installs_and_updates_run_no_code_of_a_role_that_may_create_in_the_schema():
    """A role that may create objects in the extension's schema: CREATE EXTENSION and the
    update from every release before 0.14.0 (each by its direct script) refuse (42501) and
    change nothing. Once it may not, the operators and function it planted there before
    (matching the scripts' comparisons better than pg_catalog's) are never run by the install
    or by the update from 0.12.0 or later. The update from a release before 0.12.0, whose
    scripts name functions and operators without a schema, refuses (42501) while the schema
    holds a function or operator that is not the extension's own (one of the role's added to
    another extension, or handed to a superuser, included), while a predefined role may
    create there, and while a non-superuser owns the schema; it runs once none holds."""
    role = "ab_trap_creator"
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DO $$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN END $$")
    for version in [None] + releases():
        db = "ab_trap"
        with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {db}")
        with psycopg.connect(conninfo(db), autocommit=True) as c:
            if version:
                c.execute(f"CREATE EXTENSION ab_testing VERSION '{version}'")
            c.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
            statement = "ALTER EXTENSION ab_testing UPDATE" if version else "CREATE EXTENSION ab_testing"
            if not version or release(version) < (0, 14, 0):
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                    c.execute(statement)
                doing = "updated only where" if version else "installed in a schema where"
                assert doing in e.value.diag.message_primary and e.value.diag.message_primary.endswith(f"so may: {role}")
                assert "REVOKE CREATE ON SCHEMA" in e.value.diag.message_hint
                assert one(c, "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'ab_testing')") == version
            plant_traps(c, role)
            c.execute(f"REVOKE CREATE ON SCHEMA public FROM {role}")
            if version and release(version) < (0, 12, 0):
                # Still the role's when added to an extension (it could own a trusted one).
                c.execute("ALTER EXTENSION plpgsql ADD FUNCTION public.trap_0(oid, integer)")
                c.execute("ALTER EXTENSION plpgsql ADD OPERATOR public.<>(oid, integer)")
                refused(c, statement, version, "holds no function or operator but its own",
                        "trap_0(oid,integer)", "<>(oid,integer)", "SET SCHEMA")
                c.execute("ALTER EXTENSION plpgsql DROP FUNCTION public.trap_0(oid, integer)")
                c.execute("ALTER EXTENSION plpgsql DROP OPERATOR public.<>(oid, integer)")
                # Handed to a superuser, as REASSIGN OWNED does with a departing role's objects.
                c.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
                refused(c, statement, version, "holds no function or operator but its own", "trap_1(oid,integer)")
                for k, (_, left, right) in enumerate(TRAPS):
                    c.execute(f"DROP FUNCTION public.trap_{k}({left}, {right}) CASCADE")
                c.execute("DROP FUNCTION public.ab_update_on_citus_worker(text)")
                c.execute("DROP TABLE public.trap_log")
                # A predefined role that may create there: its members may SET ROLE to it.
                c.execute("GRANT CREATE ON SCHEMA public TO pg_write_all_data")
                refused(c, statement, version, "so may: pg_write_all_data", "REVOKE CREATE ON SCHEMA")
                c.execute("REVOKE CREATE ON SCHEMA public FROM pg_write_all_data")
                # An owner could grant itself CREATE back while the update runs.
                c.execute(f"ALTER SCHEMA public OWNER TO {role}")
                c.execute(f"REVOKE CREATE ON SCHEMA public FROM {role}")
                refused(c, statement, version, f'owned by role "{role}"', "OWNER TO")
                c.execute("ALTER SCHEMA public OWNER TO pg_database_owner")
            c.execute(statement)
            assert one(c, "SELECT extversion FROM pg_extension WHERE extname = 'ab_testing'") == cargo_version()
            if not version or release(version) >= (0, 12, 0):
                assert c.execute("SELECT * FROM public.trap_log").fetchall() == [], version
            assert one(c, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", role) is False
        drop_db(db)
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP ROLE {role}")


def test_update_to_0_15_0_lets_administrators_run_the_rollout_functions():
    """An administrator granted before 0.14.0 (whose update did not grant the rollout
    functions) may run them after the update to 0.15.0, as after ab_grant_admin; an analyst
    still may not."""
    rollout = ["ab_rollout_check(text)", "ab_rollout_check(bigint)", "ab_rollout_due()", "ab_rollback(text, text)",
               "ab_rollback(bigint, text)", "ab_resume(text)", "ab_resume(bigint)", "ab_ship(text)", "ab_ship(bigint)",
               "ab_rollout_to(text, double precision)", "ab_rollout_to(bigint, double precision)"]
    for version in ("0.12.0", "0.13.0"):
        db = fresh_db("ab_upgrade_rollout_grants", version)
        with psycopg.connect(db, autocommit=True) as c:
            for r in ("ab_upgrade_ops", "ab_upgrade_reader"):
                c.execute(f"DO $$ BEGIN CREATE ROLE {r}; EXCEPTION WHEN duplicate_object THEN END $$")
            one(c, "SELECT ab_grant_admin('ab_upgrade_ops')")
            one(c, "SELECT ab_grant_analyst('ab_upgrade_reader')")
            c.execute("ALTER EXTENSION ab_testing UPDATE")
            for f in rollout:
                assert one(c, "SELECT has_function_privilege('ab_upgrade_ops', %s, 'EXECUTE')", f), (version, f)
                assert not one(c, "SELECT has_function_privilege('ab_upgrade_reader', %s, 'EXECUTE')", f), (version, f)
        drop_db("ab_upgrade_rollout_grants")


def test_updates_to_0_9_0_0_10_0_and_0_11_0_keep_who_may_run_the_analyses():
    """0.9.0 creates ab_analyze again (its result has more columns): every role that could run
    it before the update still can, and PUBLIC still cannot."""
    db = fresh_db("ab_upgrade_grants", "0.8.0")
    roles = ["ab_upgrade_analyst", "ab_upgrade_admin", "ab_upgrade_direct"]
    with psycopg.connect(db, autocommit=True) as c:
        for r in roles:
            c.execute(f"DO $$ BEGIN CREATE ROLE {r}; EXCEPTION WHEN duplicate_object THEN END $$")
        one(c, "SELECT ab_grant_analyst('ab_upgrade_analyst')")
        one(c, "SELECT ab_grant_admin('ab_upgrade_admin')")
        c.execute("GRANT USAGE ON SCHEMA public TO ab_upgrade_direct")
        c.execute("GRANT EXECUTE ON FUNCTION ab_analyze(text) TO ab_upgrade_direct")
        exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("granted", salt="g")))
        one(c, "SELECT ab_start_experiment(%s)", exp)
        c.execute("ALTER EXTENSION ab_testing UPDATE TO '0.9.0'")
        assert one(c, "SELECT extversion FROM pg_extension WHERE extname = 'ab_testing'") == "0.9.0"
        privilege = "SELECT has_function_privilege(%s, %s, 'EXECUTE')"
        for f in ["ab_analyze(text)", "ab_analyze(bigint)"]:
            assert one(c, privilege, "ab_upgrade_analyst", f) is True
            assert one(c, privilege, "ab_upgrade_admin", f) is True
            assert one(c, privilege, "public", f) is False
        assert one(c, privilege, "ab_upgrade_direct", "ab_analyze(text)") is True
        assert one(c, privilege, "ab_upgrade_direct", "ab_analyze(bigint)") is False
        # 0.9.0's ab_bayes: for whoever may run ab_summary (analysts and administrators).
        for f in ["ab_bayes(text, jsonb)", "ab_bayes(bigint, jsonb)"]:
            assert one(c, privilege, "ab_upgrade_analyst", f) is True
            assert one(c, privilege, "ab_upgrade_admin", f) is True
            assert one(c, privilege, "ab_upgrade_direct", f) is False
            assert one(c, privilege, "public", f) is False
        # The analyst runs it, and the new columns are stored and shown.
        c.execute("SET ROLE ab_upgrade_analyst")
        cols = [d.name for d in c.execute("SELECT * FROM ab_analyze('granted')").description]
        assert cols[-6:] == ["relative_lift_ci_lower", "relative_lift_ci_upper", "relative_lift_p_value", "margin",
                             "non_inferiority_p_value", "non_inferior"]
        c.execute("RESET ROLE")
        cols = [d.name for d in c.execute("SELECT * FROM ab_latest_insights LIMIT 0").description]
        assert cols[-6:] == ["relative_lift_ci_lower", "relative_lift_ci_upper", "relative_lift_p_value", "margin",
                             "non_inferiority_p_value", "non_inferior"]
        # 0.10.0's ab_timeline and ab_plot_timeline: for whoever may run ab_summary.
        c.execute("ALTER EXTENSION ab_testing UPDATE TO '0.10.0'")
        for f in ["ab_timeline(text, text)", "ab_timeline(bigint, text)", "ab_plot_timeline(text, text)",
                  "ab_plot_timeline(bigint, text)"]:
            assert one(c, privilege, "ab_upgrade_analyst", f) is True
            assert one(c, privilege, "ab_upgrade_admin", f) is True
            assert one(c, privilege, "ab_upgrade_direct", f) is False
            assert one(c, privilege, "public", f) is False
        c.execute("SET ROLE ab_upgrade_analyst")
        assert c.execute("SELECT * FROM ab_timeline('granted')").fetchall() == []
        c.execute("RESET ROLE")
        # 0.11.0's metric sources: analysts read them, administrators register and drop them.
        c.execute("ALTER EXTENSION ab_testing UPDATE TO '0.11.0'")
        table = "SELECT has_table_privilege(%s, 'ab_metric_sources', %s)"
        for r in ["ab_upgrade_analyst", "ab_upgrade_admin"]:
            assert one(c, table, r, "SELECT") is True
        assert one(c, table, "ab_upgrade_admin", "INSERT") is True
        assert one(c, table, "ab_upgrade_analyst", "INSERT") is False
        assert one(c, table, "ab_upgrade_direct", "SELECT") is False
        for f in ["ab_create_metric_source(text, jsonb)", "ab_drop_metric_source(text)"]:
            assert one(c, privilege, "ab_upgrade_admin", f) is True
            assert one(c, privilege, "ab_upgrade_analyst", f) is False
            assert one(c, privilege, "public", f) is False
        c.execute("DROP TABLE IF EXISTS public.upgrade_events")
        c.execute("CREATE TABLE public.upgrade_events (user_id text, at timestamptz)")
        c.execute("GRANT SELECT ON public.upgrade_events TO ab_upgrade_admin")
        c.execute("SET ROLE ab_upgrade_admin")
        one(c, "SELECT ab_create_metric_source('events', %s)",
            Jsonb({"relation": "public.upgrade_events", "user_column": "user_id", "time_column": "at"}))
        one(c, "SELECT ab_drop_metric_source('events')")
        c.execute("RESET ROLE")
    drop_db("ab_upgrade_grants")
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        for r in roles:
            c.execute(f"DROP ROLE IF EXISTS {r}")



def test_upgrade_to_0_13_0_grants_bulk_recording_to_whoever_could_record():
    """0.13.0 adds ab_record_results: the update grants it to every role that could run
    ab_record_result (application and administrator roles, and a direct grant), not to
    analysts or PUBLIC; after it, the application role records a batch."""
    db = fresh_db("ab_upgrade_bulk", "0.12.0")
    roles = ["ab_upgrade_bulk_app", "ab_upgrade_bulk_analyst", "ab_upgrade_bulk_admin", "ab_upgrade_bulk_direct"]
    with psycopg.connect(db, autocommit=True) as c:
        for r in roles:
            c.execute(f"DO $$ BEGIN CREATE ROLE {r}; EXCEPTION WHEN duplicate_object THEN END $$")
        one(c, "SELECT ab_grant_app('ab_upgrade_bulk_app')")
        one(c, "SELECT ab_grant_analyst('ab_upgrade_bulk_analyst')")
        one(c, "SELECT ab_grant_admin('ab_upgrade_bulk_admin')")
        c.execute("GRANT USAGE ON SCHEMA public TO ab_upgrade_bulk_direct")
        c.execute("GRANT EXECUTE ON FUNCTION ab_record_result(text, text, double precision, text, text) "
                  "TO ab_upgrade_bulk_direct")
        exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("bulk granted", salt="bg")))
        one(c, "SELECT ab_start_experiment(%s)", exp)
        one(c, "SELECT ab_get_variant(%s, 'u1')", exp)
        c.execute("ALTER EXTENSION ab_testing UPDATE TO '0.13.0'")
        privilege = "SELECT has_function_privilege(%s, %s, 'EXECUTE')"
        for f in ["ab_record_results(text, text[], double precision[], text[], text[], timestamptz[])",
                  "ab_record_results(bigint, text[], double precision[], text[], text[], timestamptz[])"]:
            assert one(c, privilege, "ab_upgrade_bulk_app", f) is True
            assert one(c, privilege, "ab_upgrade_bulk_admin", f) is True
            assert one(c, privilege, "ab_upgrade_bulk_direct", f) is True
            assert one(c, privilege, "ab_upgrade_bulk_analyst", f) is False
            assert one(c, privilege, "public", f) is False
        c.execute("SET ROLE ab_upgrade_bulk_app")
        assert one(c, "SELECT ab_record_results('bulk granted', %s, %s, %s)",
                   ["conversion_rate", "conversion_rate"], [1.0, 0.0], ["u1", "u2"]) == 1
        c.execute("RESET ROLE")
        one(c, "SELECT ab_revoke_app('ab_upgrade_bulk_app')")
        assert one(c, privilege, "ab_upgrade_bulk_app",
                   "ab_record_results(text, text[], double precision[], text[], text[], timestamptz[])") is False
    drop_db("ab_upgrade_bulk")
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        for r in roles:
            c.execute(f"DROP ROLE IF EXISTS {r}")

def test_update_keeps_ab_analyze_for_a_role_whose_name_holds_a_comma_and_a_bar():
    """0.9.0 recreated ab_analyze and gave it back to whoever could run it, through a list that
    a role named with "," or "|" broke (the update failed): the update from 0.8.0 keeps it."""
    role = "ab upgrade,analyst|x"
    db = fresh_db("ab_upgrade_analyze", "0.8.0")
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(f'DO $$ BEGIN CREATE ROLE "{role}"; EXCEPTION WHEN duplicate_object THEN END $$')
        c.execute(f'GRANT EXECUTE ON FUNCTION ab_analyze(text), ab_analyze(bigint) TO "{role}"')
        c.execute("ALTER EXTENSION ab_testing UPDATE")
        for f in ("ab_analyze(text)", "ab_analyze(bigint)"):
            assert one(c, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", role, f) is True, f
    drop_db("ab_upgrade_analyze")
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_upgrade_to_0_14_0_lets_whoever_could_break_down_run_the_impact_functions():
    """0.14.0 adds ab_interactions, ab_differential_impact, ab_funnel and ab_retention: the
    update grants them to every
    role that could run ab_breakdown (analysts, administrators, a direct grant), not to
    application roles or PUBLIC."""
    db = fresh_db("ab_upgrade_impact", "0.13.0")
    roles = ["ab_upgrade_impact_app", "ab_upgrade_impact_analyst", "ab_upgrade_impact_admin",
             "ab_upgrade_impact_direct"]
    with psycopg.connect(db, autocommit=True) as c:
        for r in roles:
            c.execute(f"DO $$ BEGIN CREATE ROLE {r}; EXCEPTION WHEN duplicate_object THEN END $$")
        one(c, "SELECT ab_grant_app('ab_upgrade_impact_app')")
        one(c, "SELECT ab_grant_analyst('ab_upgrade_impact_analyst')")
        one(c, "SELECT ab_grant_admin('ab_upgrade_impact_admin')")
        c.execute("GRANT USAGE ON SCHEMA public TO ab_upgrade_impact_direct")
        c.execute("GRANT EXECUTE ON FUNCTION ab_breakdown(text, text) TO ab_upgrade_impact_direct")
        c.execute("ALTER EXTENSION ab_testing UPDATE TO '0.14.0'")
        privilege = "SELECT has_function_privilege(%s, %s, 'EXECUTE')"
        for f in ["ab_interactions(text)", "ab_interactions(bigint)", "ab_differential_impact(text)",
                  "ab_differential_impact(bigint)", "ab_funnel(text)", "ab_funnel(bigint)", "ab_retention(text)",
                  "ab_retention(bigint)"]:
            assert one(c, privilege, "ab_upgrade_impact_analyst", f) is True
            assert one(c, privilege, "ab_upgrade_impact_admin", f) is True
            assert one(c, privilege, "ab_upgrade_impact_direct", f) is True
            assert one(c, privilege, "ab_upgrade_impact_app", f) is False
            assert one(c, privilege, "public", f) is False
    drop_db("ab_upgrade_impact")
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        for r in roles:
            c.execute(f"DROP ROLE IF EXISTS {r}")


def test_new_library_on_a_0_9_0_schema_enrolls_as_before_until_the_update():
    """The 0.10.0 library on a database still at 0.9.0: experiments without breakdowns enroll
    and analyse as before, a definition with breakdowns is refused (55000) and nothing is
    created; after ALTER EXTENSION UPDATE the same definition stores the attributes."""
    db = fresh_db("ab_old_schema", "0.9.0")
    body = two_arms("segmented", salt="seg", breakdowns=["loan_type"])
    with psycopg.connect(db, autocommit=True) as c:
        plain = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("plain", salt="plain")))
        one(c, "SELECT ab_start_experiment(%s)", plain)
        assert one(c, "SELECT ab_get_variant(%s, 'u1', '{\"loan_type\": \"fha\"}') ->> 'variant'", plain) in ("a", "b")
        assert one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, 'u1')", plain) is True
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
            one(c, "SELECT ab_create_experiment(%s)", Jsonb(body))
        assert str(e.value).splitlines()[0] == "breakdowns need version 0.10.0 of the ab_testing schema"
        assert one(c, "SELECT count(*) FROM ab_experiments WHERE name = 'segmented'") == 0
        c.execute("ALTER EXTENSION ab_testing UPDATE")
        seg = one(c, "SELECT ab_create_experiment(%s)", Jsonb(body))
        one(c, "SELECT ab_start_experiment(%s)", seg)
        one(c, "SELECT ab_get_variant(%s, 'u1', '{\"loan_type\": \"fha\", \"x\": 1}')", seg)
        assert one(c, "SELECT attributes FROM ab_assignments WHERE experiment_id = %s", seg) == {"loan_type": "fha"}
        # Users enrolled before the update have no attributes: a segment of their own.
        assert one(c, "SELECT attributes FROM ab_assignments WHERE experiment_id = %s", plain) is None
    drop_db("ab_old_schema")


def test_new_library_on_a_0_10_0_schema_refuses_registered_sources_until_the_update():
    """The 0.11.0 library on a database still at 0.10.0: recorded metrics and an inline source
    work, an experiment naming a registered source is refused (55000) until ALTER EXTENSION
    UPDATE brings ab_metric_sources and ab_create_metric_source."""
    db = fresh_db("ab_old_sources", "0.10.0")
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE TABLE public.events (user_id text, at timestamptz)")
        source = {"relation": "public.events", "user_column": "user_id", "time_column": "at"}
        inline = two_arms("inline", salt="inline")
        inline["primary_metric"] = "events"
        inline["metrics"] = {"events": {"aggregation": "count", "source": source}}
        exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(inline))
        one(c, "SELECT ab_start_experiment(%s)", exp)
        one(c, "SELECT ab_get_variant(%s, 'u1')", exp)
        c.execute("INSERT INTO public.events VALUES ('u1', now())")
        means = [r[0] for r in c.execute("SELECT mean FROM ab_analyze(%s)", (exp,)) if r[0] is not None]
        assert means == [1.0]
        named = two_arms("named", salt="named")
        named["primary_metric"] = "events"
        named["metrics"] = {"events": {"aggregation": "count", "source": "events"}}
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
            one(c, "SELECT ab_create_experiment(%s)", Jsonb(named))
        assert str(e.value).splitlines()[0] == "metric sources need version 0.11.0 of the ab_testing schema"
        c.execute("ALTER EXTENSION ab_testing UPDATE")
        one(c, "SELECT ab_create_metric_source('events', %s)", Jsonb(source))
        assert one(c, "SELECT ab_create_experiment(%s)", Jsonb(named)) > 0
    drop_db("ab_old_sources")


def test_update_to_per_user_state_under_live_writers(dsn):
    """ALTER EXTENSION UPDATE from 0.6.0 while sessions opened before it keep recording (their
    plans were made for the old schema): no result is left out of the per-user state."""
    db = fresh_db("ab_upgrade_live", "0.6.0")
    with psycopg.connect(db, autocommit=True) as c:
        exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("live", salt="live")))
        one(c, "SELECT ab_start_experiment(%s)", exp)
        for i in range(50):
            one(c, "SELECT ab_get_variant(%s, %s)", exp, f"user-{i}")
    stop, recorded = threading.Event(), []

    def writer(k):
        rng = random.Random(k)
        with psycopg.connect(db, autocommit=True) as c:
            while not stop.is_set():
                if rng.random() < 0.3:
                    # Users in a fixed order, as the reference advises (crossed orders can deadlock).
                    with c.transaction():
                        for u in sorted(rng.sample(range(50), 3)):
                            one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, %s)", exp, f"user-{u}")
                else:
                    one(c, "SELECT ab_record_result(%s, 'conversion_rate', 0, %s)", exp, f"user-{rng.randrange(50)}")
                recorded.append(k)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    [t.start() for t in threads]
    time.sleep(0.5)
    with psycopg.connect(db, autocommit=True) as c:
        before = len(recorded)
        c.execute("ALTER EXTENSION ab_testing UPDATE")
        time.sleep(0.5)
        stop.set()
        [t.join() for t in threads]
        assert before > 10 and len(recorded) > before + 10, (before, len(recorded))
        assert one(c, "SELECT count(*) FROM ab_results") > 50
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
    drop_db("ab_upgrade_live")


@pytest.mark.citus
@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
def test_experiments_racing_into_one_layer_never_overlap(dsn, isolation):
    """Sessions creating experiments in the same layer at once: under READ COMMITTED they take
    turns, under REPEATABLE READ the losers fail with a serialization error (40001) and may
    retry; either way the ranges are disjoint and nothing is half made."""
    db = fresh_db("ab_layer_race")
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("SELECT ab_create_layer('contested', 10)")
    barrier = threading.Barrier(8)
    outcomes = []

    def create(k):
        with psycopg.connect(db) as c:
            c.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
            barrier.wait()
            try:
                one(c, "SELECT ab_create_experiment(%s)",
                    Jsonb(two_arms(f"racer {k}", layer={"name": "contested", "percentage": 20})))
                time.sleep(0.05)
                c.commit()
                outcomes.append("created")
            except psycopg.errors.SerializationFailure:
                c.rollback()
                outcomes.append("serialization")
            except psycopg.errors.ObjectNotInPrerequisiteState:
                c.rollback()
                outcomes.append("full")

    threads = [threading.Thread(target=create, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(db, autocommit=True) as c:
        ranges = c.execute("SELECT range_start, range_end FROM ab_layer_experiments ORDER BY 1").fetchall()
        assert one(c, "SELECT count(*) FROM ab_experiments") == len(ranges) == outcomes.count("created")
    for (s1, e1), (s2, e2) in zip(ranges, ranges[1:]):
        assert e1 <= s2
    assert all(s >= 1000 and e <= 10000 for s, e in ranges)
    if isolation == "read committed":
        # 90% free, 20% each: four fit, the others find the layer full.
        assert sorted(outcomes) == ["created"] * 4 + ["full"] * 4
    else:
        assert outcomes.count("created") >= 1 and set(outcomes) <= {"created", "serialization", "full"}
    drop_db("ab_layer_race")


@pytest.mark.citus
def test_lifecycle_changes_race_safely_with_applications(dsn):
    """Stops, allocation changes and a delete while clients assign and record: every result
    belongs to its user's variant, nothing deadlocks, and the only outcomes clients see are
    results, "not running" (NULL / false) and, once deleted, "does not exist"."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        exp = one(admin, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("racing")))
        one(admin, "SELECT ab_start_experiment(%s)", exp)
        deleted = threading.Event()
        stop = threading.Event()
        unexpected = []
        outcomes = {"variant": 0, "null": 0, "recorded": 0, "not recorded": 0, "gone": 0}
        lock = threading.Lock()

        def app(k):
            rng = random.Random(k)
            with psycopg.connect(dsn, autocommit=True) as c:
                while not stop.is_set():
                    user = f"racer-{rng.randrange(400)}"
                    try:
                        v = one(c, "SELECT ab_get_variant(%s, %s) ->> 'variant'", exp, user)
                        r = one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, %s)", exp, user)
                        with lock:
                            outcomes["variant" if v else "null"] += 1
                            outcomes["recorded" if r else "not recorded"] += 1
                    except psycopg.errors.UndefinedObject:
                        with lock:
                            outcomes["gone"] += 1
                        if not deleted.is_set():
                            unexpected.append("does not exist before the delete")
                    except Exception as e:  # anything else is a failure
                        unexpected.append(repr(e))

        threads = [threading.Thread(target=app, args=(k,)) for k in range(4)]
        [t.start() for t in threads]
        time.sleep(0.5)
        for pct in (70, 30, 50):
            admin.execute("UPDATE ab_variants SET traffic_allocation = CASE WHEN is_control THEN %s ELSE 100 - %s END "
                          "WHERE experiment_id = %s", (pct, pct, exp))
            time.sleep(0.3)
        one(admin, "SELECT ab_stop_experiment(%s)", exp)
        time.sleep(0.3)
        recorded_after_stop = one(admin, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp)
        time.sleep(0.3)
        assert one(admin, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == recorded_after_stop
        misattributed = one(admin, "SELECT count(*) FROM ab_results r JOIN ab_assignments a USING (experiment_id, user_id) "
                                   "WHERE r.experiment_id = %s AND a.variant_id <> r.variant_id", exp)
        deleted.set()
        one(admin, "SELECT ab_delete_experiment(%s)", exp)
        time.sleep(0.3)
        stop.set()
        [t.join(timeout=30) for t in threads]
        assert not any(t.is_alive() for t in threads), "a client is stuck"
        assert not unexpected, unexpected[:5]
        assert misattributed == 0
        assert outcomes["variant"] > 0 and outcomes["null"] > 0 and outcomes["gone"] > 0, outcomes
        assert one(admin, "SELECT count(*) FROM ab_results WHERE experiment_id = %s", exp) == 0


@pytest.fixture
def crash_cluster():
    env = {**os.environ, "AB_PGDIR": "/tmp/ab_crash_pg", "PGPORT": "5497"}
    script = os.path.join(ROOT, "scripts", "cluster.sh")
    subprocess.run([script, "destroy"], env=env, check=True)
    subprocess.run([script, "start"], env=env, check=True, stdout=subprocess.DEVNULL)
    info = psycopg.conninfo.make_conninfo(host="/tmp/ab_crash_pg", port="5497", user="postgres", dbname="postgres")
    with psycopg.connect(info, autocommit=True) as c:
        c.execute("CREATE EXTENSION ab_testing")
    yield info, lambda: subprocess.run([script, "start"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([script, "destroy"], env=env, check=True)


def test_every_acknowledged_result_survives_a_crash(crash_cluster):
    """SIGKILL the whole server in the middle of concurrent recording and experiment creation;
    after crash recovery every acknowledged result is there and no experiment is half made."""
    info, restart = crash_cluster
    with psycopg.connect(info, autocommit=True) as c:
        exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms("crash")))
        one(c, "SELECT ab_start_experiment(%s)", exp)
        for i in range(200):
            one(c, "SELECT ab_get_variant(%s, %s)", exp, f"user-{i}")
    acknowledged, created = [], []
    lock = threading.Lock()

    def recorder(k):
        n = 0
        try:
            with psycopg.connect(info, autocommit=True) as c:
                while True:
                    token = f"{k}-{n}"
                    n += 1
                    recorded = one(c, "SELECT ab_record_result(%s, 'conversion_rate', 1, %s, %s)", exp,
                                   f"user-{n % 200}", token)
                    if recorded:
                        with lock:
                            acknowledged.append(token)
        except psycopg.Error:
            return  # the server went away

    def creator():
        n = 0
        try:
            with psycopg.connect(info, autocommit=True) as c:
                while True:
                    one(c, "SELECT ab_create_experiment(%s)", Jsonb(two_arms(f"made-{n}")))
                    with lock:
                        created.append(f"made-{n}")
                    n += 1
        except psycopg.Error:
            return

    threads = [threading.Thread(target=recorder, args=(k,)) for k in range(3)] + [threading.Thread(target=creator)]
    [t.start() for t in threads]
    time.sleep(2.0)
    with open("/tmp/ab_crash_pg/data/postmaster.pid") as f:
        postmaster = int(f.readline())
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    for pid in [postmaster] + children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    [t.join(timeout=30) for t in threads]
    assert len(acknowledged) > 100 and len(created) > 5, (len(acknowledged), len(created))
    time.sleep(0.5)
    restart()
    with psycopg.connect(info, autocommit=True) as c:
        stored = {r[0] for r in c.execute("SELECT session_id FROM ab_results WHERE experiment_id = %s", (exp,))}
        lost = [t for t in acknowledged if t not in stored]
        assert not lost, f"{len(lost)} acknowledged results lost, e.g. {lost[:3]}"
        # The per-user state recovered with the results it summarises.
        assert c.execute(PER_USER_STATE_MISMATCHES).fetchall() == []
        names = {r[0] for r in c.execute("SELECT name FROM ab_experiments")}
        assert set(created) <= names
        half_made = one(c, "SELECT count(*) FROM ab_experiments e WHERE (SELECT count(*) FROM ab_variants v "
                           "WHERE v.experiment_id = e.id) <> 2")
        assert half_made == 0
        orphans = one(c, "SELECT count(*) FROM ab_variants v WHERE NOT EXISTS "
                         "(SELECT 1 FROM ab_experiments e WHERE e.id = v.experiment_id)")
        assert orphans == 0


def analysis_plans(c, exp):
    """The plans auto_explain reports for the statements ab_analyze runs, or None where
    auto_explain is not installed."""
    try:
        c.execute("LOAD 'auto_explain'")
    except psycopg.Error:
        return None
    for setting in ["log_min_duration = 0", "log_nested_statements = on", "log_level = notice"]:
        c.execute(f"SET auto_explain.{setting}")
    plans = []

    def handler(d):
        plans.append(d.message_primary)

    c.add_notice_handler(handler)
    c.execute("SELECT * FROM ab_analyze(%s)", (exp,)).fetchall()
    c.remove_notice_handler(handler)
    c.execute("SET auto_explain.log_min_duration = -1")
    return plans


def test_a_source_read_skips_the_history_before_the_experiment():
    """The constant bounds of a source's read (first enrollment, last enrollment + window) let
    PostgreSQL prune the partitions of a table partitioned by time and use an index on the
    time column, as docs/metrics.md says."""
    db = fresh_db("ab_source_plans")
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE TABLE public.events (user_id text, at timestamptz) PARTITION BY RANGE (at)")
        c.execute("CREATE TABLE public.events_old PARTITION OF public.events FOR VALUES FROM ('2020-01-01') TO ('2026-01-01')")
        c.execute("CREATE TABLE public.events_new PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2100-01-01')")
        c.execute("CREATE TABLE public.history (user_id text, at timestamptz)")
        c.execute("CREATE INDEX history_at ON public.history (at)")
        events = {"relation": "public.events", "user_column": "user_id", "time_column": "at"}
        history = {"relation": "public.history", "user_column": "user_id", "time_column": "at"}
        body = two_arms("bounded", salt="bounded", primary_metric="events", metrics={
            "events": {"aggregation": "count", "window": "7 days", "source": events},
            "history": {"aggregation": "count", "window": "7 days", "source": history}})
        exp = one(c, "SELECT ab_create_experiment(%s)", Jsonb(body))
        one(c, "SELECT ab_start_experiment(%s)", exp)
        for i in range(200):
            one(c, "SELECT ab_get_variant(%s, %s)", exp, f"u{i}")
        c.execute("UPDATE ab_assignments SET assigned_at = '2026-06-01'::timestamptz + substr(user_id, 2)::int * interval '1 minute' "
                  "WHERE experiment_id = %s", (exp,))
        for table in ["events", "history"]:
            # Years of history before the experiment, then one row per user a day after enrollment.
            c.execute(f"INSERT INTO public.{table} SELECT 'u' || (g % 200), '2021-01-01'::timestamptz + g * interval '10 minutes' "
                      "FROM generate_series(1, 100000) g")
            c.execute(f"INSERT INTO public.{table} SELECT user_id, assigned_at + interval '1 day' FROM ab_assignments "
                      "WHERE experiment_id = %s", (exp,))
            c.execute(f"ANALYZE public.{table}")
        means = {r[0]: r[1] for r in c.execute("SELECT metric_name, mean FROM ab_analyze(%s)", (exp,))}
        assert means == {"events": 1.0, "history": 1.0}
        plans = analysis_plans(c, exp)
        if plans is None:
            drop_db("ab_source_plans")
            pytest.skip("auto_explain is not installed with this PostgreSQL")
        reads = {t: [p for p in plans if "ab_moments" in p and f'"public"."{t}" s' in p] for t in ["events", "history"]}
        assert len(reads["events"]) == 1 and "events_new" in reads["events"][0], reads
        assert "events_old" not in reads["events"][0]
        assert len(reads["history"]) == 1 and "history_at" in reads["history"][0], reads
    drop_db("ab_source_plans")
