-- ab_testing 0.8.0 -> 0.9.0: ratio and capped metrics, binary CIs that agree with their
-- p-values, the relative lift's CI and p-value, guardrails with non-inferiority margins.
-- Metric definitions are JSON in ab_experiments.metrics and every statistic is computed at
-- analysis time, so existing experiments keep their definitions; their binary CIs are the
-- score intervals from the next analysis on (rows already in ab_insights keep theirs).
-- * ab_insights: six columns for the relative lift's CI and p-value and the guardrails;
--   ab_latest_insights shows them.
-- * ab_analyze returns them too: its result type changes, so it is dropped and created
--   again, with its attributes, comment and every role's EXECUTE privilege as before.
-- * ab_bayes (the posterior under a prior); ab_grant_analyst and ab_revoke_analyst cover it,
--   and every role that may run ab_summary may run it.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.9.0'" to load this file. \quit

COMMENT ON COLUMN ab_experiments.metrics IS 'Per metric: {"type": continuous|binary|ratio, "aggregation": mean|sum|count|max per user, "direction": higher|lower is better, "mde", "margin" (a guardrail''s non-inferiority margin), "cap"; a ratio also "numerator" and "denominator"}.';
COMMENT ON COLUMN ab_insights.metric_type IS 'continuous, binary or ratio.';
COMMENT ON COLUMN ab_insights.test IS 'welch, z or stratified (bandit experiments), with -sequential in sequential mode.';
COMMENT ON FUNCTION ab_proportion_test(bigint, bigint, bigint, bigint, double precision) IS 'Two-proportion z-test (pooled z, as statsmodels proportions_ztest), with the score CI of diff = b - a that inverts the same test.';

ALTER TABLE ab_insights
    ADD COLUMN relative_lift_ci_lower float8,
    ADD COLUMN relative_lift_ci_upper float8,
    ADD COLUMN relative_lift_p_value float8,
    ADD COLUMN margin float8,
    ADD COLUMN non_inferiority_p_value float8,
    ADD COLUMN non_inferior boolean;
COMMENT ON COLUMN ab_insights.relative_lift_ci_lower IS 'Lower bound of the confidence interval of relative_lift (delta method).';
COMMENT ON COLUMN ab_insights.relative_lift_ci_upper IS 'Upper bound of the confidence interval of relative_lift (delta method).';
COMMENT ON COLUMN ab_insights.relative_lift_p_value IS 'Two-sided p-value of relative_lift against 0 (delta method).';
COMMENT ON COLUMN ab_insights.margin IS 'The metric''s non-inferiority margin (a guardrail), in its units; NULL without one.';
COMMENT ON COLUMN ab_insights.non_inferiority_p_value IS 'One-sided p-value of "the variant is worse than the control by the margin or more".';
COMMENT ON COLUMN ab_insights.non_inferior IS 'Shown to be no worse than the control by the margin: the non-inferiority p-value, adjusted across the metric''s treatments, below alpha.';

-- The view's i.* was expanded when it was created: again, with the new columns at its end.
CREATE OR REPLACE VIEW ab_latest_insights AS
SELECT e.name AS experiment, i.*
FROM @extschema@.ab_insights i
JOIN @extschema@.ab_experiments e ON e.id = i.experiment_id
WHERE i.computed_at = (SELECT max(j.computed_at) FROM @extschema@.ab_insights j WHERE j.experiment_id = i.experiment_id);

-- Who may run ab_analyze now (roles given ab_grant_analyst or ab_grant_admin, or a GRANT of
-- their own), kept for this transaction to give them the same right on the new functions.
SELECT pg_catalog.set_config('ab_testing.analyze_grantees', coalesce(pg_catalog.string_agg(DISTINCT
           pg_catalog.format('%s|%s', p.oid::regprocedure, CASE a.grantee WHEN 0 THEN 'PUBLIC'
                                                            ELSE a.grantee::regrole::text END), ','), ''), true)
FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
WHERE p.oid IN ('@extschema@.ab_analyze(text)'::regprocedure, '@extschema@.ab_analyze(bigint)'::regprocedure)
  AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner;

