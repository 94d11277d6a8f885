-- 0.12.0 -> 0.13.0.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.
\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.13.0'" to load this file. \quit

-- ab_record_results: a batch of results in one statement (bulk loads and backfills), for the
-- roles given ab_grant_app, and for those that could run ab_record_result before this update.
CREATE FUNCTION "ab_record_results"(
	"experiment" TEXT, /* Option < & str > */
	"metric_names" TEXT[], /* Option < Array < '_, & str > > */
	"metric_values" double precision[], /* Option < Array < '_, f64 > > */
	"user_ids" TEXT[], /* Option < Array < '_, & str > > */
	"session_ids" TEXT[] DEFAULT NULL, /* Option < Array < '_, & str > > */
	"recorded_at" timestamp with time zone[] DEFAULT NULL /* Option < Array < '_, TimestampWithTimeZone > > */
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_record_results_wrapper';
CREATE FUNCTION "ab_record_results"(
	"experiment" bigint, /* Option < i64 > */
	"metric_names" TEXT[], /* Option < Array < '_, & str > > */
	"metric_values" double precision[], /* Option < Array < '_, f64 > > */
	"user_ids" TEXT[], /* Option < Array < '_, & str > > */
	"session_ids" TEXT[] DEFAULT NULL, /* Option < Array < '_, & str > > */
	"recorded_at" timestamp with time zone[] DEFAULT NULL /* Option < Array < '_, TimestampWithTimeZone > > */
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_record_results_by_id_wrapper';
ALTER FUNCTION ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]), ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]) FROM PUBLIC;
COMMENT ON FUNCTION ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]) IS 'Records a batch of results in one statement, row i being the i-th element of each array (session_ids and recorded_at may be NULL: none, now); returns the rows recorded. Rows of users without an assignment are skipped; a bad row (position in the message) fails the whole batch.';
COMMENT ON FUNCTION ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]) IS 'ab_record_results by experiment id.';
COMMENT ON FUNCTION ab_grant_app(name) IS 'Lets a role do what an application needs: ab_get_variant, ab_record_result, ab_record_results and reading experiment definitions.';
CREATE OR REPLACE FUNCTION ab_grant_app(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_get_variant(text, text, jsonb, text), '
                   '@extschema@.ab_get_variant(bigint, text, jsonb, text), '
                   '@extschema@.ab_record_result(text, text, double precision, text, text), '
                   '@extschema@.ab_record_result(bigint, text, double precision, text, text), '
                   '@extschema@.ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]), '
                   '@extschema@.ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_layer_group(text, text) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_experiment_overview TO %I', role);
END;
$$;

CREATE OR REPLACE FUNCTION ab_revoke_app(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_get_variant(text, text, jsonb, text), '
                   '@extschema@.ab_get_variant(bigint, text, jsonb, text), '
                   '@extschema@.ab_record_result(text, text, double precision, text, text), '
                   '@extschema@.ab_record_result(bigint, text, double precision, text, text), '
                   '@extschema@.ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]), '
                   '@extschema@.ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_layer_group(text, text) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_experiment_overview FROM %I', role);
END;
$$;

DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.oid = '@extschema@.ab_record_result(text, text, double precision, text, text)'::pg_catalog.regprocedure
          AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]), @extschema@.ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]) TO %s', grantee);
    END LOOP;
END;
$$;
-- end of ab_record_results

-- Recording at pool scale: room on ab_user_metrics' pages for its rows' updates to be HOT
-- (no new index entry). Only pages written from now on keep it: existing pages are
-- rewritten by VACUUM FULL or CLUSTER (see docs/performance.md), not by this update.
ALTER TABLE @extschema@.ab_user_metrics SET (fillfactor = 90);
