-- Hostile and malformed input: every call either works or fails with a clear message and a
-- proper SQLSTATE (never XX000, an internal error), and a failed call writes nothing.
SELECT ab_create_experiment('{"name": "target", "experiment_type": "ui", "primary_metric": "m", "salt": "t",
  "metrics": {"m": {}, "b": {"type": "binary"}}, "strict_metrics": false,
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS e \gset
SELECT ab_start_experiment(:e);
SELECT ab_get_variant('target', 'known') IS NOT NULL AS known_user;
-- A targeted experiment reads the attributes of new users.
SELECT ab_create_experiment('{"name": "targeted", "experiment_type": "ui", "primary_metric": "m", "salt": "t",
  "target_segments": {"tier": ["pro"]},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS t \gset
SELECT ab_start_experiment(:t);

CREATE TEMP TABLE attempts (label text, statement text);
INSERT INTO attempts VALUES
 ('variant: empty experiment', $$SELECT ab_get_variant('', 'u')$$),
 ('variant: 100k-byte user', $$SELECT ab_get_variant('target', repeat('u', 100000))$$),
 ('variant: 10k-character experiment name', $$SELECT ab_get_variant(repeat('e', 10000), 'u')$$),
 ('variant: odd unicode user', $$SELECT ab_get_variant('target', E'\u202Eevil\u0301\uFEFF\U0001F600')$$),
 ('variant: bytes-looking user', $$SELECT ab_get_variant('target', E'\\xff\\xfe\\x00')$$),
 ('variant: attributes not an object', $$SELECT ab_get_variant('target', 'new-1', '[1, 2]')$$),
 ('variant: deeply nested attributes', $$SELECT ab_get_variant('target', 'new-2', (repeat('{"a": ', 500) || '1' || repeat('}', 500))::jsonb)$$),
 ('variant: deeply nested attributes, targeted', $$SELECT ab_get_variant('targeted', 'new-3', (repeat('{"a": ', 500) || '1' || repeat('}', 500))::jsonb)$$),
 ('variant: negative id', $$SELECT ab_get_variant(-1, 'u')$$),
 ('record: NaN', $$SELECT ab_record_result('target', 'm', 'NaN', 'known')$$),
 ('record: largest float', $$SELECT ab_record_result('target', 'm', 1.7976931348623157e308, 'known')$$),
 ('record: smallest subnormal', $$SELECT ab_record_result('target', 'm', 5e-324, 'known')$$),
 ('record: negative zero', $$SELECT ab_record_result('target', 'm', '-0', 'known')$$),
 ('record: binary metric given 2', $$SELECT ab_record_result('target', 'b', 2, 'known')$$),
 ('record: metric name of newlines', $$SELECT ab_record_result('target', E'\n\n', 1, 'known')$$),
 ('record: 100k-byte session', $$SELECT ab_record_result('target', 'm', 1, 'known', repeat('s', 100000))$$),
 ('covariate: Infinity', $$SELECT ab_record_covariate('target', 'm', 'known', 'Infinity')$$),
 ('create: not JSON object', $$SELECT ab_create_experiment('"just a string"')$$),
 ('create: deeply nested config', $$SELECT ab_create_experiment(('{"name": "deep", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50, "config": ' || repeat('{"a": ', 500) || '1' || repeat('}', 500) || '}, {"name": "b", "traffic_allocation": 50}]}')::jsonb)$$),
 ('create: 2 MB config', $$SELECT ab_create_experiment(jsonb_build_object('name', 'big', 'experiment_type', 'ui', 'primary_metric', 'm', 'variants', jsonb_build_array(jsonb_build_object('name', 'a', 'is_control', true, 'traffic_allocation', 50, 'config', jsonb_build_object('prompt', repeat('x', 2000000))), jsonb_build_object('name', 'b', 'traffic_allocation', 50))))$$),
 ('create: 1 MB description', $$SELECT ab_create_experiment(jsonb_build_object('name', 'long', 'experiment_type', 'ui', 'primary_metric', 'm', 'description', repeat('d', 1000000), 'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb))$$),
 ('create: huge min_sample_size', $$SELECT ab_create_experiment('{"name": "n", "experiment_type": "ui", "primary_metric": "m", "min_sample_size": 99999999999999999999, "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$),
 ('create: allocation 1e308', $$SELECT ab_create_experiment('{"name": "n", "experiment_type": "ui", "primary_metric": "m", "variants": [{"name": "a", "is_control": true, "traffic_allocation": 1e308}, {"name": "b", "traffic_allocation": 50}]}')$$),
 ('create: control character in name', $$SELECT ab_create_experiment(jsonb_build_object('name', E'bad\u0007name', 'experiment_type', 'ui', 'primary_metric', 'm', 'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb))$$),
 ('welch: largest bigint', $$SELECT * FROM ab_welch_test(9223372036854775807, 1e308, 1e308, 9223372036854775807, -1e308, 1e308)$$),
 ('welch: negative n', $$SELECT * FROM ab_welch_test(-5, 1, 1, 10, 1, 1)$$),
 ('proportion: largest bigint', $$SELECT * FROM ab_proportion_test(9223372036854775807, 9223372036854775807, 0, 9223372036854775807)$$),
 ('srm: NaN weight', $$SELECT * FROM ab_srm_test('{1, 2}', '{NaN, 1}')$$),
 ('srm: empty arrays', $$SELECT * FROM ab_srm_test('{}', '{}')$$),
 ('sample size: tiny mde', $$SELECT ab_sample_size(1e308, 1e-308)$$),
 ('sample size: NaN', $$SELECT ab_sample_size('NaN', 1)$$),
 ('adjust: NaN p-value', $$SELECT ab_adjust_p_values('{NaN}')$$),
 ('analyze: unknown id', $$SELECT * FROM ab_analyze(-42)$$);
SELECT label, expect_error(statement) AS outcome FROM attempts ORDER BY label;
SELECT count(*) AS internal_errors FROM attempts WHERE expect_error(statement) LIKE 'XX%';

-- Nothing was written by the failed calls: the only rows are those of the calls that worked.
SELECT count(*) AS experiments_made_by_failed_calls FROM ab_experiments WHERE name IN ('deep', 'big', 'long', 'n');
SELECT count(*) AS assignments FROM ab_assignments WHERE experiment_id = :e;
SELECT metric_name, metric_value FROM ab_results WHERE experiment_id = :e ORDER BY id;
SELECT count(*) AS covariates FROM ab_covariates WHERE experiment_id = :e;
SELECT count(*) AS targeted_assignments FROM ab_assignments WHERE experiment_id = :t;
SELECT ab_stop_experiment(:e), ab_stop_experiment(:t);
SELECT ab_delete_experiment(:e), ab_delete_experiment(:t);
