-- 0.11.0 -> 0.12.0: trust boundaries and soundness.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.12.0'" to load this file. \quit

-- Analyses read-only, bounded timelines, one value rule: what ab_analyze, ab_timeline and
-- ab_reweight_due now do.
COMMENT ON FUNCTION ab_analyze(text) IS 'Per metric and variant: per-user statistics and the test against the control (Welch''s t-test, a z-test for binary metrics, the delta method for ratio metrics, always-valid in sequential mode), with CUPED, Bayesian and power columns; stored in ab_insights when the transaction can write (not in a read-only transaction or on a hot standby, where the rows are returned only).';
COMMENT ON FUNCTION ab_timeline(text, text) IS 'Per day since the first enrollment (in the session''s TimeZone) until the experiment''s stop or today, metric and variant: the comparison with the control over the users enrolled and the results recorded by the end of that day (cumulative; without CUPED; ratio and quantile metrics excluded).';
COMMENT ON FUNCTION ab_reweight_due() IS 'Runs ab_reweight on every running bandit experiment whose update_every has passed, each in a subtransaction of its own (one that fails is a row with its error and NULL period and weights; the others are reweighted): for a scheduler such as pg_cron.';
