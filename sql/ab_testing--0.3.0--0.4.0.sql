-- ab_testing 0.3.0 -> 0.4.0: hardening.
-- * Recorded values and covariates are bounded to [-1e15, 1e15], so no analysis can overflow.
-- * The cache invalidation triggers fire always (also under session_replication_role = replica).
-- * Administration functions raise 22004 on NULL instead of silently doing nothing.
-- * Names are stored in NFC and checked by ab_normalize_name (layers too).
-- * The grant functions work in a schema whose name needs quoting.
-- Everything here is also in the fresh-install sources (sql/schema.sql, sql/functions.sql,
-- src/); tests/client/test_operations.py checks that an upgraded database matches a fresh
-- install object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.4.0'" to load this file. \quit

-- Values beyond the bound recorded by earlier versions stay (the constraint is then left
-- NOT VALID, with a warning): an analysis of such an experiment can still overflow.
ALTER TABLE ab_results DROP CONSTRAINT ab_results_metric_value_check;
ALTER TABLE ab_results ADD CONSTRAINT ab_results_metric_value_check
    CHECK (metric_value >= -1e15 AND metric_value <= 1e15) NOT VALID;
ALTER TABLE ab_covariates DROP CONSTRAINT ab_covariates_value_check;
ALTER TABLE ab_covariates ADD CONSTRAINT ab_covariates_value_check
    CHECK (value >= -1e15 AND value <= 1e15) NOT VALID;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM @extschema@.ab_results WHERE NOT (metric_value >= -1e15 AND metric_value <= 1e15)) THEN
        RAISE WARNING 'ab_results has values outside [-1e15, 1e15]; their experiments may fail to analyse'
            USING HINT = 'delete or correct them, then run ALTER TABLE ab_results VALIDATE CONSTRAINT ab_results_metric_value_check';
    ELSE
        ALTER TABLE @extschema@.ab_results VALIDATE CONSTRAINT ab_results_metric_value_check;
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.ab_covariates WHERE NOT (value >= -1e15 AND value <= 1e15)) THEN
        RAISE WARNING 'ab_covariates has values outside [-1e15, 1e15]'
            USING HINT = 'delete or correct them, then run ALTER TABLE ab_covariates VALIDATE CONSTRAINT ab_covariates_value_check';
    ELSE
        ALTER TABLE @extschema@.ab_covariates VALIDATE CONSTRAINT ab_covariates_value_check;
    END IF;
END;
$$;
COMMENT ON COLUMN ab_results.metric_value IS 'Observed value, between -1e15 and 1e15 (so that no analysis can overflow).';
COMMENT ON COLUMN ab_covariates.value IS 'The user''s value before the experiment (for instance the same metric over the previous month), between -1e15 and 1e15.';

ALTER TABLE ab_experiments ENABLE ALWAYS TRIGGER ab_experiments_invalidate_cache;
ALTER TABLE ab_variants ENABLE ALWAYS TRIGGER ab_variants_invalidate_cache;
ALTER TABLE ab_layer_experiments ENABLE ALWAYS TRIGGER ab_layer_experiments_invalidate_cache;

-- NULL arguments now reach the library, which raises 22004.
ALTER FUNCTION ab_create_experiment(jsonb) CALLED ON NULL INPUT;
ALTER FUNCTION ab_start_experiment(text) CALLED ON NULL INPUT;
ALTER FUNCTION ab_start_experiment(bigint) CALLED ON NULL INPUT;
ALTER FUNCTION ab_stop_experiment(text, boolean) CALLED ON NULL INPUT;
ALTER FUNCTION ab_stop_experiment(bigint, boolean) CALLED ON NULL INPUT;
ALTER FUNCTION ab_delete_experiment(text) CALLED ON NULL INPUT;
ALTER FUNCTION ab_delete_experiment(bigint) CALLED ON NULL INPUT;

CREATE FUNCTION ab_normalize_name("what" TEXT, "name" TEXT) RETURNS TEXT
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_normalize_name_wrapper';
COMMENT ON FUNCTION ab_normalize_name(text, text) IS 'The name in Unicode NFC, or an error saying why it cannot name an experiment, variant, metric or layer (control, invisible or bidirectional formatting characters, blank, over 200 characters).';

