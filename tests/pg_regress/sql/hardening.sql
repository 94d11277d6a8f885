-- Values and names an application role may send, and the answers stored text may not forge.

-- The plot must be well-formed XML: checked by the server's XML parser where it has one (some
-- builds lack libxml; the client tests parse the same plots with Python's parser everywhere).
CREATE FUNCTION well_formed_svg(doc text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RETURN xml_is_well_formed_document(doc);
EXCEPTION WHEN feature_not_supported THEN
    RETURN doc ~ '^<svg[^>]*>' AND doc ~ '</svg>\s*$' AND doc !~ '[\x01-\x08\x0b\x0c\x0e-\x1f]';
END
$$;
SELECT ab_create_experiment('{"name": "ovf", "experiment_type": "ui", "primary_metric": "m", "salt": "ovf",
  "min_sample_size": 2,
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS e \gset
SELECT ab_start_experiment(:e);
SELECT count(*) FILTER (WHERE ab_get_variant(:e, 'u' || g) IS NOT NULL) AS enrolled FROM generate_series(1, 8) g;

-- Values beyond +-1e15 are refused when recorded, so no later analysis can overflow.
SELECT expect_error($$SELECT ab_record_result('ovf', 'm', 1e154, 'u1')$$);
SELECT expect_error($$SELECT ab_record_result('ovf', 'm', -1e154, 'u1')$$);
SELECT expect_error($$SELECT ab_record_result('ovf', 'm', 1000000000000001, 'u1')$$);
SELECT expect_error($$SELECT ab_record_covariate('ovf', 'm', 'u1', -1e154)$$);
SELECT expect_error($$INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value) VALUES (0, 0, 'x', 'm', 1e154)$$);
-- The bound itself is accepted, and the analysis of values at the bound stays finite.
SELECT bool_and(ab_record_result('ovf', 'm', CASE WHEN g % 2 = 0 THEN 1e15 ELSE -1e15 END, 'u' || g)) AS recorded
FROM generate_series(1, 8) g;
SELECT bool_and(ab_record_result('ovf', 'm', 1e15, 'u' || g)) AS recorded_twice FROM generate_series(1, 8) g;
SELECT ab_record_covariate('ovf', 'm', 'u' || g, -1e15) FROM generate_series(1, 8) g LIMIT 0;
SELECT variant, users, mean IS NOT NULL AND mean = mean AS mean_finite,
       std_dev < 'Infinity' AS sd_finite, p_value BETWEEN 0 AND 1 OR p_value IS NULL AS p_ok
FROM ab_analyze('ovf') ORDER BY variant;
SELECT ab_summary('ovf') LIKE '%Recommendation:%' AS summary_works,
       well_formed_svg(ab_plot('ovf')) AS plot_works;

-- Metric names follow the rules of experiment names.
SELECT expect_error($$SELECT ab_record_result('ovf', E'zz\n\nRecommendation: ship "B". p = 1e-9.', 1, 'u1')$$);
SELECT expect_error($$SELECT ab_record_result('ovf', E'a\x01', 1, 'u1')$$);
SELECT expect_error($$SELECT ab_record_result('ovf', E'\u200B', 1, 'u1')$$);
SELECT expect_error($$SELECT ab_record_covariate('ovf', E'x\u202Ey', 'u1', 1)$$);
-- A metric name spelt with a combining accent is stored in NFC: one metric, not two.
SELECT ab_record_result('ovf', E'caf\u00e9', 1, 'u1'), ab_record_result('ovf', E'cafe\u0301', 1, 'u2');
SELECT metric_name = E'caf\u00e9' AS nfc, count(*) FROM ab_results WHERE experiment_id = :e AND metric_name LIKE 'caf%'
GROUP BY 1;

-- Rows written by hand (or by older versions) with hostile names cannot forge a line of the
-- report or break the plot's XML.
INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value)
SELECT :e, a.variant_id, a.user_id, E'zz\n\nRecommendation: ship "B" with p = 1e-9.', 1 FROM ab_assignments a WHERE a.experiment_id = :e;
INSERT INTO ab_results (experiment_id, variant_id, user_id, metric_name, metric_value)
SELECT :e, a.variant_id, a.user_id, E'bell\x01\x08', 1 FROM ab_assignments a WHERE a.experiment_id = :e;
SELECT ab_rebuild_user_metrics('ovf') > 0 AS rebuilt;
SELECT count(*) AS recommendation_lines
FROM regexp_split_to_table(ab_summary('ovf'), E'\n') line WHERE line LIKE 'Recommendation:%';
SELECT strpos(ab_summary('ovf'), 'zz\u{000A}\u{000A}Recommendation: ship "B"') > 0 AS forged_line_escaped;
SELECT well_formed_svg(ab_plot('ovf')) AS plot_is_xml, ab_plot('ovf') ~ '[\x01-\x08]' AS plot_has_controls;

-- An experiment has at most 100 distinct metric names, declared or recorded.
SELECT count(*) FILTER (WHERE ab_record_result('ovf', 'extra ' || g, 1, 'u1')) AS recorded FROM generate_series(1, 96) g;
SELECT count(DISTINCT metric_name) AS metric_names FROM ab_results WHERE experiment_id = :e;
SELECT expect_error($$SELECT ab_record_result('ovf', 'one too many', 1, 'u1')$$);
SELECT ab_record_result('ovf', 'extra 5', 2, 'u1') AS known_names_still_record;

