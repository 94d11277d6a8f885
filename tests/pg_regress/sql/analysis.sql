-- Analysis per user, then per variant; the winner rule.
SELECT ab_create_experiment('{"name": "analysis", "experiment_type": "prompt", "primary_metric": "resolution_rate",
  "salt": "analysis-salt", "min_sample_size": 50, "strict_metrics": false,
  "metrics": {"resolution_rate": {}, "escalation_rate": {"direction": "lower"}, "token_usage": {"aggregation": "sum"},
              "messages": {"aggregation": "count"}, "peak_latency": {"aggregation": "max", "direction": "lower"}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "examples", "traffic_allocation": 50}]}') AS e \gset

-- Too early: nothing to analyse yet.
SELECT ab_start_experiment('analysis');
SELECT metric_name, variant, users, mean, diff, p_value, metric_type, srm_p_value FROM ab_analyze('analysis');

SELECT count(*) AS users FROM (SELECT ab_get_variant('analysis', 'u' || g) FROM generate_series(1, 400) g) s;
CREATE TEMP TABLE arm AS
SELECT a.user_id, substr(a.user_id, 2)::int AS g, v.name AS variant
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = :e;
SELECT variant, count(*) FROM arm GROUP BY 1 ORDER BY 1;

-- Two conversations per user: per-user mean of resolution is 0, 0.5 or 1.
SELECT count(*) FILTER (WHERE ok) AS recorded FROM (
  SELECT ab_record_result('analysis', 'resolution_rate',
           (CASE variant WHEN 'control' THEN (g + c) % 10 < 5 ELSE (g + c) % 10 < 8 END)::int, user_id) AS ok
  FROM arm, generate_series(1, 2) c
  UNION ALL
  SELECT ab_record_result('analysis', 'escalation_rate', ((g % 7) = 0)::int, user_id) FROM arm
  UNION ALL
  -- token_usage is recorded by a third of the users only: the others count as 0 (sum).
  SELECT ab_record_result('analysis', 'token_usage', 100 + g % 13, user_id) FROM arm WHERE g % 3 = 0
  UNION ALL
  SELECT ab_record_result('analysis', 'messages', 1, user_id) FROM arm, generate_series(1, 1 + g % 4) c
  UNION ALL
  SELECT ab_record_result('analysis', 'peak_latency', 200 + (g * c) % 50, user_id) FROM arm, generate_series(1, 3) c
  UNION ALL
  -- A metric nobody declared: analysed as a per-user mean, higher is better.
  SELECT ab_record_result('analysis', 'zero_control', CASE variant WHEN 'control' THEN 0 ELSE g % 2 END, user_id) FROM arm
) s;

SELECT metric_name, variant, is_control, users, round(mean::numeric, 6) AS mean, round(std_dev::numeric, 6) AS std_dev,
       round(diff::numeric, 6) AS diff, round(ci_lower::numeric, 6) AS ci_lower, round(ci_upper::numeric, 6) AS ci_upper,
       round(relative_lift::numeric, 6) AS lift, p_value < 1e-6 AS tiny_p, round(p_value::numeric, 6) AS p,
       significant, round(effect_size::numeric, 6) AS d
FROM ab_analyze('analysis');

-- Every comparison equals Welch's test on the per-user values computed by hand.
WITH per_user AS (
  SELECT r.metric_name, arm.variant, r.user_id, avg(r.metric_value) AS v
  FROM ab_results r JOIN arm USING (user_id) WHERE r.metric_name IN ('resolution_rate', 'escalation_rate')
  GROUP BY 1, 2, 3),
stats AS (
  SELECT metric_name, variant, count(*) AS n, avg(v) AS m, var_samp(v) AS s2 FROM per_user GROUP BY 1, 2),
manual AS (
  SELECT c.metric_name, w.* FROM stats c JOIN stats t ON t.metric_name = c.metric_name AND c.variant = 'control' AND t.variant = 'examples',
  LATERAL ab_welch_test(c.n, c.m, c.s2, t.n, t.m, t.s2) w)
SELECT m.metric_name, abs(a.p_value - m.p_value) <= 1e-12 * m.p_value AS same_p,
       abs(a.ci_lower - m.ci_lower) < 1e-12 AND abs(a.ci_upper - m.ci_upper) < 1e-12 AS same_ci
FROM manual m JOIN ab_insights a ON a.metric_name = m.metric_name AND a.variant = 'examples'
WHERE a.computed_at = (SELECT max(computed_at) FROM ab_insights)
ORDER BY 1;

