-- Least privilege, hijack-proof SECURITY DEFINER functions, and the audit trail.
SELECT ab_create_experiment('{"name": "secure", "experiment_type": "prompt", "primary_metric": "resolution_rate",
  "salt": "secure", "min_sample_size": 2,
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS e \gset
SELECT ab_start_experiment(:e);

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ab_nobody', 'ab_app', 'ab_analyst', 'ab_admin', 'ab_hostile'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('DROP OWNED BY %I', r);
            EXECUTE format('DROP ROLE %I', r);
        END IF;
    END LOOP;
END;
$$;
CREATE ROLE ab_nobody;
CREATE ROLE ab_app;
CREATE ROLE ab_analyst;
CREATE ROLE ab_admin;
SELECT ab_grant_app('ab_app'), ab_grant_analyst('ab_analyst'), ab_grant_admin('ab_admin');

-- PUBLIC can compute statistics and change nothing.
SET ROLE ab_nobody;
SELECT p_value FROM ab_welch_test(10, 1, 1, 10, 2, 1);
SELECT expect_error($$SELECT ab_get_variant('secure', 'u1')$$);
SELECT expect_error($$SELECT ab_record_result('secure', 'resolution_rate', 1, 'u1')$$);
SELECT expect_error($$SELECT ab_create_experiment('{}')$$);
SELECT expect_error($$SELECT ab_stop_experiment('secure')$$);
SELECT expect_error($$SELECT * FROM ab_analyze('secure')$$);
SELECT expect_error($$SELECT count(*) FROM ab_results$$);
SELECT expect_error($$INSERT INTO ab_assignments VALUES (1, 'u9', 1)$$);
SELECT expect_error($$SELECT ab_grant_app('ab_nobody')$$);
RESET ROLE;

-- The application assigns and records, and nothing else.
SET ROLE ab_app;
SELECT ab_get_variant('secure', 'u' || g) ->> 'variant' AS variant FROM generate_series(1, 4) g;
SELECT ab_record_result('secure', 'resolution_rate', g % 2, 'u' || g) FROM generate_series(1, 4) g;
SELECT ab_get_experiment('secure') ->> 'status' AS status;
SELECT name, status FROM ab_experiment_overview ORDER BY name;
SELECT expect_error($$DELETE FROM ab_results$$);
SELECT expect_error($$UPDATE ab_results SET metric_value = 0$$);
SELECT expect_error($$UPDATE ab_variants SET traffic_allocation = 90$$);
SELECT expect_error($$SELECT ab_stop_experiment('secure')$$);
SELECT expect_error($$SELECT ab_delete_experiment('secure')$$);
SELECT expect_error($$SELECT ab_rebuild_user_metrics('secure')$$);
SELECT expect_error($$DELETE FROM ab_user_metrics$$);
SELECT expect_error($$SELECT * FROM ab_analyze('secure')$$);
SELECT expect_error($$SELECT count(*) FROM ab_results$$);
RESET ROLE;

-- A hostile role that may call the functions plants its own operators and functions in
-- front of pg_catalog; none of them runs.
CREATE ROLE ab_hostile;
SELECT ab_grant_app('ab_hostile'), ab_grant_analyst('ab_hostile');
CREATE SCHEMA hostile AUTHORIZATION ab_hostile;
SET ROLE ab_hostile;
CREATE FUNCTION hostile.trap(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'hijacked: % ran hostile code', current_user; END $$;
CREATE FUNCTION hostile.trap(text, text) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'hijacked: % ran hostile code', current_user; END $$;
CREATE OPERATOR hostile.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = hostile.trap);
CREATE OPERATOR hostile.= (LEFTARG = text, RIGHTARG = text, FUNCTION = hostile.trap);
CREATE FUNCTION hostile.now() RETURNS timestamptz LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'hijacked: % ran hostile code', current_user; END $$;
CREATE FUNCTION hostile.to_char(timestamptz, text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'hijacked: % ran hostile code', current_user; END $$;
CREATE FUNCTION hostile.quote_ident(text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'hijacked: % ran hostile code', current_user; END $$;
-- What ab_record_result's statements compute, written without a schema: a sum, a comparison
-- of names, the smallest name, the oids of the catalog.
CREATE FUNCTION hostile.trap_plus(bigint, integer) RETURNS bigint LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'hijacked: % ran hostile code', current_user; END $$;
CREATE OPERATOR hostile.+ (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = hostile.trap_plus);
CREATE OPERATOR hostile.> (LEFTARG = text, RIGHTARG = text, FUNCTION = hostile.trap);
CREATE FUNCTION hostile.trap(oid, oid) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'hijacked: % ran hostile code', current_user; END $$;
CREATE OPERATOR hostile.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = hostile.trap);
CREATE FUNCTION hostile.trap_step(text, text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'hijacked: % ran hostile code', current_user; END $$;
CREATE AGGREGATE hostile.min(text) (SFUNC = hostile.trap_step, STYPE = text);
SET search_path = hostile, pg_catalog, public;
SELECT expect_error('SELECT 1::bigint = 1::bigint') AS "the trap is armed";
RESET search_path;
RESET ROLE;
-- Force this backend to reload the experiment, so the calls below also take the slow paths.
UPDATE ab_experiments SET description = 'reloaded' WHERE id = :e;
SET ROLE ab_hostile;
SET search_path = hostile, pg_catalog, public;
SELECT public.ab_get_variant('secure', 'hostile-' || g) IS NOT NULL AS assigned FROM generate_series(1, 3) g;
SELECT public.ab_get_variant(:e, 'u1') ->> 'variant' AS variant;
SELECT public.ab_record_result('secure', 'resolution_rate', 1, 'hostile-1') AS recorded;
-- A name the experiment has no result under yet (its count of names is read), then the
-- prepared statements again, now analysed under this search_path, and a missing experiment.
SELECT public.ab_record_result('secure', 'hostile_metric', 1, 'hostile-1') AS recorded;
SELECT public.ab_record_result(:e, 'resolution_rate', 0, 'hostile-' || g) AS recorded FROM generate_series(1, 3) g;
SELECT expect_error($$SELECT public.ab_record_result('secures', 'resolution_rate', 1, 'hostile-1')$$);
SELECT expect_error($$SELECT public.ab_get_variant('secures', 'hostile-1')$$);
SELECT public.ab_get_experiment('secure') ->> 'name' AS name;
SELECT count(*) AS rows FROM public.ab_analyze('secure');
SELECT length(public.ab_summary('secure')) > 0 AS summary;
RESET search_path;
RESET ROLE;

-- Administration: delegated explicitly, and audited.
SET ROLE ab_admin;
SELECT ab_stop_experiment('secure', true) ->> 'status' AS status;
SELECT ab_rebuild_user_metrics('secure') AS rebuilt;
SELECT ab_delete_experiment('secure');
RESET ROLE;
SELECT experiment_name, action, detail, role_name FROM ab_audit WHERE experiment_id = :e ORDER BY id;

-- Revoking takes the rights back.
SELECT ab_revoke_app('ab_app'), ab_revoke_analyst('ab_analyst'), ab_revoke_admin('ab_admin'),
       ab_revoke_app('ab_hostile'), ab_revoke_analyst('ab_hostile');
SET ROLE ab_app;
SELECT expect_error($$SELECT ab_get_variant('secure', 'u1')$$);
RESET ROLE;
SET ROLE ab_admin;
SELECT expect_error($$SELECT ab_create_experiment('{}')$$);
RESET ROLE;
DROP SCHEMA hostile CASCADE;
DROP OWNED BY ab_nobody, ab_app, ab_analyst, ab_admin, ab_hostile;
DROP ROLE ab_nobody, ab_app, ab_analyst, ab_admin, ab_hostile;
