-- The statistics beyond Welch: binary metrics, SRM, several treatments, sequential testing,
-- CUPED, the Bayesian summary and power. Reference values: tests/fixtures/*.json.

-- Pure functions over summary numbers.
SELECT * FROM ab_proportion_test(45, 100, 60, 100);
SELECT * FROM ab_proportion_test(0, 10, 0, 10);
SELECT * FROM ab_srm_test('{5300, 4700}', '{50, 50}');
SELECT * FROM ab_srm_test('{7000, 3000}', '{70, 30}');
SELECT * FROM ab_srm_test('{1000, 1200, 800}', '{40, 40, 20}');
SELECT ab_sample_size(1.0, 0.5), ab_sample_size(0.49, 0.02, 0.01, 0.9);
SELECT ab_adjust_p_values('{0.01, 0.04, 0.03, 0.2}'), ab_adjust_p_values('{0.01, 0.04, 0.03, 0.2}', 'bh');
SELECT ab_adjust_p_values('{}');

SELECT expect_error($$SELECT * FROM ab_proportion_test(11, 10, 1, 10)$$);
SELECT expect_error($$SELECT * FROM ab_proportion_test(-1, 10, 1, 10)$$);
SELECT expect_error($$SELECT * FROM ab_proportion_test(1, 0, 1, 10)$$);
SELECT expect_error($$SELECT * FROM ab_proportion_test(1, 10, 1, 10, 0)$$);
SELECT expect_error($$SELECT * FROM ab_srm_test('{1, 2, 3}', '{1, 1}')$$);
SELECT expect_error($$SELECT * FROM ab_srm_test('{-1, 2}', '{1, 1}')$$);
SELECT expect_error($$SELECT * FROM ab_srm_test('{1, 2}', '{1, -1}')$$);
SELECT expect_error($$SELECT * FROM ab_srm_test('{1, NULL}', '{1, 1}')$$);
SELECT expect_error($$SELECT ab_sample_size(1, 0)$$);
SELECT expect_error($$SELECT ab_sample_size(-1, 0.1)$$);
SELECT expect_error($$SELECT ab_sample_size(1, 0.1, 1.5)$$);
SELECT expect_error($$SELECT ab_sample_size(1, 0.1, 0.05, 0)$$);
SELECT expect_error($$SELECT ab_adjust_p_values('{0.1, 1.2}')$$);
SELECT expect_error($$SELECT ab_adjust_p_values('{0.1, NULL}')$$);
SELECT expect_error($$SELECT ab_adjust_p_values('{0.1}', 'bonferroni')$$);

-- A three-arm experiment: binary primary metric, a lower-is-better guardrail, covariates,
-- sequential mode, Benjamini-Hochberg and an mde.
SELECT ab_create_experiment('{"name": "three arms", "experiment_type": "model", "primary_metric": "resolved",
  "salt": "three-arms", "min_sample_size": 100, "sequential": true, "sequential_tuning": 2000, "correction": "bh",
  "metrics": {"resolved": {"type": "binary", "mde": 0.05},
              "response_time": {"direction": "lower", "mde": 10}},
  "variants": [{"name": "current", "is_control": true, "traffic_allocation": 40},
               {"name": "model b", "traffic_allocation": 30},
               {"name": "model c", "traffic_allocation": 30}]}') AS e \gset
SELECT ab_start_experiment(:e);
CREATE TEMP TABLE u AS
SELECT g, 'user-' || g AS user_id, ab_get_variant(:e, 'user-' || g) ->> 'variant' AS variant
FROM generate_series(1, 3000) g;
SELECT variant, count(*) FROM u GROUP BY 1 ORDER BY 1;

-- Binary results must be 0 or 1.
SELECT expect_error($$SELECT ab_record_result('three arms', 'resolved', 0.5, 'user-1')$$);
-- Covariates: last month's response time, strongly correlated with this month's.
SELECT count(*) FROM (SELECT ab_record_covariate(:e, 'response_time', user_id, 900 + (g * 37) % 200) FROM u) s;
SELECT ab_record_covariate(:e, 'response_time', 'user-1', 950);  -- replaces, does not duplicate
SELECT count(*) AS covariates FROM ab_covariates WHERE experiment_id = :e;
SELECT expect_error($$SELECT ab_record_covariate('three arms', 'response_time', 'user-1', 'NaN')$$);
SELECT expect_error($$SELECT ab_record_covariate('three arms', '', 'user-1', 1)$$);
SELECT expect_error($$SELECT ab_record_covariate('no such experiment', 'm', 'user-1', 1)$$);

-- 'resolved': a third of "model c" users never record anything (they count as 0).
SELECT count(*) FILTER (WHERE ok) AS recorded FROM (
  SELECT ab_record_result(:e, 'resolved',
           CASE variant WHEN 'current' THEN (g % 10 < 5)::int WHEN 'model b' THEN (g % 10 < 6)::int ELSE 1 END, user_id) AS ok
  FROM u WHERE variant <> 'model c' OR g % 3 <> 0
  UNION ALL
  SELECT ab_record_result(:e, 'response_time',
           900 + (g * 37) % 200 + CASE variant WHEN 'model b' THEN 25 ELSE 0 END + (g % 7) * 3, user_id)
  FROM u) s;

SELECT metric_name, variant, users, round(mean::numeric, 4) AS mean, round(diff::numeric, 4) AS diff,
       round(ci_lower::numeric, 4) AS ci_lower, round(ci_upper::numeric, 4) AS ci_upper, test,
       round(p_value::numeric, 6) AS p, round(p_value_adjusted::numeric, 6) AS p_adj, significant,
       round(chance_to_beat_control::numeric, 4) AS beat, round(expected_loss::numeric, 4) AS loss, users_needed,
       round(srm_p_value::numeric, 4) AS srm
FROM ab_analyze(:e);
SELECT metric_name, variant, round(cuped_diff::numeric, 4) AS cuped_diff, round(cuped_ci_lower::numeric, 4) AS lo,
       round(cuped_ci_upper::numeric, 4) AS hi, cuped_p_value < 1e-6 AS tiny_p,
       round(cuped_variance_reduction::numeric, 3) AS reduction
FROM ab_analyze(:e) WHERE NOT is_control;

\pset format unaligned
\pset tuples_only on
SELECT regexp_replace(ab_summary(:e), 'since [0-9-]+ [0-9:]+ [A-Z]+', 'since <time>');
\pset format aligned
\pset tuples_only off

-- A deliberately broken 50/50 split: users of one variant lost on the way. SRM blocks the
-- winner even though the effect is large.
SELECT ab_create_experiment('{"name": "broken split", "experiment_type": "ui", "primary_metric": "converted",
  "salt": "broken", "min_sample_size": 100, "metrics": {"converted": {"type": "binary"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS b \gset
SELECT ab_start_experiment(:b);
SELECT count(*) FROM (SELECT ab_get_variant(:b, 'user-' || g) FROM generate_series(1, 4000) g) s;
-- Half of variant b's assignments vanish (a redirect that loses users, say).
DELETE FROM ab_assignments WHERE experiment_id = :b AND variant_id = (SELECT id FROM ab_variants WHERE experiment_id = :b AND name = 'b')
  AND abs(hashtext(user_id)) % 2 = 0;
SELECT count(*) FILTER (WHERE ab_record_result(:b, 'converted', (v.name = 'b' OR abs(hashtext(a.user_id)) % 5 = 0)::int, a.user_id)) AS recorded
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = :b;
SELECT variant, users, round(p_value::numeric, 6) AS p, srm_p_value < 0.001 AS srm_flagged FROM ab_analyze(:b);
SELECT ab_stop_experiment(:b, true);
SELECT ab_stop_experiment(:e);
SELECT ab_delete_experiment(:e), ab_delete_experiment(:b);
SELECT count(*) AS covariates_left FROM ab_covariates;

-- The mergeable-moment aggregates: exact against var_samp/covar_samp, and parallel safe with
-- combine functions (what lets the planner, and Citus, split the analysis).
SELECT m[1] AS n, m[2] AS mean, m[3] / (m[1] - 1) = var_samp AS same_variance
FROM (SELECT ab_moments(x) AS m, var_samp(x) FROM (VALUES (1.0::float8), (2.5), (4.0), (10.0)) t(x)) s;
SELECT m[1] AS n, m[2] AS mean_y, m[3] AS mean_x, abs(m[6] / (m[1] - 1) - covar) < 1e-12 AS same_covariance
FROM (SELECT ab_comoments(y, x) AS m, covar_samp(y, x) AS covar
      FROM (VALUES (1.0::float8, 2.0::float8), (2.0, 2.5), (4.0, 5.0)) t(y, x)) s;
SELECT ab_moments(x) FROM (SELECT 1.0::float8 WHERE false) t(x);
SELECT aggfnoid::regproc::text, aggcombinefn::regproc::text AS combine, p.proparallel
FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
WHERE aggfnoid::regproc::text IN ('ab_moments', 'ab_comoments') ORDER BY 1;
