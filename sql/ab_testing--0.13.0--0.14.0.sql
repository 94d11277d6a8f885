-- 0.13.0 -> 0.14.0.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.
\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.14.0'" to load this file. \quit

-- Regression adjustment with several covariates, and cluster-randomized experiments: ab_adjusted (a metric's "covariates" live in
-- ab_experiments.metrics, so no table changes), with the grants and pinned search_path of
-- ab_breakdown; ab_grant_analyst and ab_revoke_analyst cover it.
CREATE FUNCTION "ab_adjusted"(
	"experiment" TEXT /* & str */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"clusters" bigint,  /* Option < i64 > */
	"covariates" INT,  /* i32 */
	"adjusted_mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"std_error" double precision,  /* Option < f64 > */
	"unadjusted_std_error" double precision,  /* Option < f64 > */
	"variance_reduction" double precision,  /* Option < f64 > */
	"variance_reduction_vs_cuped" double precision,  /* Option < f64 > */
	"srm_p_value" double precision  /* Option < f64 > */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_adjusted_wrapper';
CREATE FUNCTION "ab_adjusted"(
	"experiment" bigint /* i64 */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"clusters" bigint,  /* Option < i64 > */
	"covariates" INT,  /* i32 */
	"adjusted_mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"std_error" double precision,  /* Option < f64 > */
	"unadjusted_std_error" double precision,  /* Option < f64 > */
	"variance_reduction" double precision,  /* Option < f64 > */
	"variance_reduction_vs_cuped" double precision,  /* Option < f64 > */
	"srm_p_value" double precision  /* Option < f64 > */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_adjusted_by_id_wrapper';
ALTER FUNCTION ab_adjusted(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_adjusted(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_adjusted(text), ab_adjusted(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ab_adjusted(text) IS 'Per metric declaring "covariates" (in a cluster-randomized experiment, every continuous and binary metric) and variant: the metric adjusted for its covariates (Lin''s regression adjustment: per arm, OLS on the covariates centered at their mean over every arm; strata as indicators), HC1 robust standard errors (cluster-robust in a cluster-randomized experiment), each treatment against the control, the share of the variance removed against no adjustment and against single-covariate CUPED on the first covariate, and the sample ratio check of the randomization unit.';
COMMENT ON FUNCTION ab_adjusted(bigint) IS 'ab_adjusted by experiment id.';
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view (stored analyses through ab_latest_insights and ab_insight_history) and run ab_analyze, ab_summary, ab_bayes, ab_plot, ab_timeline, ab_plot_timeline, ab_breakdown and ab_adjusted.';

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
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_adjusted(text), @extschema@.ab_adjusted(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_period_srm_p_value(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, @extschema@.ab_insight_history, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
                   'TO %I', role);
    -- Stored analyses through the views, which show a row read from metric sources only to
    -- roles that may read them; of the table itself, only the columns that say which rows exist.
    EXECUTE format('GRANT SELECT (id, experiment_id, computed_at, metric_name, variant, is_control) '
                   'ON @extschema@.ab_insights TO %I', role);
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
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_adjusted(text), @extschema@.ab_adjusted(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_period_srm_p_value(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, @extschema@.ab_insight_history, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
                   'FROM %I', role);
END;
$$;

-- Every role that may run ab_breakdown may run ab_adjusted.
DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid = '@extschema@.ab_breakdown(text, text)'::regprocedure AND a.privilege_type = 'EXECUTE'
               AND a.grantee <> p.proowner LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_adjusted(text), @extschema@.ab_adjusted(bigint) TO %s', r);
    END LOOP;
END
$$;

-- Cluster-randomized experiments: the unit an experiment buckets by.
ALTER TABLE ab_experiments ADD COLUMN randomization_unit text CONSTRAINT ab_experiments_randomization_unit_check
                     CHECK (randomization_unit IS NULL OR randomization_unit = ANY (breakdowns));
COMMENT ON COLUMN ab_experiments.randomization_unit IS 'A cluster-randomized experiment''s unit: the attribute (one of breakdowns) whose value every user of a cluster shares; users are bucketed by it. NULL: users are randomized one by one.';
-- End of regression adjustment and cluster-randomized experiments.
