-- Recording results against the assigned variant.
SELECT ab_create_experiment('{"name": "results", "experiment_type": "prompt", "primary_metric": "resolution_rate",
  "salt": "results-salt",
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS e \gset
SELECT ab_start_experiment('results');
SELECT ab_get_variant('results', 'user-' || g) IS NOT NULL AS assigned FROM generate_series(1, 3) g;

SELECT ab_record_result('results', 'resolution_rate', 1, 'user-1') AS recorded;
SELECT ab_record_result('results', 'response_time', 812.5, 'user-1', 'session-1') AS recorded;
SELECT ab_record_result(:e, 'resolution_rate', 0, 'user-2') AS recorded_by_id;
SELECT ab_record_result('results', 'resolution_rate', 1, 'never-assigned') AS unassigned;
SELECT ab_record_result('results', 'resolution_rate', -1e15, 'user-3') AS largest_negative;
SELECT r.user_id, v.name AS variant, r.metric_name, r.metric_value, r.session_id
FROM ab_results r JOIN ab_variants v ON v.id = r.variant_id ORDER BY r.id;
-- The variant of every result is the user's assigned variant.
SELECT count(*) AS misattributed FROM ab_results r JOIN ab_assignments a USING (experiment_id, user_id)
WHERE a.variant_id <> r.variant_id;

-- Errors, each with its SQLSTATE, and nothing written.
SELECT expect_error($$SELECT ab_record_result('results', 'resolution_rate', 'NaN', 'user-1')$$);
SELECT expect_error($$SELECT ab_record_result('results', 'resolution_rate', 'Infinity', 'user-1')$$);
SELECT expect_error($$SELECT ab_record_result('results', 'resolution_rate', '-Infinity', 'user-1')$$);
SELECT expect_error($$SELECT ab_record_result('results', '', 1, 'user-1')$$);
SELECT expect_error($$SELECT ab_record_result('results', '   ', 1, 'user-1')$$);
SELECT expect_error($$SELECT ab_record_result('results', repeat('m', 201), 1, 'user-1')$$);
SELECT expect_error($$SELECT ab_record_result('results', 'resolution_rate', NULL, 'user-1')$$);
SELECT expect_error($$SELECT ab_record_result('results', NULL, 1, 'user-1')$$);
SELECT expect_error($$SELECT ab_record_result('results', 'resolution_rate', 1, NULL)$$);
SELECT expect_error($$SELECT ab_record_result(NULL::text, 'resolution_rate', 1, 'user-1')$$);
SELECT expect_error($$SELECT ab_record_result('results', 'resolution_rate', 1, '')$$);
SELECT expect_error($$SELECT ab_record_result('no such experiment', 'resolution_rate', 1, 'user-1')$$);
SELECT expect_error($$SELECT ab_record_result(424242, 'resolution_rate', 1, 'user-1')$$);
SELECT count(*) AS results FROM ab_results;

-- A stopped experiment records nothing.
SELECT ab_stop_experiment('results');
SELECT ab_record_result('results', 'resolution_rate', 1, 'user-1') AS after_stop;
SELECT count(*) AS results FROM ab_results;
SELECT ab_delete_experiment('results');
SELECT count(*) AS results_left FROM ab_results;
