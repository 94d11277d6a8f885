-- ab_testing 0.5.0 -> 0.6.0: strict metric sets.
-- * ab_experiments.strict_metrics: an experiment that declares metrics accepts results and
--   covariates under those names only. Experiments created before 0.6.0 keep accepting any
--   name (false); new definitions default to true when they declare metrics.
-- * ab_get_experiment shows strict_metrics.
-- Everything here is also in the fresh-install sources (sql/schema.sql, sql/functions.sql,
-- src/); tests/client/test_operations.py checks that an upgraded database matches a fresh
-- install object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.6.0'" to load this file. \quit

ALTER TABLE ab_experiments ADD COLUMN strict_metrics boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN ab_experiments.strict_metrics IS 'When true, results and covariates are accepted only under the metric names declared in metrics (the default when a definition declares metrics).';

CREATE OR REPLACE FUNCTION ab_get_experiment(experiment bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e @extschema@.ab_experiments;
    users jsonb;
BEGIN
    IF experiment IS NULL THEN
        RAISE EXCEPTION 'experiment must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO e FROM @extschema@.ab_experiments WHERE id = experiment;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'experiment with id % does not exist', experiment
            USING ERRCODE = 'undefined_object', HINT = 'ab_experiment_overview lists the experiments';
    END IF;
    -- Counted apart from the variants (Citus runs no correlated subquery under a reference table).
    SELECT jsonb_object_agg(c.variant_id::text, c.n) INTO users
      FROM (SELECT a.variant_id, count(*) AS n FROM @extschema@.ab_assignments a
            WHERE a.experiment_id = experiment GROUP BY a.variant_id) c;
    RETURN jsonb_build_object(
        'id', e.id,
        'name', e.name,
        'description', e.description,
        'experiment_type', e.experiment_type,
        'status', e.status,
        'primary_metric', e.primary_metric,
        'metrics', e.metrics,
        'strict_metrics', e.strict_metrics,
        'target_segments', e.target_segments,
        'min_sample_size', e.min_sample_size,
        'alpha', e.alpha,
        'sequential', e.sequential_tuning IS NOT NULL,
        'sequential_tuning', e.sequential_tuning,
        'correction', e.correction,
        'power', e.power,
        'salt', e.salt,
        'winner', e.winner_variant,
        'created_at', e.created_at,
        'started_at', e.started_at,
        'stopped_at', e.stopped_at,
        'variants', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'name', v.name,
                       'is_control', v.is_control,
                       'traffic_allocation', v.traffic_allocation,
                       'config', v.config,
                       'users', coalesce((users ->> v.id::text)::bigint, 0))
                   ORDER BY v.position), '[]')
            FROM @extschema@.ab_variants v WHERE v.experiment_id = e.id),
        'users_assigned', (SELECT count(*) FROM @extschema@.ab_assignments a WHERE a.experiment_id = e.id),
        'results_recorded', (SELECT count(*) FROM @extschema@.ab_results r WHERE r.experiment_id = e.id),
        'covariates_recorded', (SELECT count(*) FROM @extschema@.ab_covariates c WHERE c.experiment_id = e.id),
        'layer', (SELECT jsonb_build_object('name', l.name, 'holdout', m.range_start IS NULL,
                                            'percentage', (m.range_end - m.range_start)::float8 / 100,
                                            'range_start', m.range_start, 'range_end', m.range_end)
                  FROM @extschema@.ab_layer_experiments m JOIN @extschema@.ab_layers l ON l.id = m.layer_id
                  WHERE m.experiment_id = e.id));
END;
$$;
-- CREATE OR REPLACE resets what the function's SET clause does not carry.
ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;
