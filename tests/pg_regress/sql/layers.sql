-- Layers: experiments of one layer split its traffic and never share a user; the layer's
-- holdout is kept out of all of them, and a holdout experiment measures it.
SELECT ab_create_layer('checkout', 10, 'Checkout page experiments', salt => 'layer-salt-1') > 0 AS created;
-- Fixed salts make the counts below exact.

CREATE FUNCTION layered(name text, layer jsonb, control numeric DEFAULT 50, treatment numeric DEFAULT 50) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('name', name, 'experiment_type', 'ui', 'primary_metric', 'conversion_rate',
                              'layer', layer, 'variants', jsonb_build_array(
        jsonb_build_object('name', 'control', 'is_control', true, 'traffic_allocation', control),
        jsonb_build_object('name', 'treatment', 'traffic_allocation', treatment)))
$$;

-- Nine experiments of 10% each fill the layer above its 10% holdout.
SELECT count(*) AS started FROM (
    SELECT ab_create_experiment(layered('exp' || i, '{"name": "checkout", "percentage": 10}') || jsonb_build_object('salt', 'exp-salt-' || i)) AS id
    FROM generate_series(1, 9) i) s, LATERAL ab_start_experiment(s.id);
SELECT ab_create_experiment(layered('checkout holdout', '{"name": "checkout", "holdout": true}', 10, 90)) > 0 AS created;
SELECT ab_start_experiment('checkout holdout');
SELECT e.name, e.salt = 'layer-salt-1' AS layer_salt, m.range_start, m.range_end
FROM ab_layer_experiments m JOIN ab_experiments e ON e.id = m.experiment_id ORDER BY m.range_start NULLS FIRST;
SELECT name, holdout_percentage, allocated_percentage, free_percentage, jsonb_array_length(experiments) AS experiments
FROM ab_layer_overview;
SELECT experiment_name, detail FROM ab_audit
WHERE action = 'created' AND experiment_name IN ('exp2', 'checkout holdout') ORDER BY id;
SELECT ab_get_experiment('exp2') -> 'layer' AS layer, ab_get_experiment('checkout holdout') -> 'layer' AS holdout_layer;

-- 20000 users ask every experiment of the layer.
CREATE TEMP TABLE asked AS
SELECT 'user-' || g AS user_id, e.name AS experiment, ab_get_variant(e.name, 'user-' || g) ->> 'variant' AS variant
FROM generate_series(1, 20000) g CROSS JOIN (SELECT name FROM ab_experiments WHERE name LIKE 'exp%') e;
-- Nobody is in two experiments.
SELECT count(*) AS users_in_two FROM (
    SELECT user_id FROM asked WHERE variant IS NOT NULL GROUP BY user_id HAVING count(*) > 1) s;
-- Each experiment gets about 10% of the users, split about 50/50 inside.
SELECT experiment, count(variant) AS enrolled, count(*) FILTER (WHERE variant = 'treatment') AS treatment
FROM asked GROUP BY 1 ORDER BY 1;
-- The holdout (about 10%) is in none; everyone else is in exactly the one ab_layer_group names.
SELECT grp = 'holdout' AS held_out, count(*) AS users, count(*) FILTER (WHERE n > 0) AS enrolled,
       count(*) FILTER (WHERE n > 0 AND in_experiment <> grp) AS elsewhere
FROM (SELECT user_id, count(variant) AS n, max(experiment) FILTER (WHERE variant IS NOT NULL) AS in_experiment,
             ab_layer_group('checkout', user_id) AS grp
      FROM asked GROUP BY user_id) s
GROUP BY 1 ORDER BY 1;
-- The holdout experiment's control is exactly the holdout.
SELECT v ->> 'variant' AS variant, count(*) AS users,
       count(*) FILTER (WHERE (v ->> 'is_control')::boolean <> (ab_layer_group('checkout', u) = 'holdout')) AS mismatched
FROM (SELECT 'user-' || g AS u, ab_get_variant('checkout holdout', 'user-' || g) AS v FROM generate_series(1, 20000) g) s
GROUP BY 1 ORDER BY 1;

-- The layer is full.
SELECT expect_error($$SELECT ab_create_experiment(layered('exp10', '{"name": "checkout", "percentage": 5}'))$$);
-- Stopping an experiment gives its range back; a later one takes it, and users there join
-- the new experiment while the stopped one enrolls nobody.
SELECT ab_stop_experiment('exp3') ->> 'status' AS status;
SELECT ab_create_experiment(layered('exp10', '{"name": "checkout", "percentage": 5}')) > 0 AS created;
SELECT ab_start_experiment('exp10');
SELECT e.name, m.range_start, m.range_end
FROM ab_layer_experiments m JOIN ab_experiments e ON e.id = m.experiment_id WHERE e.name IN ('exp3', 'exp10') ORDER BY 1;
SELECT free_percentage FROM ab_layer_overview WHERE name = 'checkout';
SELECT count(*) AS users_in_two FROM (
    SELECT 'user-' || g AS u FROM generate_series(1, 20000) g
    WHERE (SELECT count(*) FROM ab_experiments e WHERE e.name LIKE 'exp%'
           AND ab_get_variant(e.name, 'user-' || g) IS NOT NULL) > 1) s;

