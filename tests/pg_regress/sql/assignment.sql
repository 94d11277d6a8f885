-- Deterministic, sticky assignment with traffic allocation and targeting.
SELECT ab_create_experiment('{"name": "split", "experiment_type": "model", "primary_metric": "accuracy",
  "salt": "3f2a9c7e-0d1b-4a5f-9e3c-2b7d8f6a1c40",
  "variants": [{"name": "provider a", "is_control": true, "traffic_allocation": 70, "config": {"model": "a"}},
               {"name": "provider b", "traffic_allocation": 30, "config": {"model": "b"}}]}') AS split \gset
SELECT ab_start_experiment('split');

-- The guide's test vectors: user-1 lands on point 6195 (provider a, [0, 7000)).
SELECT ab_get_variant('split', 'user-1');
SELECT ab_get_variant(:split, 'user-1', '{}', 'session-9');
SELECT user_id, session_id FROM ab_assignments ORDER BY user_id;

-- 10000 users split about 70/30 (a fixed salt makes the counts exact).
SELECT v ->> 'variant' AS variant, count(*) AS users
FROM (SELECT ab_get_variant('split', 'user-' || g) AS v FROM generate_series(1, 10000) g) s
GROUP BY 1 ORDER BY 1;
SELECT count(*) AS assignment_rows FROM ab_assignments;

-- Asking again returns the stored variant, for every user.
SELECT count(*) AS changed FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
WHERE ab_get_variant('split', a.user_id) ->> 'variant' <> v.name;

-- Allocations change (the table trigger invalidates every backend's cache): assigned users
-- keep their variant; new users follow the new ranges.
UPDATE ab_variants SET traffic_allocation = 10 WHERE name = 'provider a';
UPDATE ab_variants SET traffic_allocation = 90 WHERE name = 'provider b';
SELECT count(*) AS changed FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
WHERE ab_get_variant('split', a.user_id) ->> 'variant' <> v.name;
SELECT v ->> 'variant' AS variant, count(*) AS new_users
FROM (SELECT ab_get_variant('split', 'new-' || g) AS v FROM generate_series(1, 1000) g) s
GROUP BY 1 ORDER BY 1;

-- Part of the traffic enrolled: the rest gets NULL and no row.
SELECT ab_create_experiment('{"name": "partial", "experiment_type": "feature", "primary_metric": "conversion_rate",
  "salt": "partial-salt",
  "variants": [{"name": "off", "is_control": true, "traffic_allocation": 10}, {"name": "on", "traffic_allocation": 10}]}') AS partial \gset
SELECT ab_start_experiment('partial');
SELECT coalesce(v ->> 'variant', 'not enrolled') AS variant, count(*) AS users
FROM (SELECT ab_get_variant('partial', 'user-' || g) AS v FROM generate_series(1, 5000) g) s
GROUP BY 1 ORDER BY 1;
SELECT count(*) AS partial_rows FROM ab_assignments WHERE experiment_id = :partial;

-- Targeting: only matching users are enrolled; once enrolled, a user keeps the variant.
SELECT ab_create_experiment('{"name": "targeted", "experiment_type": "workflow", "primary_metric": "resolution_rate",
  "target_segments": {"loan_type": ["fha", "va"], "credit_score": {"gte": 700}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS targeted \gset
SELECT ab_start_experiment('targeted');
SELECT attrs, ab_get_variant('targeted', 'borrower-1', attrs) IS NOT NULL AS enrolled
FROM (VALUES ('{"loan_type": "conventional", "credit_score": 720}'::jsonb),
             ('{"loan_type": "fha", "credit_score": 650}'),
             ('{"loan_type": "fha"}'),
             ('{"loan_type": "fha", "credit_score": "720"}'),
             ('{}'),
             ('{"loan_type": "va", "credit_score": 720}')) AS t(attrs);
SELECT ab_get_variant('targeted', 'borrower-1') IS NOT NULL AS still_enrolled_without_attributes;
SELECT count(*) AS targeted_rows FROM ab_assignments WHERE experiment_id = :targeted;

-- NULL in, NULL out; bad ids are errors that write nothing.
SELECT ab_get_variant(NULL, 'user-1') AS null_experiment, ab_get_variant('split', NULL) AS null_user;
SELECT ab_get_variant('split', 'user-x', NULL) IS NOT NULL AS null_attributes_mean_none;
SELECT expect_error($$SELECT ab_get_variant('split', '')$$);
SELECT expect_error($$SELECT ab_get_variant('split', repeat('x', 513))$$);
SELECT expect_error($$SELECT ab_get_variant('split', 'user-1', '{}', repeat('s', 600))$$);
SELECT expect_error($$SELECT ab_get_variant('no such experiment', 'user-1')$$);
SELECT expect_error($$SELECT ab_get_variant(424242, 'user-1')$$);
SELECT ab_get_variant('split', repeat('x', 512)) IS NOT NULL AS longest_id_accepted;
SELECT ab_get_variant('split', 'ünïcødé 用户 🚀') ->> 'variant' AS unicode_user;
SELECT count(*) AS split_rows FROM ab_assignments WHERE experiment_id = :split;

SELECT ab_stop_experiment('split');
SELECT ab_stop_experiment('partial');
SELECT ab_stop_experiment('targeted');
SELECT ab_delete_experiment('split'), ab_delete_experiment('partial'), ab_delete_experiment('targeted');
