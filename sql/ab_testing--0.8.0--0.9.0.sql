-- ab_testing 0.8.0 -> 0.9.0: ratio and capped metrics, binary CIs that agree with their
-- p-values, the relative lift's CI and p-value, guardrails with non-inferiority margins.
-- Metric definitions are JSON in ab_experiments.metrics and every statistic is computed at
-- analysis time, so existing experiments keep their definitions; their binary CIs are the
-- score intervals from the next analysis on (rows already in ab_insights keep theirs).
-- * ab_insights: six columns for the relative lift's CI and p-value and the guardrails;
--   ab_latest_insights shows them.
-- * ab_analyze returns them too: its result type changes, so it is dropped and created
--   again, with its attributes, comment and every role's EXECUTE privilege as before.
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
