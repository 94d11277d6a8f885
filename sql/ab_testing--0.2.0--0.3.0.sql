-- ab_testing 0.2.0 -> 0.3.0: allocations with two decimals that float8 cannot hold exactly
-- (0.29) pass the check; layers of mutually exclusive experiments with holdouts
-- (ab_layers, ab_layer_experiments, ab_create_layer, ab_delete_layer, ab_layer_group,
-- ab_layer_overview), the layer in ab_get_experiment, and the layer objects in the grant
-- functions. Everything here is also in the fresh-install sources (sql/schema.sql,
-- sql/functions.sql, src/); tests/client/test_operations.py checks that an upgraded database
-- matches a fresh install object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.3.0'" to load this file. \quit
-- Allocations such as 0.29 are 28.999999999999996 when multiplied by 100 in float8: the
-- two-decimals check allows for that.
ALTER TABLE ab_variants DROP CONSTRAINT ab_variants_traffic_allocation_check;
ALTER TABLE ab_variants ADD CONSTRAINT ab_variants_traffic_allocation_check
    CHECK (traffic_allocation >= 0 AND traffic_allocation <= 100
           AND abs(traffic_allocation * 100 - round(traffic_allocation * 100)) < 1e-6);

-- Layers: the experiments of one layer never share a user. A user's layer point (the same
-- hash as an experiment's bucket, with the layer's salt) below the holdout keeps the user
-- out of every experiment of the layer; each experiment owns a range of the points above it.
CREATE TABLE ab_layers (
    id                  bigserial PRIMARY KEY,
    name                text NOT NULL UNIQUE CHECK (btrim(name) <> '' AND char_length(name) <= 200),
    description         text NOT NULL DEFAULT '',
    holdout_percentage  float8 NOT NULL DEFAULT 0
                        CHECK (holdout_percentage >= 0 AND holdout_percentage < 100
                               AND abs(holdout_percentage * 100 - round(holdout_percentage * 100)) < 1e-6),
    salt                text NOT NULL DEFAULT pg_catalog.gen_random_uuid()::text,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- The experiments of each layer and the layer points [range_start, range_end) each owns;
-- a holdout experiment (which measures the holdout against everyone else) owns no range.
CREATE TABLE ab_layer_experiments (
    experiment_id  bigint PRIMARY KEY,
    layer_id       bigint NOT NULL,
    range_start    integer,
    range_end      integer,
    CHECK ((range_start IS NULL) = (range_end IS NULL)),
    CHECK (range_start >= 0 AND range_start < range_end AND range_end <= 10000)
);
CREATE INDEX ab_layer_experiments_layer ON ab_layer_experiments (layer_id);

-- The ranges of a layer's draft and running experiments are disjoint and above its holdout,
-- for edits by hand too. A range whose layer is missing is let through: pg_restore loads
-- ab_layer_experiments before ab_layers.
CREATE FUNCTION ab_check_layer_ranges() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    holdout_bp integer;
    other text;
BEGIN
    IF NEW.range_start IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT round(holdout_percentage * 100)::integer INTO holdout_bp FROM @extschema@.ab_layers WHERE id = NEW.layer_id;
    IF FOUND AND NEW.range_start < holdout_bp THEN
        RAISE EXCEPTION 'layer range [%, %) of experiment with id % reaches into the layer''s holdout [0, %)',
            NEW.range_start, NEW.range_end, NEW.experiment_id, holdout_bp
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT e.name INTO other
      FROM @extschema@.ab_layer_experiments m JOIN @extschema@.ab_experiments e ON e.id = m.experiment_id
     WHERE m.layer_id = NEW.layer_id AND m.experiment_id <> NEW.experiment_id AND e.status <> 'stopped'
       AND m.range_start < NEW.range_end AND NEW.range_start < m.range_end
       AND EXISTS (SELECT 1 FROM @extschema@.ab_experiments s WHERE s.id = NEW.experiment_id AND s.status <> 'stopped')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'layer range [%, %) of experiment with id % overlaps the range of experiment "%"',
            NEW.range_start, NEW.range_end, NEW.experiment_id, other
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER ab_layer_experiments_disjoint
    AFTER INSERT OR UPDATE ON ab_layer_experiments
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ab_check_layer_ranges();

-- A layer's salt and holdout decide who is where: they cannot change under its experiments.
CREATE FUNCTION ab_check_layer_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (NEW.salt, NEW.holdout_percentage) IS DISTINCT FROM (OLD.salt, OLD.holdout_percentage)
       AND EXISTS (SELECT 1 FROM @extschema@.ab_layer_experiments WHERE layer_id = OLD.id) THEN
        RAISE EXCEPTION 'layer "%" has experiments, so its salt and holdout cannot change', OLD.name
            USING ERRCODE = 'object_in_use', HINT = 'create a new layer instead';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER ab_layers_check_update
    BEFORE UPDATE ON ab_layers
    FOR EACH ROW EXECUTE FUNCTION ab_check_layer_update();

SELECT pg_catalog.pg_extension_config_dump('ab_layers', '');
SELECT pg_catalog.pg_extension_config_dump('ab_layers_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ab_layer_experiments', '');

COMMENT ON COLUMN ab_audit.detail IS 'The declared winner of a stop; the type of a creation, and the layer and range an experiment was placed in.';
COMMENT ON TABLE ab_layers IS 'Layers of mutually exclusive experiments, each with a holdout kept out of all of them; made by ab_create_layer.';
COMMENT ON COLUMN ab_layers.name IS 'Unique name, as given in an experiment definition''s "layer".';
COMMENT ON COLUMN ab_layers.description IS 'Free text.';
COMMENT ON COLUMN ab_layers.holdout_percentage IS 'Percentage of users (two decimals) kept out of every experiment of the layer: those whose layer point is below holdout_percentage * 100.';
COMMENT ON COLUMN ab_layers.salt IS 'Hashing salt of the layer points: with the user id it decides where in the layer a user falls.';
COMMENT ON COLUMN ab_layers.created_at IS 'When the layer was created.';
COMMENT ON TABLE ab_layer_experiments IS 'The experiments of each layer and the range of layer points each owns.';
COMMENT ON COLUMN ab_layer_experiments.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_layer_experiments.layer_id IS 'ab_layers.id of the layer.';
COMMENT ON COLUMN ab_layer_experiments.range_start IS 'First layer point (of 0-9999) the experiment may enroll; NULL for a holdout experiment.';
COMMENT ON COLUMN ab_layer_experiments.range_end IS 'End (exclusive) of the experiment''s layer points; NULL for a holdout experiment.';
COMMENT ON FUNCTION ab_check_layer_ranges() IS 'Constraint trigger: the ranges of a layer''s draft and running experiments are disjoint and above its holdout.';
COMMENT ON FUNCTION ab_check_layer_update() IS 'Trigger: a layer''s salt and holdout cannot change once it has experiments.';

CREATE FUNCTION ab_layer_group(layer text, user_id text) RETURNS text
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_layer_group_wrapper';

CREATE OR REPLACE FUNCTION ab_get_experiment(experiment bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e @extschema@.ab_experiments;
BEGIN
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

CREATE FUNCTION ab_create_layer(name text, holdout_percentage double precision DEFAULT 0, description text DEFAULT '',
                                salt text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    layer_id bigint;
BEGIN
    IF ab_create_layer.name IS NULL OR btrim(ab_create_layer.name) = '' THEN
        RAISE EXCEPTION 'layer name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF char_length(ab_create_layer.name) > 200 THEN
        RAISE EXCEPTION 'layer name is % characters long, at most 200 are allowed', char_length(ab_create_layer.name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF holdout_percentage IS NULL OR NOT (holdout_percentage >= 0 AND holdout_percentage < 100)
       OR abs(holdout_percentage * 100 - round(holdout_percentage * 100)) >= 1e-6 THEN
        RAISE EXCEPTION 'holdout_percentage is %, must be at least 0 and below 100 with at most two decimals',
            coalesce(holdout_percentage::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.ab_layers l WHERE l.name = ab_create_layer.name) THEN
        RAISE EXCEPTION 'layer "%" already exists', ab_create_layer.name
            USING ERRCODE = 'duplicate_object', HINT = 'ab_layer_overview lists the layers';
    END IF;
    IF salt IS NOT NULL AND (btrim(salt) = '' OR char_length(salt) > 200) THEN
        RAISE EXCEPTION 'salt must be 1 to 200 characters long' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO @extschema@.ab_layers (name, holdout_percentage, description, salt)
    VALUES (ab_create_layer.name, holdout_percentage, coalesce(description, ''),
            coalesce(salt, pg_catalog.gen_random_uuid()::text))
    RETURNING id INTO layer_id;
    RETURN layer_id;
END;
$$;

CREATE FUNCTION ab_delete_layer(name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    layer @extschema@.ab_layers;
    members text;
BEGIN
    SELECT * INTO layer FROM @extschema@.ab_layers l WHERE l.name = ab_delete_layer.name FOR UPDATE;
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

CREATE TRIGGER ab_layer_experiments_invalidate_cache
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab_layer_experiments
    FOR EACH STATEMENT EXECUTE FUNCTION ab_invalidate_cache();

CREATE VIEW ab_layer_overview AS
SELECT l.id,
       l.name,
       l.holdout_percentage,
       coalesce(sum(m.range_end - m.range_start) FILTER (WHERE e.status <> 'stopped'), 0)::float8 / 100 AS allocated_percentage,
       100 - l.holdout_percentage
           - coalesce(sum(m.range_end - m.range_start) FILTER (WHERE e.status <> 'stopped'), 0)::float8 / 100 AS free_percentage,
       coalesce(jsonb_agg(jsonb_build_object('experiment', e.name, 'status', e.status, 'holdout', m.range_start IS NULL,
                                             'range_start', m.range_start, 'range_end', m.range_end)
                          ORDER BY m.range_start NULLS FIRST, e.id) FILTER (WHERE e.id IS NOT NULL), '[]') AS experiments,
       l.created_at
FROM @extschema@.ab_layers l
LEFT JOIN @extschema@.ab_layer_experiments m ON m.layer_id = l.id
LEFT JOIN @extschema@.ab_experiments e ON e.id = m.experiment_id
GROUP BY l.id;

COMMENT ON VIEW ab_layer_overview IS 'Per layer: holdout, share of the traffic taken by draft and running experiments, share still free, and each experiment with its range of layer points.';
COMMENT ON FUNCTION ab_create_layer(text, double precision, text, text) IS 'Creates a layer of mutually exclusive experiments, keeping holdout_percentage of its users out of all of them; returns its id. salt defaults to a random UUID.';
COMMENT ON FUNCTION ab_delete_layer(text) IS 'Deletes a layer that no experiment belongs to any more.';
COMMENT ON FUNCTION ab_layer_group(text, text) IS 'Where a user falls in a layer: ''holdout'', the name of the draft or running experiment owning the user''s layer point, or NULL for a free point.';

ALTER FUNCTION ab_layer_group(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
-- CREATE OR REPLACE reset it.
ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;

REVOKE ALL ON FUNCTION
    ab_create_layer(text, double precision, text, text), ab_delete_layer(text), ab_layer_group(text, text),
    ab_check_layer_ranges(), ab_check_layer_update()
FROM PUBLIC;

-- The grant functions now cover the layer objects too.
CREATE OR REPLACE FUNCTION ab_grant_app(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', '@extschema@', role);
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

CREATE OR REPLACE FUNCTION ab_revoke_app(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_get_variant(text, text, jsonb, text), '
                   '@extschema@.ab_get_variant(bigint, text, jsonb, text), '
                   '@extschema@.ab_record_result(text, text, double precision, text, text), '
                   '@extschema@.ab_record_result(bigint, text, double precision, text, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_layer_group(text, text) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_experiment_overview FROM %I', role);
END;
$$;

CREATE OR REPLACE FUNCTION ab_grant_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', '@extschema@', role);
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

CREATE OR REPLACE FUNCTION ab_revoke_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview '
                   'FROM %I', role);
END;
$$;

CREATE OR REPLACE FUNCTION ab_grant_admin(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM @extschema@.ab_grant_app(role);
    PERFORM @extschema@.ab_grant_analyst(role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_create_experiment(jsonb), '
                   '@extschema@.ab_start_experiment(text), @extschema@.ab_start_experiment(bigint), '
                   '@extschema@.ab_stop_experiment(text, boolean), @extschema@.ab_stop_experiment(bigint, boolean), '
                   '@extschema@.ab_delete_experiment(text), @extschema@.ab_delete_experiment(bigint), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text) TO %I', role);
    -- Administration runs with the caller's rights.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_covariates, @extschema@.ab_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments TO %I', role);
    EXECUTE format('GRANT INSERT ON @extschema@.ab_audit TO %I', role);
    EXECUTE format('GRANT USAGE ON SEQUENCE @extschema@.ab_experiments_id_seq, @extschema@.ab_variants_id_seq, '
                   '@extschema@.ab_results_id_seq, @extschema@.ab_insights_id_seq, @extschema@.ab_audit_id_seq, '
                   '@extschema@.ab_layers_id_seq TO %I', role);
END;
$$;

CREATE OR REPLACE FUNCTION ab_revoke_admin(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_create_experiment(jsonb), '
                   '@extschema@.ab_start_experiment(text), @extschema@.ab_start_experiment(bigint), '
                   '@extschema@.ab_stop_experiment(text, boolean), @extschema@.ab_stop_experiment(bigint, boolean), '
                   '@extschema@.ab_delete_experiment(text), @extschema@.ab_delete_experiment(bigint), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text) FROM %I', role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_covariates, @extschema@.ab_insights, '
                   '@extschema@.ab_audit, @extschema@.ab_layers, @extschema@.ab_layer_experiments FROM %I', role);
    EXECUTE format('REVOKE USAGE ON SEQUENCE @extschema@.ab_experiments_id_seq, @extschema@.ab_variants_id_seq, '
                   '@extschema@.ab_results_id_seq, @extschema@.ab_insights_id_seq, @extschema@.ab_audit_id_seq, '
                   '@extschema@.ab_layers_id_seq FROM %I', role);
    PERFORM @extschema@.ab_revoke_analyst(role);
    PERFORM @extschema@.ab_revoke_app(role);
END;
$$;
