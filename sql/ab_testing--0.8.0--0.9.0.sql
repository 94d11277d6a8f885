-- ab_testing 0.8.0 -> 0.9.0: ratio metrics; binary CIs that agree with their p-values.
-- Both live in the library (definitions are JSON in ab_experiments.metrics; the CI is
-- computed at analysis time), so the schema changes only in its comments. Existing
-- experiments keep their definitions; their binary CIs are the score intervals from the
-- next analysis on (the rows already stored in ab_insights keep the intervals of their time).
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.9.0'" to load this file. \quit

COMMENT ON COLUMN ab_experiments.metrics IS 'Per metric: {"type": continuous|binary|ratio, "aggregation": mean|sum|count|max per user, "direction": higher|lower is better, "mde"; a ratio also "numerator" and "denominator"}.';
COMMENT ON COLUMN ab_insights.metric_type IS 'continuous, binary or ratio.';
COMMENT ON COLUMN ab_insights.test IS 'welch, z or stratified (bandit experiments), with -sequential in sequential mode.';
COMMENT ON FUNCTION ab_proportion_test(bigint, bigint, bigint, bigint, double precision) IS 'Two-proportion z-test (pooled z, as statsmodels proportions_ztest), with the score CI of diff = b - a that inverts the same test.';
COMMENT ON FUNCTION ab_analyze(text) IS 'Per metric and variant: per-user statistics and the test against the control (Welch''s t-test, a z-test for binary metrics, the delta method for ratio metrics, always-valid in sequential mode), with CUPED, Bayesian and power columns; stored in ab_insights.';