-- Each ab_analyze run is stored.
SELECT count(DISTINCT computed_at) AS runs, count(*) AS rows FROM ab_insights WHERE experiment_id = :e;
SELECT metric_name, variant, recommendation, round(confidence::numeric, 4) AS confidence
FROM ab_insights WHERE experiment_id = :e ORDER BY metric_name, is_control DESC, variant;

\pset format unaligned
\pset tuples_only on
SELECT regexp_replace(ab_summary('analysis'), 'since [0-9-]+ [0-9:]+ [A-Z]+', 'since <time>');
\pset format aligned
\pset tuples_only off

SELECT ab_stop_experiment('analysis', declare_winner => true);
SELECT status, winner_variant FROM ab_experiments WHERE id = :e;

-- No winner when the data cannot tell: same values in both variants.
SELECT ab_create_experiment('{"name": "null effect", "experiment_type": "ui", "primary_metric": "conversion_rate",
  "salt": "null-salt", "min_sample_size": 20,
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS n \gset
SELECT ab_start_experiment(:n);
SELECT count(*) FILTER (WHERE ab_record_result(:n, 'conversion_rate', (g % 3 = 0)::int, 'u' || g)) AS recorded
FROM generate_series(1, 200) g WHERE ab_get_variant(:n, 'u' || g) IS NOT NULL;
SELECT ab_stop_experiment(:n, true);

-- No winner with too few users, even with a large effect.
SELECT ab_create_experiment('{"name": "too early", "experiment_type": "ui", "primary_metric": "conversion_rate",
  "salt": "early-salt", "min_sample_size": 1000,
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS t \gset
SELECT ab_start_experiment(:t);
SELECT count(*) FILTER (WHERE ab_record_result(:t, 'conversion_rate',
         CASE WHEN v ->> 'variant' = 'a' THEN (g % 5 = 0)::int ELSE (g % 5 <> 0)::int END, 'u' || g)) AS recorded
FROM (SELECT g, ab_get_variant(:t, 'u' || g) AS v FROM generate_series(1, 200) g) s;
SELECT ab_stop_experiment(:t, true);

-- A lower-is-better primary metric where the treatment is worse: keep the control.
SELECT ab_create_experiment('{"name": "worse", "experiment_type": "agent_config", "primary_metric": "escalation_rate",
  "salt": "worse-salt", "min_sample_size": 20, "metrics": {"escalation_rate": {"direction": "lower"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS w \gset
SELECT ab_start_experiment(:w);
SELECT count(*) FILTER (WHERE ab_record_result(:w, 'escalation_rate',
         CASE WHEN v ->> 'variant' = 'a' THEN (g % 5 = 0)::int ELSE (g % 5 <> 0)::int END, 'u' || g)) AS recorded
FROM (SELECT g, ab_get_variant(:w, 'u' || g) AS v FROM generate_series(1, 200) g) s;
SELECT ab_stop_experiment(:w, true);
SELECT name, status, winner_variant FROM ab_experiments ORDER BY id;

-- ab_welch_test from summary statistics, its edge cases and its errors.
SELECT * FROM ab_welch_test(2, 1.0, 0.5, 2, 3.0, 2.0);
SELECT * FROM ab_welch_test(100000000, 0.5, 0.25, 100000000, 0.5001, 0.25, 0.001);
SELECT * FROM ab_welch_test(10, 1.0, 0.0, 10, 1.0, 0.0);
SELECT * FROM ab_welch_test(10, 1.0, 0.0, 10, 2.0, 0.0);
SELECT * FROM ab_welch_test(NULL, 1.0, 0.0, 10, 2.0, 0.0);
SELECT expect_error($$SELECT * FROM ab_welch_test(1, 1.0, 1.0, 10, 2.0, 1.0)$$);
SELECT expect_error($$SELECT * FROM ab_welch_test(10, 1.0, -1.0, 10, 2.0, 1.0)$$);
SELECT expect_error($$SELECT * FROM ab_welch_test(10, 'NaN', 1.0, 10, 2.0, 1.0)$$);
SELECT expect_error($$SELECT * FROM ab_welch_test(10, 1.0, 1.0, 10, 2.0, 1.0, 1.5)$$);
SELECT expect_error($$SELECT * FROM ab_analyze('no such experiment')$$);
SELECT expect_error($$SELECT ab_summary('no such experiment')$$);
