-- The rollout cases: two rollouts like 'bench' (same salt, 100k users assigned at a 50% step),
-- one ramping and one rolled back.
\set ON_ERROR_STOP on
SELECT ab_create_experiment(jsonb_build_object('name', n, 'experiment_type', 'prompt', 'primary_metric', 'resolution_rate',
  'salt', 'bench', 'allocation', '{"mode": "rollout", "steps": [50, 100]}'::jsonb, 'variants',
  '[{"name": "Control", "is_control": true, "traffic_allocation": 50, "config": {"system_prompt": "Current prompt..."}},
    {"name": "Treatment", "traffic_allocation": 50, "config": {"system_prompt": "New prompt with examples..."}}]'::jsonb))
FROM (VALUES ('bench rollout'), ('bench rolled back')) v(n);
SELECT ab_start_experiment('bench rollout'), ab_start_experiment('bench rolled back');
SELECT count(ab_get_variant('bench rollout', 'user-' || g)), count(ab_get_variant('bench rolled back', 'user-' || g))
FROM generate_series(1, 100000) g;
SELECT ab_rollback('bench rolled back', 'benchmark');
VACUUM ANALYZE;