DROP FUNCTION ab_analyze(text);
DROP FUNCTION ab_analyze(bigint);
CREATE FUNCTION "ab_analyze"(
	"experiment" TEXT /* & str */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"std_dev" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"effect_size" double precision,  /* Option < f64 > */
	"metric_type" TEXT,  /* String */
	"test" TEXT,  /* Option < String > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"chance_to_beat_control" double precision,  /* Option < f64 > */
	"expected_loss" double precision,  /* Option < f64 > */
	"users_needed" bigint,  /* Option < i64 > */
	"srm_p_value" double precision,  /* Option < f64 > */
	"cuped_diff" double precision,  /* Option < f64 > */
	"cuped_ci_lower" double precision,  /* Option < f64 > */
	"cuped_ci_upper" double precision,  /* Option < f64 > */
	"cuped_p_value" double precision,  /* Option < f64 > */
	"cuped_variance_reduction" double precision,  /* Option < f64 > */
	"relative_lift_ci_lower" double precision,  /* Option < f64 > */
	"relative_lift_ci_upper" double precision,  /* Option < f64 > */
	"relative_lift_p_value" double precision,  /* Option < f64 > */
	"margin" double precision,  /* Option < f64 > */
	"non_inferiority_p_value" double precision,  /* Option < f64 > */
	"non_inferior" bool  /* Option < bool > */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_analyze_wrapper';
CREATE FUNCTION "ab_analyze"(
	"experiment" bigint /* i64 */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"std_dev" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"effect_size" double precision,  /* Option < f64 > */
	"metric_type" TEXT,  /* String */
	"test" TEXT,  /* Option < String > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"chance_to_beat_control" double precision,  /* Option < f64 > */
	"expected_loss" double precision,  /* Option < f64 > */
	"users_needed" bigint,  /* Option < i64 > */
	"srm_p_value" double precision,  /* Option < f64 > */
	"cuped_diff" double precision,  /* Option < f64 > */
	"cuped_ci_lower" double precision,  /* Option < f64 > */
	"cuped_ci_upper" double precision,  /* Option < f64 > */
	"cuped_p_value" double precision,  /* Option < f64 > */
	"cuped_variance_reduction" double precision,  /* Option < f64 > */
	"relative_lift_ci_lower" double precision,  /* Option < f64 > */
	"relative_lift_ci_upper" double precision,  /* Option < f64 > */
	"relative_lift_p_value" double precision,  /* Option < f64 > */
	"margin" double precision,  /* Option < f64 > */
	"non_inferiority_p_value" double precision,  /* Option < f64 > */
	"non_inferior" bool  /* Option < bool > */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_analyze_by_id_wrapper';
ALTER FUNCTION ab_analyze(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_analyze(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_analyze(text), ab_analyze(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ab_analyze(text) IS 'Per metric and variant: per-user statistics and the test against the control (Welch''s t-test, a z-test for binary metrics, the delta method for ratio metrics, always-valid in sequential mode), with CUPED, Bayesian and power columns; stored in ab_insights.';
COMMENT ON FUNCTION ab_analyze(bigint) IS 'ab_analyze by experiment id.';

DO $$
DECLARE
    g text;
BEGIN
    FOREACH g IN ARRAY pg_catalog.string_to_array(pg_catalog.current_setting('ab_testing.analyze_grantees'), ',') LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', pg_catalog.split_part(g, '|', 1), pg_catalog.split_part(g, '|', 2));
    END LOOP;
END
$$;

CREATE FUNCTION "ab_bayes"(
	"experiment" TEXT, /* Option < & str > */
	"prior" jsonb DEFAULT NULL /* Option < JsonB > */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"effect" TEXT,  /* String */
	"prior_mean" double precision,  /* Option < f64 > */
	"prior_sd" double precision,  /* Option < f64 > */
	"posterior_mean" double precision,  /* Option < f64 > */
	"posterior_sd" double precision,  /* Option < f64 > */
	"credible_lower" double precision,  /* Option < f64 > */
	"credible_upper" double precision,  /* Option < f64 > */
	"chance_to_beat_control" double precision,  /* Option < f64 > */
	"risk_of_shipping" double precision,  /* Option < f64 > */
	"risk_of_keeping_control" double precision  /* Option < f64 > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_bayes_wrapper';
CREATE FUNCTION "ab_bayes"(
	"experiment" bigint, /* Option < i64 > */
	"prior" jsonb DEFAULT NULL /* Option < JsonB > */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"effect" TEXT,  /* String */
	"prior_mean" double precision,  /* Option < f64 > */
	"prior_sd" double precision,  /* Option < f64 > */
	"posterior_mean" double precision,  /* Option < f64 > */
	"posterior_sd" double precision,  /* Option < f64 > */
	"credible_lower" double precision,  /* Option < f64 > */
	"credible_upper" double precision,  /* Option < f64 > */
	"chance_to_beat_control" double precision,  /* Option < f64 > */
	"risk_of_shipping" double precision,  /* Option < f64 > */
	"risk_of_keeping_control" double precision  /* Option < f64 > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_bayes_by_id_wrapper';
ALTER FUNCTION ab_bayes(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_bayes(bigint, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_bayes(text, jsonb), ab_bayes(bigint, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION ab_bayes(text, jsonb) IS 'Per metric and treatment: the posterior of the effect under a Gaussian prior (the argument''s, else the metric''s prior, else flat), with a credible interval, the chance to beat the control and the expected loss of shipping it and of keeping the control.';
COMMENT ON FUNCTION ab_bayes(bigint, jsonb) IS 'ab_bayes by experiment id.';
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view and run ab_analyze, ab_summary, ab_bayes and ab_plot.';

DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid = '@extschema@.ab_summary(text)'::regprocedure AND a.privilege_type = 'EXECUTE'
               AND a.grantee <> p.proowner LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb) TO %s', r);
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
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history '
                   'FROM %I', role);
END;
$$;