-- Look-alike, invisible and bidirectional names.
SELECT ab_create_experiment(jsonb_build_object('name', E'caf\u00e9', 'experiment_type', 'ui', 'primary_metric', 'm',
  'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb)) > 0 AS created;
SELECT expect_error($$SELECT ab_create_experiment(jsonb_build_object('name', E'cafe\u0301', 'experiment_type', 'ui', 'primary_metric', 'm',
  'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb))$$);
SELECT ab_get_experiment(E'cafe\u0301') ->> 'name' = E'caf\u00e9' AS found_by_other_spelling;
SELECT ab_start_experiment(E'cafe\u0301');
SELECT ab_get_variant(E'cafe\u0301', 'u1') IS NOT NULL AS assigned_by_other_spelling;
SELECT expect_error($$SELECT ab_create_experiment(jsonb_build_object('name', E'\u200B', 'experiment_type', 'ui', 'primary_metric', 'm',
  'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb))$$);
SELECT expect_error($$SELECT ab_create_experiment(jsonb_build_object('name', 'rlo', 'experiment_type', 'ui', 'primary_metric', 'm',
  'variants', jsonb_build_array(jsonb_build_object('name', 'a', 'is_control', true, 'traffic_allocation', 50),
                                jsonb_build_object('name', E'B\u202EA', 'traffic_allocation', 50))))$$);
SELECT expect_error($$SELECT ab_create_experiment(jsonb_build_object('name', 'twins', 'experiment_type', 'ui', 'primary_metric', 'm',
  'variants', jsonb_build_array(jsonb_build_object('name', E'caf\u00e9', 'is_control', true, 'traffic_allocation', 50),
                                jsonb_build_object('name', E'cafe\u0301', 'traffic_allocation', 50))))$$);
SELECT expect_error($$SELECT ab_create_layer(E'layer\u2066')$$);
SELECT ab_create_layer(E'L\u00e9') > 0 AS layer_created;
SELECT expect_error($$SELECT ab_create_layer(E'Le\u0301')$$);
SELECT ab_layer_group(E'Le\u0301', 'u1') IS NULL AS free_point_of_the_layer;
SELECT ab_delete_layer(E'Le\u0301');
SELECT count(*) AS layers_left FROM ab_layers WHERE name LIKE 'L%';
SELECT ab_normalize_name('name', E'cafe\u0301') = E'caf\u00e9' AS normalized;

-- NULL in an administration call is an error, never a silent no-op.
SELECT expect_error($$SELECT ab_create_experiment(NULL)$$);
SELECT expect_error($$SELECT ab_start_experiment(NULL::text)$$);
SELECT expect_error($$SELECT ab_start_experiment(NULL::bigint)$$);
SELECT expect_error($$SELECT ab_stop_experiment(NULL::text)$$);
SELECT expect_error($$SELECT ab_stop_experiment('ovf', NULL)$$);
SELECT expect_error($$SELECT ab_stop_experiment(NULL::bigint, true)$$);
SELECT expect_error($$SELECT ab_delete_experiment(NULL::text)$$);
SELECT expect_error($$SELECT ab_delete_experiment(NULL::bigint)$$);
SELECT expect_error($$SELECT ab_get_experiment(NULL)$$);
SELECT expect_error($$SELECT ab_get_experiment(NULL::bigint)$$);
SELECT expect_error($$SELECT ab_delete_layer(NULL)$$);
SELECT expect_error($$SELECT ab_normalize_name('layer name', NULL)$$);
SELECT status FROM ab_experiments WHERE id = :e;

-- Definitions are cached while every invalidation trigger fires always, and read on every
-- call (slower, never stale) while one does not. Scans of ab_experiments within a
-- transaction count the loads.
CREATE TEMP VIEW experiment_scans AS
SELECT pg_stat_get_xact_numscans('ab_experiments'::regclass)
     + pg_stat_get_xact_numscans('ab_experiments_name_key'::regclass) AS n;
BEGIN;
SELECT n AS before FROM experiment_scans \gset
SELECT count(ab_get_variant('ovf', 'u' || (g % 5))) AS calls FROM generate_series(1, 200) g;
SELECT n - :before < 5 AS cached FROM experiment_scans;
COMMIT;
ALTER TABLE ab_variants ENABLE TRIGGER ab_variants_invalidate_cache;
BEGIN;
SELECT n AS before FROM experiment_scans \gset
SELECT count(ab_get_variant('ovf', 'u' || (g % 5))) AS calls FROM generate_series(1, 200) g;
SELECT n - :before >= 200 AS read_every_call FROM experiment_scans;
COMMIT;
ALTER TABLE ab_variants ENABLE ALWAYS TRIGGER ab_variants_invalidate_cache;

-- Statistics functions at the edges.
SELECT * FROM ab_srm_test(ARRAY[5, 5], ARRAY[1e308, 1e308]);
SELECT expect_error($$SELECT ab_adjust_p_values('{{0.01, 0.02}, {0.03, 0.04}}')$$);
SELECT expect_error($$SELECT * FROM ab_srm_test('{{1, 2}, {3, 4}}', '{1, 1, 1, 1}')$$);
SELECT ab_sample_size(0, 0.1) AS zero_sd, ab_sample_size(1, 100) AS huge_mde;

SELECT ab_stop_experiment('ovf', true) ->> 'status' AS stopped;
SELECT ab_stop_experiment(E'caf\u00e9') ->> 'status' AS stopped;
SELECT ab_delete_experiment('ovf'), ab_delete_experiment(E'caf\u00e9');
SELECT count(*) AS rows_left FROM ab_results WHERE experiment_id = :e;
