-- 0.9.0 -> 0.10.0: results over time.
-- * ab_timeline (per day, the cumulative comparison with the control) and ab_plot_timeline
--   (its line chart); ab_grant_analyst and ab_revoke_analyst cover them, and every role that
--   may run ab_summary may run them.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.10.0'" to load this file. \quit

CREATE FUNCTION "ab_timeline"(
	"experiment" TEXT, /* Option < & str > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"day" date,  /* Date */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"test" TEXT  /* Option < String > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_timeline_wrapper';
CREATE FUNCTION "ab_timeline"(
	"experiment" bigint, /* Option < i64 > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"day" date,  /* Date */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"test" TEXT  /* Option < String > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_timeline_by_id_wrapper';
CREATE FUNCTION "ab_plot_timeline"(
	"experiment" TEXT, /* Option < & str > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_plot_timeline_wrapper';
CREATE FUNCTION "ab_plot_timeline"(
	"experiment" bigint, /* Option < i64 > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_plot_timeline_by_id_wrapper';
ALTER FUNCTION ab_timeline(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_timeline(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot_timeline(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot_timeline(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_timeline(text, text), ab_timeline(bigint, text), ab_plot_timeline(text, text),
    ab_plot_timeline(bigint, text) FROM PUBLIC;
COMMENT ON FUNCTION ab_timeline(text, text) IS 'Per day since the first enrollment (in the session''s TimeZone), metric and variant: the comparison with the control over the users enrolled and the results recorded by the end of that day (cumulative; without CUPED; ratio metrics excluded).';
COMMENT ON FUNCTION ab_timeline(bigint, text) IS 'ab_timeline by experiment id.';
COMMENT ON FUNCTION ab_plot_timeline(text, text) IS 'An SVG line chart of each treatment''s cumulative difference from the control on a metric (the primary one by default), day by day, with its CI as a band.';
COMMENT ON FUNCTION ab_plot_timeline(bigint, text) IS 'ab_plot_timeline by experiment id.';
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view and run ab_analyze, ab_summary, ab_bayes, ab_plot, ab_timeline and ab_plot_timeline.';

DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid = '@extschema@.ab_summary(text)'::regprocedure AND a.privilege_type = 'EXECUTE'
               AND a.grantee <> p.proowner LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                                  '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text) TO %s', r);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ab_grant_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history '
                   'TO %I', role);
END;
$$;

CREATE OR REPLACE FUNCTION ab_revoke_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history '
                   'FROM %I', role);
END;
$$;
