-- Every way a definition can be wrong gives a clear error and writes nothing.
CREATE TABLE defs (label text, body jsonb);
INSERT INTO defs VALUES
 ('not an object', '[1, 2]'),
 ('missing name', '{"experiment_type": "ui", "primary_metric": "m", "variants": []}'),
 ('empty name', '{"name": " ", "experiment_type": "ui", "primary_metric": "m", "variants": []}'),
 ('unknown field', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "alpah": 0.1, "variants": []}'),
 ('bad type', '{"name": "x", "experiment_type": "banner", "primary_metric": "m", "variants": []}'),
 ('one variant', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 100}]}'),
 ('over 100', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 70}, {"name": "b", "traffic_allocation": 50}]}'),
 ('negative', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": -10}, {"name": "b", "traffic_allocation": 50}]}'),
 ('three decimals', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 33.333}, {"name": "b", "traffic_allocation": 50}]}'),
 ('string allocation', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": "50"}, {"name": "b", "traffic_allocation": 50}]}'),
 ('layer not an object', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "layer": "l2", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}'),
 ('no control', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}'),
 ('two controls', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "is_control": true, "traffic_allocation": 50}]}'),
 ('duplicate variant', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "a", "traffic_allocation": 50}]}'),
 ('config not object', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50, "config": "p"}, {"name": "b", "traffic_allocation": 50}]}'),
 ('zero traffic', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 0}, {"name": "b", "traffic_allocation": 0}]}'),
 ('min sample', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "min_sample_size": 1, "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}'),
 ('alpha', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "alpha": 0, "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}'),
 ('aggregation', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "metrics": {"m": {"aggregation": "median"}}, "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}'),
 ('direction', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "metrics": {"m": {"direction": "up"}}, "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}'),
 ('segments', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "target_segments": {"score": {"between": [1, 2]}}, "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}'),
 ('primary not declared', '{"name": "x", "experiment_type": "ui", "primary_metric": "conversion", "metrics": {"conversions": {"type": "binary"}}, "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}'),
 ('strict, none declared', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "strict_metrics": true, "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}'),
 ('empty segment list', '{"name": "x", "experiment_type": "ui", "primary_metric": "m", "target_segments": {"loan_type": []}, "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}');
SELECT label, expect_error(format('SELECT ab_create_experiment(%L)', body)) AS error FROM defs ORDER BY label;
-- Bounds the reference's Limits table gives: the salt (200 characters, no control characters)
-- and target_segments (100 conditions).
SELECT expect_error(format('SELECT ab_create_experiment(%L)', jsonb_build_object('name', 'x', 'experiment_type', 'ui',
  'primary_metric', 'm', 'salt', salt, 'variants',
  '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb))) AS error
FROM (VALUES (repeat('s', 201)), (E'tab\there')) AS t(salt);
SELECT expect_error(format('SELECT ab_create_experiment(%L)', jsonb_build_object('name', 'x', 'experiment_type', 'ui',
  'primary_metric', 'm', 'target_segments', (SELECT jsonb_object_agg('attr' || g, g) FROM generate_series(1, 101) g),
  'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb))) AS error;
SELECT count(*) AS experiments FROM ab_experiments WHERE name = 'x';

-- Thousands of variants are refused before anything is written.
SELECT expect_error(format('SELECT ab_create_experiment(%L)', jsonb_build_object(
  'name', 'many', 'experiment_type', 'ui', 'primary_metric', 'm',
  'variants', (SELECT jsonb_agg(jsonb_build_object('name', 'v' || g, 'is_control', g = 1, 'traffic_allocation', 0.01))
               FROM generate_series(1, 3000) g)))) AS error;
SELECT expect_error($$SELECT ab_create_experiment(NULL)$$);

SELECT (SELECT count(*) FROM ab_experiments) AS experiments, (SELECT count(*) FROM ab_variants) AS variants;

-- Optional fields are kept; defaults are filled in.
SELECT ab_create_experiment('{"name": "options", "experiment_type": "agent_config", "primary_metric": "escalation_rate",
  "alpha": 0.01, "salt": "fixed-salt",
  "metrics": {"escalation_rate": {"direction": "lower"}, "token_usage": {"aggregation": "sum", "direction": "lower"}},
  "target_segments": {"loan_type": ["fha", "va"], "credit_score": {"gte": 700}},
  "variants": [{"name": "threshold 0.8", "is_control": true, "traffic_allocation": 70, "config": {"confidence_threshold": 0.8}},
               {"name": "threshold 0.9", "traffic_allocation": 30, "config": {"confidence_threshold": 0.9}}]}') > 0 AS created;
SELECT name, experiment_type, primary_metric, metrics, target_segments, min_sample_size, alpha, salt FROM ab_experiments;
SELECT name, position, is_control, traffic_allocation, config FROM ab_variants ORDER BY position;
-- The tables hold the invariants too, against edits by hand (checked at commit).
SELECT expect_error($$DO 'BEGIN UPDATE ab_variants SET traffic_allocation = 90; SET CONSTRAINTS ALL IMMEDIATE; END'$$);
SELECT expect_error($$DO 'BEGIN UPDATE ab_variants SET is_control = true; SET CONSTRAINTS ALL IMMEDIATE; END'$$);
SELECT expect_error($$DO 'BEGIN DELETE FROM ab_variants WHERE is_control; SET CONSTRAINTS ALL IMMEDIATE; END'$$);
SELECT expect_error($$UPDATE ab_variants SET traffic_allocation = 12.345$$);
SELECT expect_error($$UPDATE ab_experiments SET status = 'paused'$$);
SELECT name, is_control, traffic_allocation FROM ab_variants ORDER BY position;
SELECT expect_error($$SELECT ab_create_experiment('{"name": "options", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT ab_delete_experiment('options');
DROP TABLE defs;

-- Numbers in configs and targeting come back exactly as given: jsonb keeps any precision, and
-- so does the extension (no trip through a 64-bit float).
SELECT ab_create_experiment('{"name": "fidelity", "experiment_type": "ui", "primary_metric": "m",
  "target_segments": {"score": {"gte": 0.10000000000000000000001}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 100,
                "config": {"id": 123456789012345678901234567890, "p": 0.0009595422392661621, "x": 1e-7}},
               {"name": "b", "traffic_allocation": 0}]}') > 0 AS created;
SELECT ab_start_experiment('fidelity');
SELECT ab_get_experiment('fidelity') -> 'variants' -> 0 -> 'config' AS stored,
       ab_get_experiment('fidelity') -> 'target_segments' AS targeting,
       ab_get_variant('fidelity', 'u1', '{"score": 0.2}') -> 'config' AS returned;
SELECT ab_stop_experiment('fidelity') ->> 'status' AS status;
SELECT ab_delete_experiment('fidelity');

-- Two decimals that float8 holds only approximately (0.29 * 100 = 28.999999999999996).
SELECT ab_create_experiment('{"name": "small", "experiment_type": "ui", "primary_metric": "m",
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 0.29},
               {"name": "b", "traffic_allocation": 0.57}]}') > 0 AS created;
SELECT name, traffic_allocation FROM ab_variants WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'small')
ORDER BY position;
UPDATE ab_variants SET traffic_allocation = 1.13
WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'small') AND name = 'b';
SELECT expect_error($$UPDATE ab_variants SET traffic_allocation = 1.135 WHERE name = 'b'
    AND experiment_id = (SELECT id FROM ab_experiments WHERE name = 'small')$$);
SELECT ab_delete_experiment('small');

-- Declared metrics are the experiment's whole set: a misspelt name is refused, naming the
-- nearest declared one, and nothing is written; "strict_metrics": false accepts any name.
SELECT ab_create_experiment('{"name": "Escalation threshold", "experiment_type": "agent_config",
  "primary_metric": "escalated", "salt": "strict",
  "metrics": {"escalated": {"type": "binary", "direction": "lower"}, "token_usage": {"aggregation": "sum"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') > 0 AS created;
SELECT ab_start_experiment('Escalation threshold');
SELECT ab_get_variant('Escalation threshold', 'u1') IS NOT NULL AS enrolled;
SELECT ab_record_result('Escalation threshold', 'escalaterd', 1, 'u1');
SELECT ab_record_covariate('Escalation threshold', 'tokens', 'u1', 3);
SELECT expect_error($$SELECT ab_record_result('Escalation threshold', 'conversion', 1, 'u1')$$);
SELECT ab_record_result('Escalation threshold', 'escalated', 1, 'u1') AS recorded,
       ab_record_result('Escalation threshold', 'token_usage', 120, 'u1') AS recorded;
SELECT metric_name, count(*) FROM ab_results r JOIN ab_experiments e ON e.id = r.experiment_id
WHERE e.name = 'Escalation threshold' GROUP BY 1 ORDER BY 1;
SELECT (SELECT count(*) FROM ab_covariates) AS covariates, ab_get_experiment('Escalation threshold') -> 'strict_metrics' AS strict;
SELECT ab_create_experiment('{"name": "open metrics", "experiment_type": "ui", "primary_metric": "m",
  "salt": "open", "strict_metrics": false, "metrics": {"m": {"type": "binary"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') > 0 AS created;
SELECT ab_start_experiment('open metrics');
SELECT ab_get_variant('open metrics', 'u1') IS NOT NULL AS enrolled, ab_record_result('open metrics', 'anything', 2, 'u1') AS recorded;
-- An unknown experiment name suggests the nearest existing one (names are case-sensitive).
SELECT ab_get_variant('escalation threshold', 'u1');
SELECT ab_start_experiment('Escalation thresold');
SELECT expect_error($$SELECT ab_summary('no such thing at all')$$);
SELECT ab_stop_experiment('Escalation threshold') ->> 'status' AS status, ab_stop_experiment('open metrics') ->> 'status' AS status;
SELECT ab_delete_experiment('Escalation threshold'), ab_delete_experiment('open metrics');
