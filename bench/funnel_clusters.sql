-- ab_funnel and ab_analyze of a 20-step funnel over 20k users, randomized by team (500 teams)
-- against the same data randomized per user (docs/performance.md, funnels of cluster-randomized
-- experiments). Run in an empty database with the extension: psql -f bench/funnel_clusters.sql
\timing off
DO $$
DECLARE m jsonb := '{}'; steps jsonb := '[]'; e text;
BEGIN
  FOR k IN 1..20 LOOP m := m || jsonb_build_object('st' || k, '{"type": "binary"}'::jsonb); steps := steps || to_jsonb('st' || k); END LOOP;
  m := m || jsonb_build_object('f20', jsonb_build_object('funnel', jsonb_build_object('steps', steps)));
  FOREACH e IN ARRAY ARRAY['F20C', 'F20U'] LOOP
    PERFORM ab_create_experiment(jsonb_build_object('name', e, 'experiment_type', 'prompt', 'primary_metric', 'f20', 'salt', e,
      'metrics', m, 'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb)
      || CASE WHEN e = 'F20C' THEN '{"breakdowns": ["team"], "randomization_unit": "team"}'::jsonb ELSE '{}'::jsonb END);
    PERFORM ab_start_experiment(e);
  END LOOP;
END $$;
SELECT count(ab_get_variant('F20C', 'f' || g, jsonb_build_object('team', 't' || g % 500))), count(ab_get_variant('F20U', 'f' || g)) FROM generate_series(1, 20000) g;
UPDATE ab_assignments SET assigned_at = now() - interval '2 days' WHERE experiment_id IN (SELECT id FROM ab_experiments WHERE name IN ('F20C', 'F20U'));
SELECT e, ab_record_results(e, array_agg('st' || k), array_agg(1.0::float8), array_agg('f' || g), NULL, array_agg(now() - interval '2 days' + k * interval '1 minute'))
FROM (VALUES ('F20C'), ('F20U')) x(e), generate_series(1, 20000) g, generate_series(1, 20) k WHERE (g * 7 + k) % 23 > k / 3 GROUP BY e;
\timing on
SELECT count(*) FROM ab_funnel('F20U');
SELECT count(*) FROM ab_funnel('F20C');
SELECT count(*) FROM ab_analyze('F20U');
SELECT count(*) FROM ab_analyze('F20C');