-- CREATE OR REPLACE resets SECURITY DEFINER: set again below.
CREATE OR REPLACE FUNCTION ab_get_experiment(experiment bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e @extschema@.ab_experiments;
BEGIN
    IF experiment IS NULL THEN
        RAISE EXCEPTION 'experiment must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO e FROM @extschema@.ab_experiments WHERE id = experiment;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'experiment with id % does not exist', experiment
            USING ERRCODE = 'undefined_object', HINT = 'ab_experiment_overview lists the experiments';
    END IF;
    RETURN jsonb_build_object(
        'id', e.id,
        'name', e.name,
        'description', e.description,
        'experiment_type', e.experiment_type,
        'status', e.status,
        'primary_metric', e.primary_metric,
        'metrics', e.metrics,
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
                       'users', (SELECT count(*) FROM @extschema@.ab_assignments a
                                 WHERE a.experiment_id = e.id AND a.variant_id = v.id))
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

CREATE OR REPLACE FUNCTION ab_get_experiment(experiment text) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    experiment_id bigint;
BEGIN
    IF experiment IS NULL THEN
        RAISE EXCEPTION 'experiment must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT id INTO experiment_id FROM @extschema@.ab_experiments WHERE name = experiment;
    IF NOT FOUND AND pg_catalog.getdatabaseencoding() = 'UTF8' THEN
        -- Names are stored in NFC: another spelling of a stored name finds it too.
        SELECT id INTO experiment_id FROM @extschema@.ab_experiments WHERE name = normalize(experiment, NFC);
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'experiment "%" does not exist', experiment
            USING ERRCODE = 'undefined_object', HINT = 'ab_experiment_overview lists the experiments';
    END IF;
    RETURN @extschema@.ab_get_experiment(experiment_id);
END;
$$;

ALTER FUNCTION ab_get_experiment(text) SECURITY DEFINER;
ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;

CREATE OR REPLACE FUNCTION ab_create_layer(name text, holdout_percentage double precision DEFAULT 0, description text DEFAULT '',
                                salt text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    layer_id bigint;
    layer_name text := @extschema@.ab_normalize_name('layer name', ab_create_layer.name);
BEGIN
    IF holdout_percentage IS NULL OR NOT (holdout_percentage >= 0 AND holdout_percentage < 100)
       OR abs(holdout_percentage * 100 - round(holdout_percentage * 100)) >= 1e-6 THEN
        RAISE EXCEPTION 'holdout_percentage is %, must be at least 0 and below 100 with at most two decimals',
            coalesce(holdout_percentage::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.ab_layers l WHERE l.name = layer_name) THEN
        RAISE EXCEPTION 'layer "%" already exists', layer_name
            USING ERRCODE = 'duplicate_object', HINT = 'ab_layer_overview lists the layers';
    END IF;
    IF salt IS NOT NULL AND (btrim(salt) = '' OR char_length(salt) > 200) THEN
        RAISE EXCEPTION 'salt must be 1 to 200 characters long' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO @extschema@.ab_layers (name, holdout_percentage, description, salt)
    VALUES (layer_name, holdout_percentage, coalesce(description, ''),
            coalesce(salt, pg_catalog.gen_random_uuid()::text))
    RETURNING id INTO layer_id;
    RETURN layer_id;
END;
$$;

CREATE OR REPLACE FUNCTION ab_delete_layer(name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    layer @extschema@.ab_layers;
    members text;
BEGIN
    IF ab_delete_layer.name IS NULL THEN
        RAISE EXCEPTION 'layer must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO layer FROM @extschema@.ab_layers l WHERE l.name = ab_delete_layer.name FOR UPDATE;
    IF NOT FOUND THEN
        SELECT * INTO layer FROM @extschema@.ab_layers l
         WHERE l.name = @extschema@.ab_normalize_name('layer name', ab_delete_layer.name) FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'layer "%" does not exist', ab_delete_layer.name
            USING ERRCODE = 'undefined_object', HINT = 'ab_layer_overview lists the layers';
    END IF;
    SELECT string_agg(format('"%s"', e.name), ', ' ORDER BY e.name) INTO members
      FROM @extschema@.ab_layer_experiments m JOIN @extschema@.ab_experiments e ON e.id = m.experiment_id
     WHERE m.layer_id = layer.id;
    IF members IS NOT NULL THEN
        RAISE EXCEPTION 'layer "%" still has experiments: %', layer.name, members
            USING ERRCODE = 'object_in_use', HINT = 'delete them first with ab_delete_experiment';
    END IF;
    DELETE FROM @extschema@.ab_layers WHERE id = layer.id;
END;
$$;

CREATE OR REPLACE FUNCTION ab_grant_app(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_get_variant(text, text, jsonb, text), '
                   '@extschema@.ab_get_variant(bigint, text, jsonb, text), '
                   '@extschema@.ab_record_result(text, text, double precision, text, text), '
                   '@extschema@.ab_record_result(bigint, text, double precision, text, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_layer_group(text, text) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_experiment_overview TO %I', role);
END;
$$;

CREATE OR REPLACE FUNCTION ab_grant_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview '
                   'TO %I', role);
END;
$$;