-- Ramping up inside a layer: enrolled users keep their variant, new users stay in the range.
SELECT ab_create_layer('ramp') > 0 AS created;
-- A salt may change while the layer has no experiments.
UPDATE ab_layers SET salt = 'layer-salt-2' WHERE name = 'ramp';
SELECT ab_create_experiment(layered('ramped', '{"name": "ramp", "percentage": 40}', 10, 10) || '{"salt": "ramped-salt"}') > 0 AS created;
SELECT ab_start_experiment('ramped');
CREATE TEMP TABLE before_ramp AS
SELECT 'r-' || g AS u, ab_get_variant('ramped', 'r-' || g) ->> 'variant' AS variant FROM generate_series(1, 5000) g;
UPDATE ab_variants SET traffic_allocation = 50 WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'ramped');
SELECT count(*) FILTER (WHERE b.variant IS NOT NULL) AS enrolled_before,
       count(*) FILTER (WHERE b.variant IS NOT NULL AND b.variant IS DISTINCT FROM a.variant) AS changed,
       count(*) FILTER (WHERE a.variant IS NOT NULL) AS enrolled_after,
       count(*) FILTER (WHERE a.variant IS NOT NULL AND ab_layer_group('ramp', b.u) IS DISTINCT FROM 'ramped') AS outside_range
FROM before_ramp b, LATERAL (SELECT ab_get_variant('ramped', b.u) ->> 'variant' AS variant) a;

-- Errors, each with its SQLSTATE, and nothing written.
SELECT count(*) AS experiments_before FROM ab_experiments \gset
SELECT expect_error($$SELECT ab_create_experiment(layered('x', '{"name": "nowhere", "percentage": 5}'))$$);
SELECT expect_error($$SELECT ab_create_experiment(layered('x', '{"name": "checkout", "percentage": 0}'))$$);
SELECT expect_error($$SELECT ab_create_experiment(layered('x', '{"name": "checkout"}'))$$);
SELECT expect_error($$SELECT ab_create_experiment(layered('x', '{"name": "checkout", "holdout": true}', 5, 95))$$);
SELECT expect_error($$SELECT ab_create_experiment(layered('x', '{"name": "ramp", "holdout": true}', 10, 90))$$);
SELECT expect_error($$SELECT ab_create_experiment(layered('x', '{"name": "ramp", "percentage": 70}'))$$);
SELECT expect_error($$SELECT ab_create_layer('checkout')$$);
SELECT expect_error($$SELECT ab_create_layer(' ')$$);
SELECT expect_error($$SELECT ab_create_layer(NULL)$$);
SELECT expect_error($$SELECT ab_create_layer(repeat('l', 201))$$);
SELECT expect_error($$SELECT ab_create_layer('l', 100)$$);
SELECT expect_error($$SELECT ab_create_layer('l', -1)$$);
SELECT expect_error($$SELECT ab_create_layer('l', 12.345)$$);
SELECT expect_error($$SELECT ab_create_layer('l', 'NaN')$$);
SELECT expect_error($$SELECT ab_create_layer('l', NULL)$$);
SELECT expect_error($$SELECT ab_create_layer('l', 5, salt => ' ')$$);
SELECT expect_error($$SELECT ab_delete_layer('checkout')$$);
SELECT expect_error($$SELECT ab_delete_layer('nowhere')$$);
SELECT expect_error($$SELECT ab_layer_group('nowhere', 'user-1')$$);
SELECT expect_error($$SELECT ab_layer_group('checkout', '')$$);
SELECT expect_error($$UPDATE ab_layers SET holdout_percentage = 20 WHERE name = 'checkout'$$);
SELECT expect_error($$UPDATE ab_layers SET salt = 'other' WHERE name = 'checkout'$$);
-- Edits by hand are checked at commit too.
SELECT regexp_replace(expect_error($$UPDATE ab_layer_experiments SET range_start = 1500, range_end = 2500
    WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'exp2'); SET CONSTRAINTS ALL IMMEDIATE$$),
    'id \d+', 'id N') AS expect_error;
SELECT regexp_replace(expect_error($$UPDATE ab_layer_experiments SET range_start = 500
    WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'exp1'); SET CONSTRAINTS ALL IMMEDIATE$$),
    'id \d+', 'id N') AS expect_error;
SELECT count(*) = :experiments_before AS nothing_written FROM ab_experiments;
SELECT count(*) AS layers FROM ab_layers;

-- Holdouts with two decimals that float8 holds only approximately.
SELECT ab_create_layer('small holdout', 0.29) > 0 AS created;
SELECT ab_delete_layer('small holdout');

-- A layer is deleted once its experiments are.
SELECT ab_stop_experiment('ramped') ->> 'status' AS status;
SELECT ab_delete_experiment('ramped');
SELECT ab_delete_layer('ramp');
SELECT name FROM ab_layers ORDER BY 1;
