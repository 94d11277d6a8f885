-- 0.6.0 -> 0.15.0 in one step, written by scripts/direct-updates.py (do not edit):
-- the update chain with its statements on distributed tables run on the Citus coordinator
-- only, through EXECUTE. tests/client/test_operations.py checks that an updated database
-- matches a fresh install object by object.
\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.15.0'" to load this file. \quit

DO $$
DECLARE
    creators text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname::pg_catalog.text), ', ' ORDER BY r.rolname)
      INTO creators
      FROM pg_catalog.pg_roles r
     WHERE NOT r.rolsuper AND NOT r.rolname::pg_catalog.text OPERATOR(pg_catalog.^@) 'pg_'::pg_catalog.text
       AND pg_catalog.has_schema_privilege(r.oid, '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid, 'CREATE'::pg_catalog.text);
    IF creators IS NOT NULL THEN
        RAISE EXCEPTION 'ab_testing is updated only where no role but superusers may create objects in its schema, and in schema "%" so may: %',
            '@extschema@', creators
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'an operator or function they create there could run as the role updating the extension: revoke CREATE on the schema from them for the update (REVOKE CREATE ON SCHEMA ... FROM ...), then grant it back';
    END IF;
END
$$;
DO $$
DECLARE
    owner oid;
    owner_is_superuser boolean;
    found text;
BEGIN
    SELECT CASE WHEN n.nspowner OPERATOR(pg_catalog.=) 'pg_database_owner'::pg_catalog.regrole::pg_catalog.oid
                THEN d.datdba ELSE n.nspowner END
      INTO owner
      FROM pg_catalog.pg_namespace n, pg_catalog.pg_database d
     WHERE n.oid OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid
       AND d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database();
    SELECT r.rolsuper INTO owner_is_superuser FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) owner;
    IF NOT owner_is_superuser THEN
        RAISE EXCEPTION 'ab_testing is updated from this release only in a schema owned by a superuser, and schema "%" is owned by role "%"',
            '@extschema@', pg_catalog.pg_get_userbyid(owner)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the update scripts of releases before 0.12.0 name functions and operators without a schema, and that role could create one there while the update runs: make a superuser the schema''s owner for the update (ALTER SCHEMA ... OWNER TO), or, for public, the database''s';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname::pg_catalog.text), ', ' ORDER BY r.rolname)
      INTO found
      FROM pg_catalog.pg_roles r
     WHERE NOT r.rolsuper
       AND NOT (r.rolname OPERATOR(pg_catalog.=) 'pg_database_owner'::pg_catalog.name AND owner_is_superuser)
       AND pg_catalog.has_schema_privilege(r.oid, '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid, 'CREATE'::pg_catalog.text);
    IF found IS NOT NULL THEN
        RAISE EXCEPTION 'ab_testing is updated from this release only where no role but superusers may create objects in its schema, and in schema "%" so may: %',
            '@extschema@', found
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'an operator or function they create there could run as the role updating the extension: revoke CREATE on the schema from them for the update (REVOKE CREATE ON SCHEMA ... FROM ...), then grant it back';
    END IF;
    SELECT pg_catalog.string_agg(o.what, ', ' ORDER BY o.what)
      INTO found
      FROM (SELECT p.oid::pg_catalog.regprocedure::pg_catalog.text AS what, 'pg_catalog.pg_proc'::pg_catalog.regclass AS cls, p.oid
              FROM pg_catalog.pg_proc p
             WHERE p.pronamespace OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid
            UNION ALL
            SELECT o.oid::pg_catalog.regoperator::pg_catalog.text, 'pg_catalog.pg_operator'::pg_catalog.regclass, o.oid
              FROM pg_catalog.pg_operator o
             WHERE o.oprnamespace OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid) o
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_depend d, pg_catalog.pg_extension e
                        WHERE d.classid OPERATOR(pg_catalog.=) o.cls::pg_catalog.oid AND d.objid OPERATOR(pg_catalog.=) o.oid
                          AND d.deptype OPERATOR(pg_catalog.=) 'e'::pg_catalog."char"
                          AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass::pg_catalog.oid
                          AND d.refobjid OPERATOR(pg_catalog.=) e.oid
                          AND e.extname OPERATOR(pg_catalog.=) 'ab_testing'::pg_catalog.name);
    IF found IS NOT NULL THEN
        RAISE EXCEPTION 'ab_testing is updated from this release only where its schema holds no function or operator but its own, and schema "%" holds: %',
            '@extschema@', found
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the update scripts of releases before 0.12.0 name functions and operators without a schema, and one of these could match better than pg_catalog''s and run as the role updating: move them to another schema for the update (ALTER FUNCTION ... SET SCHEMA, ALTER OPERATOR ... SET SCHEMA, ALTER EXTENSION ... SET SCHEMA), then move them back';
    END IF;
END
$$;

-- ab_testing--0.6.0--0.7.0.sql
CREATE TABLE ab_user_metrics (
    experiment_id  bigint NOT NULL,
    metric_name    text NOT NULL,
    user_id        text COLLATE "C" NOT NULL,
    variant_id     bigint NOT NULL,
    n              bigint NOT NULL CHECK (n > 0),
    total          float8 NOT NULL,
    max            float8 NOT NULL,
    PRIMARY KEY (experiment_id, metric_name, user_id, variant_id)
);

-- Writers still running with plans made for 0.6.0 finish before the fill reads the results,
-- and later ones wait for this update's commit and then see ab_user_metrics (src/cache.rs).
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_results'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'LOCK TABLE ab_results IN SHARE MODE';
    END IF;
END
$$;
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_results'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'INSERT INTO ab_user_metrics (experiment_id, metric_name, user_id, variant_id, n, total, max) SELECT experiment_id, metric_name, user_id, variant_id, count(*), sum(metric_value), max(metric_value) FROM ab_results GROUP BY experiment_id, metric_name, user_id, variant_id';
    END IF;
END
$$;

SELECT pg_catalog.pg_extension_config_dump('ab_user_metrics', '');

COMMENT ON TABLE ab_user_metrics IS 'Per-user state of each metric (results count, sum and maximum), kept with every ab_record_result; what ab_analyze reads.';
COMMENT ON COLUMN ab_user_metrics.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_user_metrics.metric_name IS 'Metric name, as recorded in ab_results.';
COMMENT ON COLUMN ab_user_metrics.user_id IS 'The application''s user identifier.';
COMMENT ON COLUMN ab_user_metrics.variant_id IS 'ab_variants.id of the variant the results were recorded against.';
COMMENT ON COLUMN ab_user_metrics.n IS 'Number of the user''s results for the metric.';
COMMENT ON COLUMN ab_user_metrics.total IS 'Sum of the user''s values for the metric.';
COMMENT ON COLUMN ab_user_metrics.max IS 'Largest of the user''s values for the metric.';

CREATE OR REPLACE VIEW ab_experiment_overview AS
SELECT e.id,
       e.name,
       e.experiment_type,
       e.status,
       e.primary_metric,
       (SELECT count(*) FROM ab_variants v WHERE v.experiment_id = e.id) AS variants,
       (SELECT count(*) FROM ab_assignments a WHERE a.experiment_id = e.id) AS users_assigned,
       (SELECT coalesce(sum(m.n), 0)::bigint FROM ab_user_metrics m WHERE m.experiment_id = e.id) AS results_recorded,
       e.winner_variant,
       e.created_at,
       e.started_at,
       e.stopped_at
FROM ab_experiments e;

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
        'results_recorded', (SELECT coalesce(sum(m.n), 0)::bigint FROM @extschema@.ab_user_metrics m WHERE m.experiment_id = e.id),
        'covariates_recorded', (SELECT count(*) FROM @extschema@.ab_covariates c WHERE c.experiment_id = e.id),
        'layer', (SELECT jsonb_build_object('name', l.name, 'holdout', m.range_start IS NULL,
                                            'percentage', (m.range_end - m.range_start)::float8 / 100,
                                            'range_start', m.range_start, 'range_end', m.range_end)
                  FROM @extschema@.ab_layer_experiments m JOIN @extschema@.ab_layers l ON l.id = m.layer_id
                  WHERE m.experiment_id = e.id));
END;
$$;

-- CREATE OR REPLACE resets SECURITY DEFINER.
ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;

CREATE FUNCTION "ab_rebuild_user_metrics"(
	"experiment" TEXT
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_rebuild_user_metrics_wrapper';

CREATE FUNCTION "ab_rebuild_user_metrics"(
	"experiment" bigint
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_rebuild_user_metrics_by_id_wrapper';

REVOKE ALL ON FUNCTION ab_rebuild_user_metrics(text), ab_rebuild_user_metrics(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ab_rebuild_user_metrics(text) IS 'Recomputes an experiment''s per-user state (ab_user_metrics) from ab_results, after ab_results was changed other than by ab_record_result; returns the rows written.';
COMMENT ON FUNCTION ab_rebuild_user_metrics(bigint) IS 'ab_rebuild_user_metrics by experiment id.';

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
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
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
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
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
                   '@extschema@.ab_rebuild_user_metrics(text), @extschema@.ab_rebuild_user_metrics(bigint), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text) TO %I', role);
    -- Administration runs with the caller's rights.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, '
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
                   '@extschema@.ab_rebuild_user_metrics(text), @extschema@.ab_rebuild_user_metrics(bigint), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text) FROM %I', role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, '
                   '@extschema@.ab_audit, @extschema@.ab_layers, @extschema@.ab_layer_experiments FROM %I', role);
    EXECUTE format('REVOKE USAGE ON SEQUENCE @extschema@.ab_experiments_id_seq, @extschema@.ab_variants_id_seq, '
                   '@extschema@.ab_results_id_seq, @extschema@.ab_insights_id_seq, @extschema@.ab_audit_id_seq, '
                   '@extschema@.ab_layers_id_seq FROM %I', role);
    PERFORM @extschema@.ab_revoke_analyst(role);
    PERFORM @extschema@.ab_revoke_app(role);
END;
$$;

CREATE OR REPLACE FUNCTION ab_distributed_views() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CREATE OR REPLACE VIEW @extschema@.ab_experiment_overview AS
    SELECT e.id,
           e.name,
           e.experiment_type,
           e.status,
           e.primary_metric,
           coalesce(v.n, 0) AS variants,
           coalesce(a.n, 0) AS users_assigned,
           coalesce(r.n, 0) AS results_recorded,
           e.winner_variant,
           e.created_at,
           e.started_at,
           e.stopped_at
    FROM @extschema@.ab_experiments e
    LEFT JOIN (SELECT experiment_id, count(*) AS n FROM @extschema@.ab_variants GROUP BY experiment_id) v
           ON v.experiment_id = e.id
    LEFT JOIN (SELECT experiment_id, count(*) AS n FROM @extschema@.ab_assignments GROUP BY experiment_id) a
           ON a.experiment_id = e.id
    LEFT JOIN (SELECT experiment_id, sum(n)::bigint AS n FROM @extschema@.ab_user_metrics GROUP BY experiment_id) r
           ON r.experiment_id = e.id;

    CREATE OR REPLACE VIEW @extschema@.ab_experiment_health AS
    WITH c AS (
        SELECT v.experiment_id, v.name AS variant, v.position, v.traffic_allocation, coalesce(a.users, 0) AS users
        FROM @extschema@.ab_variants v
        LEFT JOIN (SELECT experiment_id, variant_id, count(*) AS users
                   FROM @extschema@.ab_assignments GROUP BY experiment_id, variant_id) a
               ON a.experiment_id = v.experiment_id AND a.variant_id = v.id)
    SELECT e.id,
           e.name,
           e.status,
           e.primary_metric,
           e.min_sample_size,
           coalesce(sum(c.users), 0)::bigint AS users_assigned,
           jsonb_object_agg(c.variant, c.users ORDER BY c.position) AS users_per_variant,
           (SELECT s.p_value FROM @extschema@.ab_srm_test(array_agg(c.users ORDER BY c.position),
                                                          array_agg(c.traffic_allocation ORDER BY c.position)) s
            WHERE count(*) FILTER (WHERE c.traffic_allocation > 0) >= 2) AS srm_p_value,
           CASE WHEN e.started_at IS NOT NULL
                THEN extract(epoch FROM coalesce(e.stopped_at, pg_catalog.now()) - e.started_at) / 86400 END AS days_running,
           least(1.0, min(c.users)::float8 / e.min_sample_size) AS sample_progress
    FROM @extschema@.ab_experiments e
    JOIN c ON c.experiment_id = e.id
    GROUP BY e.id;

    CREATE OR REPLACE VIEW @extschema@.ab_latest_insights AS
    SELECT e.name AS experiment, i.*
    FROM @extschema@.ab_insights i
    JOIN @extschema@.ab_experiments e ON e.id = i.experiment_id
    JOIN (SELECT experiment_id, max(computed_at) AS computed_at FROM @extschema@.ab_insights GROUP BY experiment_id) l
      ON l.experiment_id = i.experiment_id AND l.computed_at = i.computed_at;
END;
$$;

CREATE OR REPLACE FUNCTION ab_distribute()
RETURNS TABLE (object text, layout text, changed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nsp name;
    t text;
    f text;
    unsafe_triggers text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'ab_distribute needs Citus, and the citus extension is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'add citus to shared_preload_libraries on every node, run CREATE EXTENSION citus, add the workers with citus_add_node, then call ab_distribute() on the coordinator';
    END IF;
    IF NOT citus_is_coordinator() THEN
        RAISE EXCEPTION 'ab_distribute must run on the Citus coordinator'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    SELECT n.nspname INTO nsp FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'ab_testing';

    -- The extension's triggers (cache invalidation, checks, the delete lock) must come along:
    -- Citus copies them to every shard only with this setting.
    unsafe_triggers := current_setting('citus.enable_unsafe_triggers');
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);

    FOREACH t IN ARRAY ARRAY['ab_experiments', 'ab_variants', 'ab_layers', 'ab_layer_experiments',
                             'ab_insights', 'ab_audit'] LOOP
        object := t;
        layout := 'reference table';
        changed := NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                               WHERE p.logicalrelid = format('%I.%I', nsp, t)::regclass);
        IF changed THEN
            PERFORM create_reference_table(format('%I.%I', nsp, t)::regclass);
            PERFORM truncate_local_data_after_distributing_table(format('%I.%I', nsp, t)::regclass);
        END IF;
        RETURN NEXT;
    END LOOP;

    FOREACH t IN ARRAY ARRAY['ab_assignments', 'ab_results', 'ab_user_metrics', 'ab_covariates'] LOOP
        object := t;
        layout := 'distributed by user_id';
        changed := NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                               WHERE p.logicalrelid = format('%I.%I', nsp, t)::regclass);
        IF changed THEN
            IF t = 'ab_assignments' THEN
                PERFORM create_distributed_table(format('%I.%I', nsp, t)::regclass, 'user_id');
            ELSE
                PERFORM create_distributed_table(format('%I.%I', nsp, t)::regclass, 'user_id',
                                                 colocate_with => format('%I.ab_assignments', nsp));
            END IF;
            PERFORM truncate_local_data_after_distributing_table(format('%I.%I', nsp, t)::regclass);
        END IF;
        RETURN NEXT;
    END LOOP;

    FOREACH f IN ARRAY ARRAY['ab_get_variant(text, text, jsonb, text)',
                             'ab_get_variant(bigint, text, jsonb, text)',
                             'ab_record_result(text, text, double precision, text, text)',
                             'ab_record_result(bigint, text, double precision, text, text)',
                             'ab_record_covariate(text, text, text, double precision)',
                             'ab_record_covariate(bigint, text, text, double precision)'] LOOP
        object := f;
        layout := 'delegated by user_id';
        changed := NOT EXISTS (SELECT 1 FROM pg_dist_object o
                               WHERE o.classid = 'pg_proc'::regclass
                                 AND o.objid = format('%I.%s', nsp, f)::regprocedure
                                 AND o.distribution_argument_index IS NOT NULL);
        IF changed THEN
            PERFORM create_distributed_function(format('%I.%s', nsp, f)::regprocedure, 'user_id',
                                                colocate_with => format('%I.ab_assignments', nsp));
        END IF;
        RETURN NEXT;
    END LOOP;

    -- Result ids: each node draws from its own sequence (the extension creates it on every
    -- node), so each worker gets its own range, [groupid << 48, (groupid + 1) << 48), past any
    -- id already stored in it; the coordinator keeps [1, 1 << 48). Run again after adding a node.
    object := 'ab_results_id_seq';
    layout := 'a range of ids per node';
    SELECT string_agg(format('WHEN %s THEN %s', g.groupid, greatest(g.groupid::bigint << 48, m.top)), ' ')
      INTO f
      FROM (SELECT DISTINCT groupid FROM pg_dist_node WHERE groupid > 0 AND noderole = 'primary') g
      LEFT JOIN (SELECT r.id >> 48 AS grp, max(r.id) AS top FROM @extschema@.ab_results r
                  WHERE r.id >= (1::bigint << 48) GROUP BY 1) m ON m.grp = g.groupid;
    IF f IS NULL THEN
        changed := false;
    ELSE
        SELECT coalesce(bool_or(w.result = 't'), false), string_agg(w.result, '; ') FILTER (WHERE NOT w.success)
          INTO changed, t
          FROM run_command_on_workers(format(
              'SELECT CASE WHEN s.last_value < x.floor THEN pg_catalog.setval(%L, x.floor) IS NOT NULL ELSE false END '
              'FROM %I.ab_results_id_seq s, (SELECT CASE l.groupid %s END AS floor FROM pg_catalog.pg_dist_local_group l) x',
              format('%I.ab_results_id_seq', nsp), nsp, f)) w;
        IF t IS NOT NULL THEN
            RAISE EXCEPTION 'ab_distribute could not set the range of result ids on every worker: %', t
                USING ERRCODE = 'connection_failure', HINT = 'check that every worker is up, then call ab_distribute() again';
        END IF;
    END IF;
    RETURN NEXT;

    f := concat_ws(';', pg_get_viewdef(format('%I.ab_experiment_overview', nsp)::regclass),
                        pg_get_viewdef(format('%I.ab_experiment_health', nsp)::regclass),
                        pg_get_viewdef(format('%I.ab_latest_insights', nsp)::regclass));
    PERFORM @extschema@.ab_distributed_views();
    object := 'ab_experiment_overview, ab_experiment_health, ab_latest_insights';
    layout := 'views without correlated subqueries';
    changed := f IS DISTINCT FROM concat_ws(';', pg_get_viewdef(format('%I.ab_experiment_overview', nsp)::regclass),
                                                 pg_get_viewdef(format('%I.ab_experiment_health', nsp)::regclass),
                                                 pg_get_viewdef(format('%I.ab_latest_insights', nsp)::regclass));
    RETURN NEXT;

    PERFORM set_config('citus.enable_unsafe_triggers', unsafe_triggers, true);
END;
$$;

-- ab_testing--0.7.0--0.8.0.sql
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_experiments'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'ALTER TABLE @extschema@.ab_experiments ADD COLUMN allocation jsonb CONSTRAINT ab_experiments_allocation_check CHECK (jsonb_typeof(allocation) = ''object'')';
    END IF;
END
$$;
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_assignments'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'ALTER TABLE @extschema@.ab_assignments ADD COLUMN period integer NOT NULL DEFAULT 0 CONSTRAINT ab_assignments_period_check CHECK (period >= 0)';
    END IF;
END
$$;
CREATE TABLE ab_allocations (
    experiment_id  bigint NOT NULL,
    period         integer NOT NULL CHECK (period >= 0),
    started_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    weights        jsonb NOT NULL CHECK (jsonb_typeof(weights) = 'object'),
    posterior      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(posterior) = 'object'),
    PRIMARY KEY (experiment_id, period)
);

SELECT pg_catalog.pg_extension_config_dump('ab_allocations', '');

COMMENT ON COLUMN ab_experiments.allocation IS 'NULL for fixed traffic allocations; for a bandit {"mode": "bandit", "metric", "update_every", "min_share", "burn_in_users"}.';
COMMENT ON COLUMN ab_assignments.period IS 'For a bandit experiment, the weight period (ab_allocations) whose weights assigned the user; 0 otherwise.';
COMMENT ON TABLE ab_allocations IS 'Every weight period of each bandit experiment: when it began, the weights and the posterior that produced them.';
COMMENT ON COLUMN ab_allocations.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_allocations.period IS 'Period number: 0 for the starting allocations, then one more per change.';
COMMENT ON COLUMN ab_allocations.started_at IS 'When these weights took effect (the transaction time of the start or of ab_reweight).';
COMMENT ON COLUMN ab_allocations.weights IS 'Traffic allocation of each variant in percent, by variant name.';
COMMENT ON COLUMN ab_allocations.posterior IS 'Per variant, what the weights were computed from: users, posterior mean and sd of the metric, chance to be best; empty for period 0.';

CREATE FUNCTION "ab_period_srm_p_value"(
	"experiment" bigint /* Option < i64 > */
) RETURNS double precision /* Option < f64 > */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_period_srm_p_value_wrapper';

CREATE FUNCTION "ab_reweight"(
	"experiment" TEXT, /* Option < & str > */
	"force" bool DEFAULT false /* Option < bool > */
) RETURNS TABLE (
	"experiment" TEXT,  /* String */
	"period" INT,  /* i32 */
	"reweighted" bool,  /* bool */
	"weights" jsonb,  /* JsonB */
	"detail" TEXT  /* String */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_reweight_wrapper';

CREATE FUNCTION "ab_reweight"(
	"experiment" bigint, /* Option < i64 > */
	"force" bool DEFAULT false /* Option < bool > */
) RETURNS TABLE (
	"experiment" TEXT,  /* String */
	"period" INT,  /* i32 */
	"reweighted" bool,  /* bool */
	"weights" jsonb,  /* JsonB */
	"detail" TEXT  /* String */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_reweight_by_id_wrapper';

CREATE FUNCTION "ab_reweight_due"() RETURNS TABLE (
	"experiment" TEXT,  /* String */
	"period" INT,  /* i32 */
	"reweighted" bool,  /* bool */
	"weights" jsonb,  /* JsonB */
	"detail" TEXT  /* String */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_reweight_due_wrapper';

REVOKE ALL ON FUNCTION ab_reweight(text, boolean), ab_reweight(bigint, boolean), ab_reweight_due() FROM PUBLIC;

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
        'allocation', coalesce(e.allocation, '{"mode": "fixed"}'),
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
        'results_recorded', (SELECT coalesce(sum(m.n), 0)::bigint FROM @extschema@.ab_user_metrics m WHERE m.experiment_id = e.id),
        'covariates_recorded', (SELECT count(*) FROM @extschema@.ab_covariates c WHERE c.experiment_id = e.id),
        'allocation_history', (SELECT coalesce(jsonb_agg(jsonb_build_object('period', h.period, 'started_at', h.started_at,
                                                                        'weights', h.weights, 'posterior', h.posterior)
                                                     ORDER BY h.period), '[]')
                               FROM @extschema@.ab_allocations h WHERE h.experiment_id = e.id),
        'layer', (SELECT jsonb_build_object('name', l.name, 'holdout', m.range_start IS NULL,
                                            'percentage', (m.range_end - m.range_start)::float8 / 100,
                                            'range_start', m.range_start, 'range_end', m.range_end)
                  FROM @extschema@.ab_layer_experiments m JOIN @extschema@.ab_layers l ON l.id = m.layer_id
                  WHERE m.experiment_id = e.id));
END;
$$;

ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;

CREATE OR REPLACE VIEW ab_experiment_health AS
SELECT e.id,
       e.name,
       e.status,
       e.primary_metric,
       e.min_sample_size,
       coalesce(sum(c.users), 0)::bigint AS users_assigned,
       jsonb_object_agg(c.variant, c.users ORDER BY c.position) AS users_per_variant,
       CASE WHEN e.allocation IS NULL
            THEN (SELECT s.p_value FROM @extschema@.ab_srm_test(array_agg(c.users ORDER BY c.position),
                                                                array_agg(c.traffic_allocation ORDER BY c.position)) s
                  WHERE count(*) FILTER (WHERE c.traffic_allocation > 0) >= 2)
            ELSE @extschema@.ab_period_srm_p_value(e.id) END AS srm_p_value,
       CASE WHEN e.started_at IS NOT NULL
            THEN extract(epoch FROM coalesce(e.stopped_at, pg_catalog.now()) - e.started_at) / 86400 END AS days_running,
       least(1.0, min(c.users)::float8 / e.min_sample_size) AS sample_progress
FROM @extschema@.ab_experiments e
JOIN LATERAL (
    SELECT v.name AS variant, v.position, v.traffic_allocation,
           (SELECT count(*) FROM @extschema@.ab_assignments a WHERE a.experiment_id = e.id AND a.variant_id = v.id) AS users
    FROM @extschema@.ab_variants v WHERE v.experiment_id = e.id) c ON true
GROUP BY e.id;

-- The weight history of bandit experiments, one row per variant and period.
CREATE VIEW ab_allocation_history AS
SELECT e.name AS experiment,
       h.period,
       h.started_at,
       w.key AS variant,
       w.value::float8 AS traffic_allocation,
       (h.posterior -> w.key ->> 'chance_best')::float8 AS chance_best,
       (h.posterior -> w.key ->> 'mean')::float8 AS posterior_mean,
       (h.posterior -> w.key ->> 'sd')::float8 AS posterior_sd,
       coalesce(c.users, 0) AS users_assigned
FROM @extschema@.ab_allocations h
JOIN @extschema@.ab_experiments e ON e.id = h.experiment_id
CROSS JOIN LATERAL jsonb_each(h.weights) w
LEFT JOIN @extschema@.ab_variants v ON v.experiment_id = h.experiment_id AND v.name = w.key
-- Grouped apart (Citus cannot run a correlated subquery under a reference table).
LEFT JOIN (SELECT experiment_id, period, variant_id, count(*) AS users FROM @extschema@.ab_assignments
           GROUP BY experiment_id, period, variant_id) c
       ON c.experiment_id = h.experiment_id AND c.period = h.period AND c.variant_id = v.id;

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
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history '
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
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history '
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
                   '@extschema@.ab_rebuild_user_metrics(text), @extschema@.ab_rebuild_user_metrics(bigint), '
                   '@extschema@.ab_reweight(text, boolean), @extschema@.ab_reweight(bigint, boolean), @extschema@.ab_reweight_due(), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text) TO %I', role);
    -- Administration runs with the caller's rights.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_allocations TO %I', role);
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
                   '@extschema@.ab_rebuild_user_metrics(text), @extschema@.ab_rebuild_user_metrics(bigint), '
                   '@extschema@.ab_reweight(text, boolean), @extschema@.ab_reweight(bigint, boolean), @extschema@.ab_reweight_due(), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text) FROM %I', role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, '
                   '@extschema@.ab_audit, @extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_allocations FROM %I', role);
    EXECUTE format('REVOKE USAGE ON SEQUENCE @extschema@.ab_experiments_id_seq, @extschema@.ab_variants_id_seq, '
                   '@extschema@.ab_results_id_seq, @extschema@.ab_insights_id_seq, @extschema@.ab_audit_id_seq, '
                   '@extschema@.ab_layers_id_seq FROM %I', role);
    PERFORM @extschema@.ab_revoke_analyst(role);
    PERFORM @extschema@.ab_revoke_app(role);
END;
$$;

CREATE OR REPLACE FUNCTION ab_distributed_views() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CREATE OR REPLACE VIEW @extschema@.ab_experiment_overview AS
    SELECT e.id,
           e.name,
           e.experiment_type,
           e.status,
           e.primary_metric,
           coalesce(v.n, 0) AS variants,
           coalesce(a.n, 0) AS users_assigned,
           coalesce(r.n, 0) AS results_recorded,
           e.winner_variant,
           e.created_at,
           e.started_at,
           e.stopped_at
    FROM @extschema@.ab_experiments e
    LEFT JOIN (SELECT experiment_id, count(*) AS n FROM @extschema@.ab_variants GROUP BY experiment_id) v
           ON v.experiment_id = e.id
    LEFT JOIN (SELECT experiment_id, count(*) AS n FROM @extschema@.ab_assignments GROUP BY experiment_id) a
           ON a.experiment_id = e.id
    LEFT JOIN (SELECT experiment_id, sum(n)::bigint AS n FROM @extschema@.ab_user_metrics GROUP BY experiment_id) r
           ON r.experiment_id = e.id;

    CREATE OR REPLACE VIEW @extschema@.ab_experiment_health AS
    WITH c AS (
        SELECT v.experiment_id, v.name AS variant, v.position, v.traffic_allocation, coalesce(a.users, 0) AS users
        FROM @extschema@.ab_variants v
        LEFT JOIN (SELECT experiment_id, variant_id, count(*) AS users
                   FROM @extschema@.ab_assignments GROUP BY experiment_id, variant_id) a
               ON a.experiment_id = v.experiment_id AND a.variant_id = v.id)
    SELECT e.id,
           e.name,
           e.status,
           e.primary_metric,
           e.min_sample_size,
           coalesce(sum(c.users), 0)::bigint AS users_assigned,
           jsonb_object_agg(c.variant, c.users ORDER BY c.position) AS users_per_variant,
           CASE WHEN e.allocation IS NULL
                THEN (SELECT s.p_value FROM @extschema@.ab_srm_test(array_agg(c.users ORDER BY c.position),
                                                                    array_agg(c.traffic_allocation ORDER BY c.position)) s
                      WHERE count(*) FILTER (WHERE c.traffic_allocation > 0) >= 2)
                ELSE @extschema@.ab_period_srm_p_value(e.id) END AS srm_p_value,
           CASE WHEN e.started_at IS NOT NULL
                THEN extract(epoch FROM coalesce(e.stopped_at, pg_catalog.now()) - e.started_at) / 86400 END AS days_running,
           least(1.0, min(c.users)::float8 / e.min_sample_size) AS sample_progress
    FROM @extschema@.ab_experiments e
    JOIN c ON c.experiment_id = e.id
    GROUP BY e.id;

    CREATE OR REPLACE VIEW @extschema@.ab_latest_insights AS
    SELECT e.name AS experiment, i.*
    FROM @extschema@.ab_insights i
    JOIN @extschema@.ab_experiments e ON e.id = i.experiment_id
    JOIN (SELECT experiment_id, max(computed_at) AS computed_at FROM @extschema@.ab_insights GROUP BY experiment_id) l
      ON l.experiment_id = i.experiment_id AND l.computed_at = i.computed_at;
END;
$$;

CREATE OR REPLACE FUNCTION ab_distribute()
RETURNS TABLE (object text, layout text, changed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nsp name;
    t text;
    f text;
    unsafe_triggers text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'ab_distribute needs Citus, and the citus extension is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'add citus to shared_preload_libraries on every node, run CREATE EXTENSION citus, add the workers with citus_add_node, then call ab_distribute() on the coordinator';
    END IF;
    IF NOT citus_is_coordinator() THEN
        RAISE EXCEPTION 'ab_distribute must run on the Citus coordinator'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    SELECT n.nspname INTO nsp FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'ab_testing';

    -- The extension's triggers (cache invalidation, checks, the delete lock) must come along:
    -- Citus copies them to every shard only with this setting.
    unsafe_triggers := current_setting('citus.enable_unsafe_triggers');
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);

    FOREACH t IN ARRAY ARRAY['ab_experiments', 'ab_variants', 'ab_layers', 'ab_layer_experiments',
                             'ab_insights', 'ab_audit', 'ab_allocations'] LOOP
        object := t;
        layout := 'reference table';
        changed := NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                               WHERE p.logicalrelid = format('%I.%I', nsp, t)::regclass);
        IF changed THEN
            PERFORM create_reference_table(format('%I.%I', nsp, t)::regclass);
            PERFORM truncate_local_data_after_distributing_table(format('%I.%I', nsp, t)::regclass);
        END IF;
        RETURN NEXT;
    END LOOP;

    FOREACH t IN ARRAY ARRAY['ab_assignments', 'ab_results', 'ab_user_metrics', 'ab_covariates'] LOOP
        object := t;
        layout := 'distributed by user_id';
        changed := NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                               WHERE p.logicalrelid = format('%I.%I', nsp, t)::regclass);
        IF changed THEN
            IF t = 'ab_assignments' THEN
                PERFORM create_distributed_table(format('%I.%I', nsp, t)::regclass, 'user_id');
            ELSE
                PERFORM create_distributed_table(format('%I.%I', nsp, t)::regclass, 'user_id',
                                                 colocate_with => format('%I.ab_assignments', nsp));
            END IF;
            PERFORM truncate_local_data_after_distributing_table(format('%I.%I', nsp, t)::regclass);
        END IF;
        RETURN NEXT;
    END LOOP;

    FOREACH f IN ARRAY ARRAY['ab_get_variant(text, text, jsonb, text)',
                             'ab_get_variant(bigint, text, jsonb, text)',
                             'ab_record_result(text, text, double precision, text, text)',
                             'ab_record_result(bigint, text, double precision, text, text)',
                             'ab_record_covariate(text, text, text, double precision)',
                             'ab_record_covariate(bigint, text, text, double precision)'] LOOP
        object := f;
        layout := 'delegated by user_id';
        changed := NOT EXISTS (SELECT 1 FROM pg_dist_object o
                               WHERE o.classid = 'pg_proc'::regclass
                                 AND o.objid = format('%I.%s', nsp, f)::regprocedure
                                 AND o.distribution_argument_index IS NOT NULL);
        IF changed THEN
            PERFORM create_distributed_function(format('%I.%s', nsp, f)::regprocedure, 'user_id',
                                                colocate_with => format('%I.ab_assignments', nsp));
        END IF;
        RETURN NEXT;
    END LOOP;

    -- Result ids: each node draws from its own sequence (the extension creates it on every
    -- node), so each worker gets its own range, [groupid << 48, (groupid + 1) << 48), past any
    -- id already stored in it; the coordinator keeps [1, 1 << 48). Run again after adding a node.
    object := 'ab_results_id_seq';
    layout := 'a range of ids per node';
    SELECT string_agg(format('WHEN %s THEN %s', g.groupid, greatest(g.groupid::bigint << 48, m.top)), ' ')
      INTO f
      FROM (SELECT DISTINCT groupid FROM pg_dist_node WHERE groupid > 0 AND noderole = 'primary') g
      LEFT JOIN (SELECT r.id >> 48 AS grp, max(r.id) AS top FROM @extschema@.ab_results r
                  WHERE r.id >= (1::bigint << 48) GROUP BY 1) m ON m.grp = g.groupid;
    IF f IS NULL THEN
        changed := false;
    ELSE
        SELECT coalesce(bool_or(w.result = 't'), false), string_agg(w.result, '; ') FILTER (WHERE NOT w.success)
          INTO changed, t
          FROM run_command_on_workers(format(
              'SELECT CASE WHEN s.last_value < x.floor THEN pg_catalog.setval(%L, x.floor) IS NOT NULL ELSE false END '
              'FROM %I.ab_results_id_seq s, (SELECT CASE l.groupid %s END AS floor FROM pg_catalog.pg_dist_local_group l) x',
              format('%I.ab_results_id_seq', nsp), nsp, f)) w;
        IF t IS NOT NULL THEN
            RAISE EXCEPTION 'ab_distribute could not set the range of result ids on every worker: %', t
                USING ERRCODE = 'connection_failure', HINT = 'check that every worker is up, then call ab_distribute() again';
        END IF;
    END IF;
    RETURN NEXT;

    f := concat_ws(';', pg_get_viewdef(format('%I.ab_experiment_overview', nsp)::regclass),
                        pg_get_viewdef(format('%I.ab_experiment_health', nsp)::regclass),
                        pg_get_viewdef(format('%I.ab_latest_insights', nsp)::regclass));
    PERFORM @extschema@.ab_distributed_views();
    object := 'ab_experiment_overview, ab_experiment_health, ab_latest_insights';
    layout := 'views without correlated subqueries';
    changed := f IS DISTINCT FROM concat_ws(';', pg_get_viewdef(format('%I.ab_experiment_overview', nsp)::regclass),
                                                 pg_get_viewdef(format('%I.ab_experiment_health', nsp)::regclass),
                                                 pg_get_viewdef(format('%I.ab_latest_insights', nsp)::regclass));
    RETURN NEXT;

    PERFORM set_config('citus.enable_unsafe_triggers', unsafe_triggers, true);
END;
$$;

COMMENT ON VIEW ab_allocation_history IS 'Per bandit experiment, weight period and variant: when the period began, the variant''s traffic allocation, the posterior that produced it and the users it assigned.';
COMMENT ON FUNCTION ab_reweight(text, boolean) IS 'Recomputes a running bandit experiment''s weights by Thompson sampling when its update_every has passed (always with force); enrolled users keep their variant. Returns what was done.';
COMMENT ON FUNCTION ab_reweight(bigint, boolean) IS 'ab_reweight by experiment id.';
COMMENT ON FUNCTION ab_reweight_due() IS 'Runs ab_reweight on every running bandit experiment whose update_every has passed: for a scheduler such as pg_cron.';
COMMENT ON FUNCTION ab_period_srm_p_value(bigint) IS 'Sample ratio mismatch p-value of a bandit experiment, each weight period against its own weights.';

-- ab_testing--0.8.0--0.9.0.sql
COMMENT ON COLUMN ab_experiments.metrics IS 'Per metric: {"type": continuous|binary|ratio, "aggregation": mean|sum|count|max per user, "direction": higher|lower is better, "mde", "margin" (a guardrail''s non-inferiority margin), "cap"; a ratio also "numerator" and "denominator"}.';
COMMENT ON COLUMN ab_insights.metric_type IS 'continuous, binary or ratio.';
COMMENT ON COLUMN ab_insights.test IS 'welch, z or stratified (bandit experiments), with -sequential in sequential mode.';
COMMENT ON FUNCTION ab_proportion_test(bigint, bigint, bigint, bigint, double precision) IS 'Two-proportion z-test (pooled z, as statsmodels proportions_ztest), with the score CI of diff = b - a that inverts the same test.';

DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_insights'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'ALTER TABLE @extschema@.ab_insights ADD COLUMN relative_lift_ci_lower float8, ADD COLUMN relative_lift_ci_upper float8, ADD COLUMN relative_lift_p_value float8, ADD COLUMN margin float8, ADD COLUMN non_inferiority_p_value float8, ADD COLUMN non_inferior boolean';
    END IF;
END
$$;
COMMENT ON COLUMN ab_insights.relative_lift_ci_lower IS 'Lower bound of the confidence interval of relative_lift (delta method).';
COMMENT ON COLUMN ab_insights.relative_lift_ci_upper IS 'Upper bound of the confidence interval of relative_lift (delta method).';
COMMENT ON COLUMN ab_insights.relative_lift_p_value IS 'Two-sided p-value of relative_lift against 0 (delta method).';
COMMENT ON COLUMN ab_insights.margin IS 'The metric''s non-inferiority margin (a guardrail), in its units; NULL without one.';
COMMENT ON COLUMN ab_insights.non_inferiority_p_value IS 'One-sided p-value of "the variant is worse than the control by the margin or more".';
COMMENT ON COLUMN ab_insights.non_inferior IS 'Shown to be no worse than the control by the margin: the non-inferiority p-value, adjusted across the metric''s treatments, below alpha.';

-- The view's i.* was expanded when it was created: again, with the new columns at its end.
CREATE OR REPLACE VIEW ab_latest_insights AS
SELECT e.name AS experiment, i.*
FROM @extschema@.ab_insights i
JOIN @extschema@.ab_experiments e ON e.id = i.experiment_id
WHERE i.computed_at = (SELECT max(j.computed_at) FROM @extschema@.ab_insights j WHERE j.experiment_id = i.experiment_id);

-- Who may run ab_analyze now (roles given ab_grant_analyst or ab_grant_admin, or a GRANT of
-- their own), kept for this transaction to give them the same right on the new functions.
SELECT pg_catalog.set_config('ab_testing.analyze_grantees', coalesce(pg_catalog.string_agg(DISTINCT
           pg_catalog.format('%s|%s', p.proargtypes[0]::pg_catalog.regtype, a.grantee), ','), ''), true)
FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
WHERE p.oid IN ('@extschema@.ab_analyze(text)'::pg_catalog.regprocedure, '@extschema@.ab_analyze(bigint)'::pg_catalog.regprocedure)
  AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text AND a.grantee OPERATOR(pg_catalog.<>) p.proowner;

DROP FUNCTION ab_analyze(text);
DROP FUNCTION ab_analyze(bigint);
CREATE FUNCTION "ab_analyze"(
	"experiment" TEXT /* & str */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"std_dev" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"effect_size" double precision,  /* Option < f64 > */
	"metric_type" TEXT,  /* String */
	"test" TEXT,  /* Option < String > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"chance_to_beat_control" double precision,  /* Option < f64 > */
	"expected_loss" double precision,  /* Option < f64 > */
	"users_needed" bigint,  /* Option < i64 > */
	"srm_p_value" double precision,  /* Option < f64 > */
	"cuped_diff" double precision,  /* Option < f64 > */
	"cuped_ci_lower" double precision,  /* Option < f64 > */
	"cuped_ci_upper" double precision,  /* Option < f64 > */
	"cuped_p_value" double precision,  /* Option < f64 > */
	"cuped_variance_reduction" double precision,  /* Option < f64 > */
	"relative_lift_ci_lower" double precision,  /* Option < f64 > */
	"relative_lift_ci_upper" double precision,  /* Option < f64 > */
	"relative_lift_p_value" double precision,  /* Option < f64 > */
	"margin" double precision,  /* Option < f64 > */
	"non_inferiority_p_value" double precision,  /* Option < f64 > */
	"non_inferior" bool  /* Option < bool > */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_analyze_wrapper';
CREATE FUNCTION "ab_analyze"(
	"experiment" bigint /* i64 */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"std_dev" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"effect_size" double precision,  /* Option < f64 > */
	"metric_type" TEXT,  /* String */
	"test" TEXT,  /* Option < String > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"chance_to_beat_control" double precision,  /* Option < f64 > */
	"expected_loss" double precision,  /* Option < f64 > */
	"users_needed" bigint,  /* Option < i64 > */
	"srm_p_value" double precision,  /* Option < f64 > */
	"cuped_diff" double precision,  /* Option < f64 > */
	"cuped_ci_lower" double precision,  /* Option < f64 > */
	"cuped_ci_upper" double precision,  /* Option < f64 > */
	"cuped_p_value" double precision,  /* Option < f64 > */
	"cuped_variance_reduction" double precision,  /* Option < f64 > */
	"relative_lift_ci_lower" double precision,  /* Option < f64 > */
	"relative_lift_ci_upper" double precision,  /* Option < f64 > */
	"relative_lift_p_value" double precision,  /* Option < f64 > */
	"margin" double precision,  /* Option < f64 > */
	"non_inferiority_p_value" double precision,  /* Option < f64 > */
	"non_inferior" bool  /* Option < bool > */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_analyze_by_id_wrapper';
ALTER FUNCTION ab_analyze(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_analyze(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_analyze(text), ab_analyze(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ab_analyze(text) IS 'Per metric and variant: per-user statistics and the test against the control (Welch''s t-test, a z-test for binary metrics, the delta method for ratio metrics, always-valid in sequential mode), with CUPED, Bayesian and power columns; stored in ab_insights.';
COMMENT ON FUNCTION ab_analyze(bigint) IS 'ab_analyze by experiment id.';

DO $$
DECLARE
    g text;
BEGIN
    FOREACH g IN ARRAY pg_catalog.string_to_array(pg_catalog.current_setting('ab_testing.analyze_grantees'), ',') LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(%s) TO %s', pg_catalog.split_part(g, '|', 1),
            CASE pg_catalog.split_part(g, '|', 2) WHEN '0' THEN 'PUBLIC'
            ELSE pg_catalog.split_part(g, '|', 2)::pg_catalog.oid::pg_catalog.regrole::pg_catalog.text END);
    END LOOP;
END
$$;

CREATE FUNCTION "ab_bayes"(
	"experiment" TEXT, /* Option < & str > */
	"prior" jsonb DEFAULT NULL /* Option < JsonB > */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"effect" TEXT,  /* String */
	"prior_mean" double precision,  /* Option < f64 > */
	"prior_sd" double precision,  /* Option < f64 > */
	"posterior_mean" double precision,  /* Option < f64 > */
	"posterior_sd" double precision,  /* Option < f64 > */
	"credible_lower" double precision,  /* Option < f64 > */
	"credible_upper" double precision,  /* Option < f64 > */
	"chance_to_beat_control" double precision,  /* Option < f64 > */
	"risk_of_shipping" double precision,  /* Option < f64 > */
	"risk_of_keeping_control" double precision  /* Option < f64 > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_bayes_wrapper';
CREATE FUNCTION "ab_bayes"(
	"experiment" bigint, /* Option < i64 > */
	"prior" jsonb DEFAULT NULL /* Option < JsonB > */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"effect" TEXT,  /* String */
	"prior_mean" double precision,  /* Option < f64 > */
	"prior_sd" double precision,  /* Option < f64 > */
	"posterior_mean" double precision,  /* Option < f64 > */
	"posterior_sd" double precision,  /* Option < f64 > */
	"credible_lower" double precision,  /* Option < f64 > */
	"credible_upper" double precision,  /* Option < f64 > */
	"chance_to_beat_control" double precision,  /* Option < f64 > */
	"risk_of_shipping" double precision,  /* Option < f64 > */
	"risk_of_keeping_control" double precision  /* Option < f64 > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_bayes_by_id_wrapper';
ALTER FUNCTION ab_bayes(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_bayes(bigint, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_bayes(text, jsonb), ab_bayes(bigint, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION ab_bayes(text, jsonb) IS 'Per metric and treatment: the posterior of the effect under a Gaussian prior (the argument''s, else the metric''s prior, else flat), with a credible interval, the chance to beat the control and the expected loss of shipping it and of keeping the control.';
COMMENT ON FUNCTION ab_bayes(bigint, jsonb) IS 'ab_bayes by experiment id.';
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view and run ab_analyze, ab_summary, ab_bayes and ab_plot.';

DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.ab_summary(text)'::pg_catalog.regprocedure AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text
               AND a.grantee OPERATOR(pg_catalog.<>) p.proowner LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb) TO %s', r);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ab_grant_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history '
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
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history '
                   'FROM %I', role);
END;
$$;

-- ab_testing--0.9.0--0.10.0.sql
COMMENT ON COLUMN ab_experiments.metrics IS 'Per metric: {"type": continuous|binary|ratio|quantile, "aggregation": mean|sum|count|max per user, "direction": higher|lower is better, "mde", "margin" (a guardrail''s non-inferiority margin), "cap"; a ratio also "numerator" and "denominator"; a quantile "of", "quantile" and "level": user|event}.';
COMMENT ON COLUMN ab_insights.metric_type IS 'continuous, binary, ratio or quantile.';
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_experiments'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'ALTER TABLE @extschema@.ab_experiments ADD COLUMN breakdowns text[] NOT NULL DEFAULT ''{}'' CONSTRAINT ab_experiments_breakdowns_check CHECK (cardinality(breakdowns) <= 5)';
    END IF;
END
$$;
COMMENT ON COLUMN ab_experiments.breakdowns IS 'Attributes of the users stored with each assignment, to break the analysis down by (ab_breakdown).';
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_assignments'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'ALTER TABLE @extschema@.ab_assignments ADD COLUMN attributes jsonb CONSTRAINT ab_assignments_attributes_check CHECK (jsonb_typeof(attributes) = ''object'')';
    END IF;
END
$$;
COMMENT ON COLUMN ab_assignments.attributes IS 'The attributes listed in the experiment''s breakdowns that the user had at enrollment, as text; NULL when none.';

CREATE FUNCTION "ab_timeline"(
	"experiment" TEXT, /* Option < & str > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"day" date,  /* Date */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"test" TEXT  /* Option < String > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_timeline_wrapper';
CREATE FUNCTION "ab_timeline"(
	"experiment" bigint, /* Option < i64 > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"day" date,  /* Date */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"test" TEXT  /* Option < String > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_timeline_by_id_wrapper';
CREATE FUNCTION "ab_plot_timeline"(
	"experiment" TEXT, /* Option < & str > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_plot_timeline_wrapper';
CREATE FUNCTION "ab_plot_timeline"(
	"experiment" bigint, /* Option < i64 > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_plot_timeline_by_id_wrapper';
CREATE FUNCTION "ab_breakdown"(
	"experiment" TEXT, /* Option < & str > */
	"attribute" TEXT /* Option < & str > */
) RETURNS TABLE (
	"value" TEXT,  /* Option < String > */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"comparisons" INT  /* i32 */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_breakdown_wrapper';
CREATE FUNCTION "ab_breakdown"(
	"experiment" bigint, /* Option < i64 > */
	"attribute" TEXT /* Option < & str > */
) RETURNS TABLE (
	"value" TEXT,  /* Option < String > */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"comparisons" INT  /* i32 */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_breakdown_by_id_wrapper';
ALTER FUNCTION ab_breakdown(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_breakdown(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_timeline(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_timeline(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot_timeline(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot_timeline(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_timeline(text, text), ab_timeline(bigint, text), ab_plot_timeline(text, text),
    ab_plot_timeline(bigint, text), ab_breakdown(text, text), ab_breakdown(bigint, text) FROM PUBLIC;
COMMENT ON FUNCTION ab_timeline(text, text) IS 'Per day since the first enrollment (in the session''s TimeZone), metric and variant: the comparison with the control over the users enrolled and the results recorded by the end of that day (cumulative; without CUPED; ratio and quantile metrics excluded).';
COMMENT ON FUNCTION ab_timeline(bigint, text) IS 'ab_timeline by experiment id.';
COMMENT ON FUNCTION ab_plot_timeline(text, text) IS 'An SVG line chart of each treatment''s cumulative difference from the control on a metric (the primary one by default), day by day, with its CI as a band.';
COMMENT ON FUNCTION ab_plot_timeline(bigint, text) IS 'ab_plot_timeline by experiment id.';
COMMENT ON FUNCTION ab_breakdown(text, text) IS 'Per value of an attribute stored at enrollment (one of the experiment''s breakdowns; NULL: not given), metric and variant: the comparison with the control among those users, p-values adjusted across every segment and treatment of the metric (without CUPED; ratio and quantile metrics excluded).';
COMMENT ON FUNCTION ab_breakdown(bigint, text) IS 'ab_breakdown by experiment id.';
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view and run ab_analyze, ab_summary, ab_bayes, ab_plot, ab_timeline, ab_plot_timeline and ab_breakdown.';

DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.ab_summary(text)'::pg_catalog.regprocedure AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text
               AND a.grantee OPERATOR(pg_catalog.<>) p.proowner LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                                  '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                                  '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text) TO %s', r);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ab_grant_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history '
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
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history '
                   'FROM %I', role);
END;
$$;

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
        'allocation', coalesce(e.allocation, '{"mode": "fixed"}'),
        'breakdowns', to_jsonb(e.breakdowns),
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
        'results_recorded', (SELECT coalesce(sum(m.n), 0)::bigint FROM @extschema@.ab_user_metrics m WHERE m.experiment_id = e.id),
        'covariates_recorded', (SELECT count(*) FROM @extschema@.ab_covariates c WHERE c.experiment_id = e.id),
        'allocation_history', (SELECT coalesce(jsonb_agg(jsonb_build_object('period', h.period, 'started_at', h.started_at,
                                                                        'weights', h.weights, 'posterior', h.posterior)
                                                     ORDER BY h.period), '[]')
                               FROM @extschema@.ab_allocations h WHERE h.experiment_id = e.id),
        'layer', (SELECT jsonb_build_object('name', l.name, 'holdout', m.range_start IS NULL,
                                            'percentage', (m.range_end - m.range_start)::float8 / 100,
                                            'range_start', m.range_start, 'range_end', m.range_end)
                  FROM @extschema@.ab_layer_experiments m JOIN @extschema@.ab_layers l ON l.id = m.layer_id
                  WHERE m.experiment_id = e.id));
END;
$$;
ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;

-- ab_testing--0.10.0--0.11.0.sql
CREATE TABLE ab_metric_sources (
    name        text PRIMARY KEY CHECK (btrim(name) <> '' AND char_length(name) <= 200),
    definition  jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    created_by  name NOT NULL DEFAULT current_user,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('ab_metric_sources', '');
COMMENT ON TABLE ab_metric_sources IS 'Metric sources any experiment may name in a metric''s "source": a table or view of the application''s, with its user, time, value columns and filter (ab_create_metric_source).';
COMMENT ON COLUMN ab_metric_sources.name IS 'What a metric''s "source" names (NFC).';
COMMENT ON COLUMN ab_metric_sources.created_by IS 'The role that registered the source.';
COMMENT ON COLUMN ab_metric_sources.created_at IS 'When it was registered.';
COMMENT ON COLUMN ab_metric_sources.definition IS 'relation (schema-qualified), user_column, time_column, value_column, filter: names checked against the catalog.';

CREATE FUNCTION "ab_create_metric_source"(
	"name" TEXT, /* Option < & str > */
	"definition" jsonb /* Option < RawJsonb > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_create_metric_source_wrapper';
CREATE FUNCTION "ab_drop_metric_source"(
	"name" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_drop_metric_source_wrapper';

REVOKE ALL ON FUNCTION ab_create_metric_source(text, jsonb), ab_drop_metric_source(text) FROM PUBLIC;
COMMENT ON FUNCTION ab_create_metric_source(text, jsonb) IS 'Registers a metric source: a table or view of the application''s (schema-qualified relation, user_column, time_column, optional value_column and filter), checked against the catalog, for experiments to name in a metric''s "source". Analyses read it with the privileges of the role running them.';
COMMENT ON FUNCTION ab_drop_metric_source(text) IS 'Drops a metric source that no experiment names.';

DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.ab_summary(text)'::pg_catalog.regprocedure AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text
               AND a.grantee OPERATOR(pg_catalog.<>) p.proowner LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON @extschema@.ab_metric_sources TO %s', r);
    END LOOP;
    FOR r IN SELECT DISTINCT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.ab_create_experiment(jsonb)'::pg_catalog.regprocedure AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text
               AND a.grantee OPERATOR(pg_catalog.<>) p.proowner LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_create_metric_source(text, jsonb), '
                                  '@extschema@.ab_drop_metric_source(text) TO %s', r);
        EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_metric_sources TO %s', r);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ab_grant_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
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
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
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
                   '@extschema@.ab_rebuild_user_metrics(text), @extschema@.ab_rebuild_user_metrics(bigint), '
                   '@extschema@.ab_reweight(text, boolean), @extschema@.ab_reweight(bigint, boolean), @extschema@.ab_reweight_due(), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text), '
                   '@extschema@.ab_create_metric_source(text, jsonb), @extschema@.ab_drop_metric_source(text) TO %I', role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_metric_sources TO %I', role);
    -- Administration runs with the caller's rights.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_allocations TO %I', role);
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
                   '@extschema@.ab_rebuild_user_metrics(text), @extschema@.ab_rebuild_user_metrics(bigint), '
                   '@extschema@.ab_reweight(text, boolean), @extschema@.ab_reweight(bigint, boolean), @extschema@.ab_reweight_due(), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text), '
                   '@extschema@.ab_create_metric_source(text, jsonb), @extschema@.ab_drop_metric_source(text) FROM %I', role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_metric_sources FROM %I', role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, '
                   '@extschema@.ab_audit, @extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_allocations FROM %I', role);
    EXECUTE format('REVOKE USAGE ON SEQUENCE @extschema@.ab_experiments_id_seq, @extschema@.ab_variants_id_seq, '
                   '@extschema@.ab_results_id_seq, @extschema@.ab_insights_id_seq, @extschema@.ab_audit_id_seq, '
                   '@extschema@.ab_layers_id_seq FROM %I', role);
    PERFORM @extschema@.ab_revoke_analyst(role);
    PERFORM @extschema@.ab_revoke_app(role);
END;
$$;

-- ab_metric_sources is one more reference table.
CREATE OR REPLACE FUNCTION ab_distribute()
RETURNS TABLE (object text, layout text, changed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nsp name;
    t text;
    f text;
    unsafe_triggers text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'ab_distribute needs Citus, and the citus extension is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'add citus to shared_preload_libraries on every node, run CREATE EXTENSION citus, add the workers with citus_add_node, then call ab_distribute() on the coordinator';
    END IF;
    IF NOT citus_is_coordinator() THEN
        RAISE EXCEPTION 'ab_distribute must run on the Citus coordinator'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    SELECT n.nspname INTO nsp FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'ab_testing';

    -- The extension's triggers (cache invalidation, checks, the delete lock) must come along:
    -- Citus copies them to every shard only with this setting.
    unsafe_triggers := current_setting('citus.enable_unsafe_triggers');
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);

    FOREACH t IN ARRAY ARRAY['ab_experiments', 'ab_variants', 'ab_layers', 'ab_layer_experiments',
                             'ab_insights', 'ab_audit', 'ab_allocations', 'ab_metric_sources'] LOOP
        object := t;
        layout := 'reference table';
        changed := NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                               WHERE p.logicalrelid = format('%I.%I', nsp, t)::regclass);
        IF changed THEN
            PERFORM create_reference_table(format('%I.%I', nsp, t)::regclass);
            PERFORM truncate_local_data_after_distributing_table(format('%I.%I', nsp, t)::regclass);
        END IF;
        RETURN NEXT;
    END LOOP;

    FOREACH t IN ARRAY ARRAY['ab_assignments', 'ab_results', 'ab_user_metrics', 'ab_covariates'] LOOP
        object := t;
        layout := 'distributed by user_id';
        changed := NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                               WHERE p.logicalrelid = format('%I.%I', nsp, t)::regclass);
        IF changed THEN
            IF t = 'ab_assignments' THEN
                PERFORM create_distributed_table(format('%I.%I', nsp, t)::regclass, 'user_id');
            ELSE
                PERFORM create_distributed_table(format('%I.%I', nsp, t)::regclass, 'user_id',
                                                 colocate_with => format('%I.ab_assignments', nsp));
            END IF;
            PERFORM truncate_local_data_after_distributing_table(format('%I.%I', nsp, t)::regclass);
        END IF;
        RETURN NEXT;
    END LOOP;

    FOREACH f IN ARRAY ARRAY['ab_get_variant(text, text, jsonb, text)',
                             'ab_get_variant(bigint, text, jsonb, text)',
                             'ab_record_result(text, text, double precision, text, text)',
                             'ab_record_result(bigint, text, double precision, text, text)',
                             'ab_record_covariate(text, text, text, double precision)',
                             'ab_record_covariate(bigint, text, text, double precision)'] LOOP
        object := f;
        layout := 'delegated by user_id';
        changed := NOT EXISTS (SELECT 1 FROM pg_dist_object o
                               WHERE o.classid = 'pg_proc'::regclass
                                 AND o.objid = format('%I.%s', nsp, f)::regprocedure
                                 AND o.distribution_argument_index IS NOT NULL);
        IF changed THEN
            PERFORM create_distributed_function(format('%I.%s', nsp, f)::regprocedure, 'user_id',
                                                colocate_with => format('%I.ab_assignments', nsp));
        END IF;
        RETURN NEXT;
    END LOOP;

    -- Result ids: each node draws from its own sequence (the extension creates it on every
    -- node), so each worker gets its own range, [groupid << 48, (groupid + 1) << 48), past any
    -- id already stored in it; the coordinator keeps [1, 1 << 48). Run again after adding a node.
    object := 'ab_results_id_seq';
    layout := 'a range of ids per node';
    SELECT string_agg(format('WHEN %s THEN %s', g.groupid, greatest(g.groupid::bigint << 48, m.top)), ' ')
      INTO f
      FROM (SELECT DISTINCT groupid FROM pg_dist_node WHERE groupid > 0 AND noderole = 'primary') g
      LEFT JOIN (SELECT r.id >> 48 AS grp, max(r.id) AS top FROM @extschema@.ab_results r
                  WHERE r.id >= (1::bigint << 48) GROUP BY 1) m ON m.grp = g.groupid;
    IF f IS NULL THEN
        changed := false;
    ELSE
        SELECT coalesce(bool_or(w.result = 't'), false), string_agg(w.result, '; ') FILTER (WHERE NOT w.success)
          INTO changed, t
          FROM run_command_on_workers(format(
              'SELECT CASE WHEN s.last_value < x.floor THEN pg_catalog.setval(%L, x.floor) IS NOT NULL ELSE false END '
              'FROM %I.ab_results_id_seq s, (SELECT CASE l.groupid %s END AS floor FROM pg_catalog.pg_dist_local_group l) x',
              format('%I.ab_results_id_seq', nsp), nsp, f)) w;
        IF t IS NOT NULL THEN
            RAISE EXCEPTION 'ab_distribute could not set the range of result ids on every worker: %', t
                USING ERRCODE = 'connection_failure', HINT = 'check that every worker is up, then call ab_distribute() again';
        END IF;
    END IF;
    RETURN NEXT;

    f := concat_ws(';', pg_get_viewdef(format('%I.ab_experiment_overview', nsp)::regclass),
                        pg_get_viewdef(format('%I.ab_experiment_health', nsp)::regclass),
                        pg_get_viewdef(format('%I.ab_latest_insights', nsp)::regclass));
    PERFORM @extschema@.ab_distributed_views();
    object := 'ab_experiment_overview, ab_experiment_health, ab_latest_insights';
    layout := 'views without correlated subqueries';
    changed := f IS DISTINCT FROM concat_ws(';', pg_get_viewdef(format('%I.ab_experiment_overview', nsp)::regclass),
                                                 pg_get_viewdef(format('%I.ab_experiment_health', nsp)::regclass),
                                                 pg_get_viewdef(format('%I.ab_latest_insights', nsp)::regclass));
    RETURN NEXT;

    PERFORM set_config('citus.enable_unsafe_triggers', unsafe_triggers, true);
END;
$$;

-- ab_testing--0.11.0--0.12.0.sql
COMMENT ON FUNCTION ab_analyze(text) IS 'Per metric and variant: per-user statistics and the test against the control (Welch''s t-test, a z-test for binary metrics, the delta method for ratio metrics, always-valid in sequential mode), with CUPED, Bayesian and power columns; stored in ab_insights when the transaction can write (not in a read-only transaction or on a hot standby, where the rows are returned only).';
COMMENT ON FUNCTION ab_timeline(text, text) IS 'Per day since the first enrollment (in the session''s TimeZone) until the experiment''s stop or today, metric and variant: the comparison with the control over the users enrolled and the results recorded by the end of that day (cumulative; without CUPED; ratio and quantile metrics excluded).';
COMMENT ON FUNCTION ab_reweight_due() IS 'Runs ab_reweight on every running bandit experiment whose update_every has passed, each in a subtransaction of its own (one that fails is a row with its error and NULL period and weights; the others are reweighted): for a scheduler such as pg_cron.';

-- Trust boundaries of metric sources (issue 26, items 1, 2, 8).
-- * ab_insights records what an analysis read from metric sources and who ran it;
--   ab_latest_insights and the new ab_insight_history show such rows only to roles that may
--   read those sources (ab_may_read_insight), also in their Citus form (ab_distributed_views).
-- * ab_get_experiment shows a bandit's allocation history (its posteriors) only to roles
--   that may read ab_allocations.
-- * Stored analyses are read through those views: ab_grant_analyst gives SELECT on the
--   key columns of ab_insights only (and the update does so for the roles that had SELECT).
-- * ab_period_srm_p_value is no longer PUBLIC (ab_experiment_health's readers get it with
--   ab_grant_analyst).
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_insights'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'ALTER TABLE @extschema@.ab_insights ADD COLUMN source_reads jsonb, ADD COLUMN computed_by name';
    END IF;
END
$$;
COMMENT ON COLUMN ab_insights.source_reads IS 'For an analysis that read metric sources: the relations and columns it read, as [{"schema", "relation", "columns"}]; the views over ab_insights show the row only to roles that may read them all (or that hold the privileges of computed_by). NULL otherwise.';
COMMENT ON COLUMN ab_insights.computed_by IS 'The role that ran the analysis (the session''s, as SET ROLE left it).';

-- Whether the current role may see a stored analysis row: one computed without metric
-- sources, or one whose every source column it may read (with USAGE on the schema and no
-- row-level security applying to it there), or one computed by a role whose privileges it
-- holds. A dropped relation or column shows the row to the latter only.
CREATE FUNCTION ab_may_read_insight(source_reads jsonb, computed_by name) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT source_reads IS NULL
    OR coalesce(pg_catalog.pg_has_role((SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = computed_by), 'USAGE'), false)
    OR NOT EXISTS (
        SELECT 1
        FROM pg_catalog.jsonb_array_elements(source_reads) s
        LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = s ->> 'schema'
        LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s ->> 'relation'
        WHERE c.oid IS NULL
           OR NOT pg_catalog.has_schema_privilege(n.oid, 'USAGE')
           OR pg_catalog.row_security_active(c.oid)
           OR EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements_text(s -> 'columns') col
                      WHERE pg_catalog.has_column_privilege(c.oid,
                                (SELECT a.attnum FROM pg_catalog.pg_attribute a
                                 WHERE a.attrelid = c.oid AND a.attname = col AND NOT a.attisdropped), 'SELECT')
                            IS NOT TRUE))
$$;
COMMENT ON FUNCTION ab_may_read_insight(jsonb, name) IS 'Whether the current role may see a stored analysis row (ab_insights.source_reads, computed_by): the filter of ab_latest_insights and ab_insight_history.';

CREATE OR REPLACE VIEW ab_latest_insights AS
SELECT e.name AS experiment, i.*
FROM @extschema@.ab_insights i
JOIN @extschema@.ab_experiments e ON e.id = i.experiment_id
WHERE i.computed_at = (SELECT max(j.computed_at) FROM @extschema@.ab_insights j WHERE j.experiment_id = i.experiment_id)
  AND @extschema@.ab_may_read_insight(i.source_reads, i.computed_by);

-- Every stored analysis row the current role may read.
CREATE VIEW ab_insight_history AS
SELECT e.name AS experiment, i.*
FROM @extschema@.ab_insights i
JOIN @extschema@.ab_experiments e ON e.id = i.experiment_id
WHERE @extschema@.ab_may_read_insight(i.source_reads, i.computed_by);

COMMENT ON VIEW ab_latest_insights IS 'The rows of each experiment''s most recent ab_analyze run that the current role may read (see ab_may_read_insight).';
COMMENT ON VIEW ab_insight_history IS 'Every stored ab_analyze row that the current role may read: of an analysis without metric sources, or whose sources it may read.';

CREATE OR REPLACE FUNCTION ab_distributed_views() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CREATE OR REPLACE VIEW @extschema@.ab_experiment_overview AS
    SELECT e.id,
           e.name,
           e.experiment_type,
           e.status,
           e.primary_metric,
           coalesce(v.n, 0) AS variants,
           coalesce(a.n, 0) AS users_assigned,
           coalesce(r.n, 0) AS results_recorded,
           e.winner_variant,
           e.created_at,
           e.started_at,
           e.stopped_at
    FROM @extschema@.ab_experiments e
    LEFT JOIN (SELECT experiment_id, count(*) AS n FROM @extschema@.ab_variants GROUP BY experiment_id) v
           ON v.experiment_id = e.id
    LEFT JOIN (SELECT experiment_id, count(*) AS n FROM @extschema@.ab_assignments GROUP BY experiment_id) a
           ON a.experiment_id = e.id
    LEFT JOIN (SELECT experiment_id, sum(n)::bigint AS n FROM @extschema@.ab_user_metrics GROUP BY experiment_id) r
           ON r.experiment_id = e.id;

    CREATE OR REPLACE VIEW @extschema@.ab_experiment_health AS
    WITH c AS (
        SELECT v.experiment_id, v.name AS variant, v.position, v.traffic_allocation, coalesce(a.users, 0) AS users
        FROM @extschema@.ab_variants v
        LEFT JOIN (SELECT experiment_id, variant_id, count(*) AS users
                   FROM @extschema@.ab_assignments GROUP BY experiment_id, variant_id) a
               ON a.experiment_id = v.experiment_id AND a.variant_id = v.id)
    SELECT e.id,
           e.name,
           e.status,
           e.primary_metric,
           e.min_sample_size,
           coalesce(sum(c.users), 0)::bigint AS users_assigned,
           jsonb_object_agg(c.variant, c.users ORDER BY c.position) AS users_per_variant,
           CASE WHEN e.allocation IS NULL
                THEN (SELECT s.p_value FROM @extschema@.ab_srm_test(array_agg(c.users ORDER BY c.position),
                                                                    array_agg(c.traffic_allocation ORDER BY c.position)) s
                      WHERE count(*) FILTER (WHERE c.traffic_allocation > 0) >= 2)
                ELSE @extschema@.ab_period_srm_p_value(e.id) END AS srm_p_value,
           CASE WHEN e.started_at IS NOT NULL
                THEN extract(epoch FROM coalesce(e.stopped_at, pg_catalog.now()) - e.started_at) / 86400 END AS days_running,
           least(1.0, min(c.users)::float8 / e.min_sample_size) AS sample_progress
    FROM @extschema@.ab_experiments e
    JOIN c ON c.experiment_id = e.id
    GROUP BY e.id;

    CREATE OR REPLACE VIEW @extschema@.ab_latest_insights AS
    SELECT e.name AS experiment, i.*
    FROM @extschema@.ab_insights i
    JOIN @extschema@.ab_experiments e ON e.id = i.experiment_id
    JOIN (SELECT experiment_id, max(computed_at) AS computed_at FROM @extschema@.ab_insights GROUP BY experiment_id) l
      ON l.experiment_id = i.experiment_id AND l.computed_at = i.computed_at
    WHERE @extschema@.ab_may_read_insight(i.source_reads, i.computed_by);
END;
$$;

DO $$
DECLARE
    distributed boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1 AND partmethod = ''h'')'
            INTO distributed USING '@extschema@.ab_assignments'::pg_catalog.regclass;
    END IF;
    IF distributed THEN
        PERFORM @extschema@.ab_distributed_views();
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION ab_get_experiment(experiment bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e @extschema@.ab_experiments;
    users jsonb;
    -- The role that called (this function runs as the extension's owner): the role SET ROLE
    -- chose, else the one that logged in.
    caller name := CASE pg_catalog.current_setting('role') WHEN 'none' THEN session_user
                   ELSE pg_catalog.current_setting('role')::name END;
    out jsonb;
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
    out := jsonb_build_object(
        'id', e.id,
        'name', e.name,
        'description', e.description,
        'experiment_type', e.experiment_type,
        'status', e.status,
        'primary_metric', e.primary_metric,
        'metrics', e.metrics,
        'strict_metrics', e.strict_metrics,
        'allocation', coalesce(e.allocation, '{"mode": "fixed"}'),
        'breakdowns', to_jsonb(e.breakdowns),
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
        'results_recorded', (SELECT coalesce(sum(m.n), 0)::bigint FROM @extschema@.ab_user_metrics m WHERE m.experiment_id = e.id),
        'covariates_recorded', (SELECT count(*) FROM @extschema@.ab_covariates c WHERE c.experiment_id = e.id),
        'allocation_history', (SELECT coalesce(jsonb_agg(jsonb_build_object('period', h.period, 'started_at', h.started_at,
                                                                        'weights', h.weights, 'posterior', h.posterior)
                                                     ORDER BY h.period), '[]')
                               FROM @extschema@.ab_allocations h WHERE h.experiment_id = e.id),
        'layer', (SELECT jsonb_build_object('name', l.name, 'holdout', m.range_start IS NULL,
                                            'percentage', (m.range_end - m.range_start)::float8 / 100,
                                            'range_start', m.range_start, 'range_end', m.range_end)
                  FROM @extschema@.ab_layer_experiments m JOIN @extschema@.ab_layers l ON l.id = m.layer_id
                  WHERE m.experiment_id = e.id));
    -- A bandit's posteriors (its allocation history) only for roles that may read ab_allocations.
    IF NOT pg_catalog.has_table_privilege(caller, '@extschema@.ab_allocations', 'SELECT') THEN
        out := out - 'allocation_history';
    END IF;
    RETURN out;
END;
$$;
-- CREATE OR REPLACE made it SECURITY INVOKER again.
ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;

CREATE OR REPLACE FUNCTION ab_grant_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_period_srm_p_value(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, @extschema@.ab_insight_history, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
                   'TO %I', role);
    -- Stored analyses through the views, which show a row read from metric sources only to
    -- roles that may read them; of the table itself, only the columns that say which rows exist.
    EXECUTE format('GRANT SELECT (id, experiment_id, computed_at, metric_name, variant, is_control) '
                   'ON @extschema@.ab_insights TO %I', role);
END;
$$;

CREATE OR REPLACE FUNCTION ab_revoke_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_period_srm_p_value(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, @extschema@.ab_insight_history, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
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
                   '@extschema@.ab_rebuild_user_metrics(text), @extschema@.ab_rebuild_user_metrics(bigint), '
                   '@extschema@.ab_reweight(text, boolean), @extschema@.ab_reweight(bigint, boolean), @extschema@.ab_reweight_due(), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text), '
                   '@extschema@.ab_create_metric_source(text, jsonb), @extschema@.ab_drop_metric_source(text) TO %I', role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_metric_sources TO %I', role);
    -- Administration runs with the caller's rights.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_allocations TO %I', role);
    -- Stored analyses are not updated: what they record of their sources decides who may
    -- read them (ab_stop_experiment stores one as its caller, hence INSERT).
    EXECUTE format('GRANT INSERT, DELETE ON @extschema@.ab_insights TO %I', role);
    EXECUTE format('GRANT INSERT ON @extschema@.ab_audit TO %I', role);
    EXECUTE format('GRANT USAGE ON SEQUENCE @extschema@.ab_experiments_id_seq, @extschema@.ab_variants_id_seq, '
                   '@extschema@.ab_results_id_seq, @extschema@.ab_insights_id_seq, @extschema@.ab_audit_id_seq, '
                   '@extschema@.ab_layers_id_seq TO %I', role);
END;
$$;

COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view (stored analyses through ab_latest_insights and ab_insight_history) and run ab_analyze, ab_summary, ab_bayes, ab_plot, ab_timeline, ab_plot_timeline and ab_breakdown.';
REVOKE ALL ON FUNCTION ab_period_srm_p_value(bigint) FROM PUBLIC;
-- The roles ab_grant_analyst gave the dashboards keep reading them.
DO $$
DECLARE
    r oid;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = '@extschema@.ab_experiment_health'::pg_catalog.regclass AND a.privilege_type = 'SELECT'
               AND a.grantee OPERATOR(pg_catalog.<>) 0::pg_catalog.oid AND a.grantee <> c.relowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_period_srm_p_value(bigint) TO %s', r::pg_catalog.regrole);
    END LOOP;
    FOR r IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = '@extschema@.ab_latest_insights'::pg_catalog.regclass AND a.privilege_type = 'SELECT'
               AND a.grantee OPERATOR(pg_catalog.<>) 0::pg_catalog.oid AND a.grantee <> c.relowner
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON @extschema@.ab_insight_history TO %s', r::pg_catalog.regrole);
    END LOOP;
    -- Stored analyses are read through the views: of ab_insights itself, the roles that could
    -- read it keep the columns that say which rows exist.
    FOR r IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = '@extschema@.ab_insights'::pg_catalog.regclass AND a.privilege_type = 'SELECT'
               AND a.grantee <> c.relowner
    LOOP
        EXECUTE pg_catalog.format('REVOKE SELECT ON @extschema@.ab_insights FROM %s',
                                  CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::pg_catalog.regrole::text END);
        EXECUTE pg_catalog.format('GRANT SELECT (id, experiment_id, computed_at, metric_name, variant, is_control) '
                                  'ON @extschema@.ab_insights TO %s',
                                  CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::pg_catalog.regrole::text END);
    END LOOP;
END;
$$;
COMMENT ON FUNCTION ab_create_metric_source(text, jsonb) IS 'Registers a metric source: a table or view of the application''s (schema-qualified relation, user_column, time_column, optional value_column and filter), checked against the catalog, for experiments to name in a metric''s "source". The registering role must be able to read its columns. An analysis reads it as the role running it when the relation''s owner holds that role''s privileges, else as the owner (after checking that the role may read those columns; refused where row-level security, a security_invoker view or a foreign table would then show more).';

-- An installation in a schema that a non-superuser owns is unsafe: say so at the update.
-- (As at CREATE EXTENSION.) The extension's SECURITY DEFINER functions name its objects by schema: a role that owns
-- that schema could rename it and put objects of its own under those names. Only a
-- superuser may own it (for public, owned by pg_database_owner: the database's owner).
DO $$
DECLARE
    owner oid := (SELECT CASE WHEN n.nspowner = 'pg_database_owner'::pg_catalog.regrole THEN d.datdba
                              ELSE n.nspowner END
                  FROM pg_catalog.pg_namespace n, pg_catalog.pg_database d
                  WHERE n.oid = '@extschema@'::pg_catalog.regnamespace AND d.datname = pg_catalog.current_database());
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = owner) THEN
        RAISE WARNING 'ab_testing must be installed in a schema owned by a superuser, and schema "%" is owned by role "%"',
            '@extschema@', pg_catalog.pg_get_userbyid(owner)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'that role could put its own objects in place of the extension''s: create a schema owned by a superuser (CREATE SCHEMA ab_testing AUTHORIZATION postgres) and install the extension there (CREATE EXTENSION ab_testing SCHEMA ab_testing)';
    END IF;
END
$$;

-- Stored analyses are not updated (an administrator that could UPDATE ab_insights could
-- clear what a row records of its sources): take UPDATE back from every role but the owner.
DO $$
DECLARE
    r oid;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee
             FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = '@extschema@.ab_insights'::pg_catalog.regclass AND a.grantee <> c.relowner
               AND a.privilege_type = 'UPDATE'
    LOOP
        EXECUTE pg_catalog.format('REVOKE UPDATE ON @extschema@.ab_insights FROM %s',
                                  CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::pg_catalog.regrole::text END);
    END LOOP;
END;
$$;

-- ab_testing--0.12.0--0.13.0.sql
CREATE FUNCTION "ab_record_results"(
	"experiment" TEXT, /* Option < & str > */
	"metric_names" TEXT[], /* Option < Array < '_, & str > > */
	"metric_values" double precision[], /* Option < Array < '_, f64 > > */
	"user_ids" TEXT[], /* Option < Array < '_, & str > > */
	"session_ids" TEXT[] DEFAULT NULL, /* Option < Array < '_, & str > > */
	"recorded_at" timestamp with time zone[] DEFAULT NULL /* Option < Array < '_, TimestampWithTimeZone > > */
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_record_results_wrapper';
CREATE FUNCTION "ab_record_results"(
	"experiment" bigint, /* Option < i64 > */
	"metric_names" TEXT[], /* Option < Array < '_, & str > > */
	"metric_values" double precision[], /* Option < Array < '_, f64 > > */
	"user_ids" TEXT[], /* Option < Array < '_, & str > > */
	"session_ids" TEXT[] DEFAULT NULL, /* Option < Array < '_, & str > > */
	"recorded_at" timestamp with time zone[] DEFAULT NULL /* Option < Array < '_, TimestampWithTimeZone > > */
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_record_results_by_id_wrapper';
ALTER FUNCTION ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]), ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]) FROM PUBLIC;
COMMENT ON FUNCTION ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]) IS 'Records a batch of results in one statement, row i being the i-th element of each array (session_ids and recorded_at may be NULL: none, now); returns the rows recorded. Rows of users without an assignment are skipped; a bad row (position in the message) fails the whole batch.';
COMMENT ON FUNCTION ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]) IS 'ab_record_results by experiment id.';
COMMENT ON FUNCTION ab_grant_app(name) IS 'Lets a role do what an application needs: ab_get_variant, ab_record_result, ab_record_results and reading experiment definitions.';
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
                   '@extschema@.ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]), '
                   '@extschema@.ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]), '
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
                   '@extschema@.ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]), '
                   '@extschema@.ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_layer_group(text, text) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_experiment_overview FROM %I', role);
END;
$$;

DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.ab_record_result(text, text, double precision, text, text)'::pg_catalog.regprocedure
          AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text AND a.grantee OPERATOR(pg_catalog.<>) 0::pg_catalog.oid AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]), @extschema@.ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]) TO %s', grantee);
    END LOOP;
END;
$$;
-- end of ab_record_results

-- Recording at pool scale: room on ab_user_metrics' pages for its rows' updates to be HOT
-- (no new index entry). Only pages written from now on keep it: existing pages are
-- rewritten by VACUUM FULL or CLUSTER (see docs/performance.md), not by this update.
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_user_metrics'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'ALTER TABLE @extschema@.ab_user_metrics SET (fillfactor = 90)';
    END IF;
END
$$;

-- ab_testing--0.13.0--0.14.0.sql
CREATE FUNCTION "ab_differential_impact"(
	"experiment" TEXT /* Option < & str > */
) RETURNS TABLE (
	"attribute" TEXT,  /* String */
	"value" TEXT,  /* Option < String > */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"users" bigint,  /* i64 */
	"effect" double precision,  /* Option < f64 > */
	"effect_elsewhere" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"q_value" double precision,  /* Option < f64 > */
	"flagged" bool,  /* Option < bool > */
	"heterogeneity_p" double precision  /* Option < f64 > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_differential_impact_wrapper';
CREATE FUNCTION "ab_differential_impact"(
	"experiment" bigint /* Option < i64 > */
) RETURNS TABLE (
	"attribute" TEXT,  /* String */
	"value" TEXT,  /* Option < String > */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"users" bigint,  /* i64 */
	"effect" double precision,  /* Option < f64 > */
	"effect_elsewhere" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"q_value" double precision,  /* Option < f64 > */
	"flagged" bool,  /* Option < bool > */
	"heterogeneity_p" double precision  /* Option < f64 > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_differential_impact_by_id_wrapper';
CREATE FUNCTION "ab_interactions"(
	"experiment" TEXT /* Option < & str > */
) RETURNS TABLE (
	"other_experiment" TEXT,  /* String */
	"metric_name" TEXT,  /* Option < String > */
	"shared_users" bigint,  /* i64 */
	"independence_p" double precision,  /* Option < f64 > */
	"variant" TEXT,  /* Option < String > */
	"other_variant" TEXT,  /* Option < String > */
	"interaction" double precision,  /* Option < f64 > */
	"interaction_se" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"flagged" bool  /* Option < bool > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_interactions_wrapper';
CREATE FUNCTION "ab_interactions"(
	"experiment" bigint /* Option < i64 > */
) RETURNS TABLE (
	"other_experiment" TEXT,  /* String */
	"metric_name" TEXT,  /* Option < String > */
	"shared_users" bigint,  /* i64 */
	"independence_p" double precision,  /* Option < f64 > */
	"variant" TEXT,  /* Option < String > */
	"other_variant" TEXT,  /* Option < String > */
	"interaction" double precision,  /* Option < f64 > */
	"interaction_se" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"flagged" bool  /* Option < bool > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_interactions_by_id_wrapper';
ALTER FUNCTION ab_interactions(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_interactions(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_differential_impact(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_differential_impact(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_interactions(text), ab_interactions(bigint), ab_differential_impact(text), ab_differential_impact(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ab_interactions(text) IS 'Per other experiment sharing users with this one and metric both have: the users in both, the chi-square p-value of the independence of the two assignments, and the interaction of the treatment effects on the metric (OLS with an interaction term, HC2 variance, Wald test; the term furthest from 0 in standard errors), p-values adjusted across every row with the experiment''s correction; a row without metric when none is shared.';
COMMENT ON FUNCTION ab_interactions(bigint) IS 'ab_interactions by experiment id.';
COMMENT ON FUNCTION ab_differential_impact(text) IS 'Per breakdown attribute, segment (NULL: not given), metric and treatment: the effect among the segment''s users and among the rest, the z-test of their difference, its Benjamini-Hochberg q-value across every segment of every attribute and metric (flagged below the experiment''s alpha), and the attribute''s Cochran Q heterogeneity p-value (ratio and quantile metrics excluded).';
COMMENT ON FUNCTION ab_differential_impact(bigint) IS 'ab_differential_impact by experiment id.';
CREATE OR REPLACE FUNCTION ab_grant_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_interactions(text), @extschema@.ab_interactions(bigint), '
                   '@extschema@.ab_differential_impact(text), @extschema@.ab_differential_impact(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_period_srm_p_value(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, @extschema@.ab_insight_history, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
                   'TO %I', role);
    -- Stored analyses through the views, which show a row read from metric sources only to
    -- roles that may read them; of the table itself, only the columns that say which rows exist.
    EXECUTE format('GRANT SELECT (id, experiment_id, computed_at, metric_name, variant, is_control) '
                   'ON @extschema@.ab_insights TO %I', role);
END;
$$;
CREATE OR REPLACE FUNCTION ab_revoke_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_interactions(text), @extschema@.ab_interactions(bigint), '
                   '@extschema@.ab_differential_impact(text), @extschema@.ab_differential_impact(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_period_srm_p_value(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, @extschema@.ab_insight_history, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
                   'FROM %I', role);
END;
$$;
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view (stored analyses through ab_latest_insights and ab_insight_history) and run ab_analyze, ab_summary, ab_bayes, ab_plot, ab_timeline, ab_plot_timeline, ab_breakdown, ab_interactions and ab_differential_impact.';
-- Roles that could run ab_breakdown before this update (analysts, administrators, a direct
-- grant) may run both new functions after it, without ab_grant_analyst again.
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.ab_breakdown(text, text)'::pg_catalog.regprocedure
          AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text AND a.grantee OPERATOR(pg_catalog.<>) 0::pg_catalog.oid AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_interactions(text), @extschema@.ab_interactions(bigint), @extschema@.ab_differential_impact(text), @extschema@.ab_differential_impact(bigint) TO %s', grantee);
    END LOOP;
END;
$$;

-- Safe rollouts (issue 29): "allocation": {"mode": "rollout"}, ab_rollout_check,
-- ab_rollout_due, ab_rollback, ab_resume, ab_ship; their decisions in ab_audit.
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_audit'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'ALTER TABLE @extschema@.ab_audit DROP CONSTRAINT ab_audit_action_check';
    END IF;
END
$$;
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_audit'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'ALTER TABLE @extschema@.ab_audit ADD CONSTRAINT ab_audit_action_check CHECK (action IN (''created'', ''started'', ''stopped'', ''deleted'', ''stepped'', ''rolled_back'', ''resumed'', ''shipped'', ''completed''))';
    END IF;
END
$$;
COMMENT ON COLUMN ab_experiments.allocation IS 'NULL for fixed traffic allocations; for a bandit {"mode": "bandit", "metric", "update_every", "min_share", "burn_in_users"}; for a rollout {"mode": "rollout", "steps", "step_every", "step", "state"} (state ramping, rolled_back or completed).';

CREATE FUNCTION "ab_rollout_check"(
	"experiment" TEXT
) RETURNS TABLE (
	"experiment" TEXT,
	"action" TEXT,
	"step" INT,
	"share" double precision,
	"reason" TEXT,
	"detail" jsonb
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_rollout_check_wrapper';
CREATE FUNCTION "ab_rollout_due"() RETURNS TABLE (
	"experiment" TEXT,
	"action" TEXT,
	"step" INT,
	"share" double precision,
	"reason" TEXT,
	"detail" jsonb
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_rollout_due_wrapper';
CREATE FUNCTION "ab_rollback"(
	"experiment" TEXT,
	"reason" TEXT
) RETURNS jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_rollback_wrapper';
CREATE FUNCTION "ab_resume"(
	"experiment" TEXT
) RETURNS jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_resume_wrapper';
CREATE FUNCTION "ab_ship"(
	"experiment" TEXT
) RETURNS jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_ship_wrapper';
CREATE FUNCTION "ab_rollout_check"(
	"experiment" bigint
) RETURNS TABLE (
	"experiment" TEXT,
	"action" TEXT,
	"step" INT,
	"share" double precision,
	"reason" TEXT,
	"detail" jsonb
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_rollout_check_by_id_wrapper';
CREATE FUNCTION "ab_rollback"(
	"experiment" bigint,
	"reason" TEXT
) RETURNS jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_rollback_by_id_wrapper';
CREATE FUNCTION "ab_resume"(
	"experiment" bigint
) RETURNS jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_resume_by_id_wrapper';
CREATE FUNCTION "ab_ship"(
	"experiment" bigint
) RETURNS jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_ship_by_id_wrapper';
CREATE FUNCTION "ab_rollout_to"(
	"experiment" TEXT,
	"share" double precision
) RETURNS jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_rollout_to_wrapper';
CREATE FUNCTION "ab_rollout_to"(
	"experiment" bigint,
	"share" double precision
) RETURNS jsonb
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_rollout_to_by_id_wrapper';
REVOKE ALL ON FUNCTION ab_rollout_check(text), ab_rollout_check(bigint), ab_rollout_due(), ab_rollback(text, text),
    ab_rollback(bigint, text), ab_resume(text), ab_resume(bigint), ab_ship(text), ab_ship(bigint),
    ab_rollout_to(text, double precision), ab_rollout_to(bigint, double precision)
FROM PUBLIC;
COMMENT ON FUNCTION ab_rollout_check(text) IS 'Checks a ramping rollout now: every guardrail (a metric with a margin) and the sample ratio by an always-valid test; a breach rolls it back, otherwise it takes its next step when step_every has passed. Returns what was done and on which data.';
COMMENT ON FUNCTION ab_rollout_due() IS 'Runs ab_rollout_check on every ramping rollout, each in a subtransaction of its own (one that fails is a row with action failed and its error; the others are checked): for a scheduler such as pg_cron.';
COMMENT ON FUNCTION ab_rollback(text, text) IS 'Rolls a rollout back: from this commit on every ab_get_variant returns the control''s config to every user of the experiment; assignments stay recorded. The reason goes to ab_audit.';
COMMENT ON FUNCTION ab_resume(text) IS 'Resumes a rolled-back rollout at the step it was rolled back from.';
COMMENT ON FUNCTION ab_ship(text) IS 'Completes a ramping rollout now: the new variant takes every new user and checks stop.';
COMMENT ON FUNCTION ab_rollout_check(bigint) IS 'ab_rollout_check by experiment id.';
COMMENT ON FUNCTION ab_rollback(bigint, text) IS 'ab_rollback by experiment id.';
COMMENT ON FUNCTION ab_resume(bigint) IS 'ab_resume by experiment id.';
COMMENT ON FUNCTION ab_ship(bigint) IS 'ab_ship by experiment id.';
COMMENT ON FUNCTION ab_rollout_to(text, double precision) IS 'Moves a ramping rollout (a percentage flag) to a larger share of new users now: a step inserted after the current one; users keep their variant, so the share only goes up, and 100 completes it.';
COMMENT ON FUNCTION ab_rollout_to(bigint, double precision) IS 'ab_rollout_to by experiment id.';
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
                   '@extschema@.ab_rebuild_user_metrics(text), @extschema@.ab_rebuild_user_metrics(bigint), '
                   '@extschema@.ab_reweight(text, boolean), @extschema@.ab_reweight(bigint, boolean), @extschema@.ab_reweight_due(), '
                   '@extschema@.ab_rollout_check(text), @extschema@.ab_rollout_check(bigint), @extschema@.ab_rollout_due(), '
                   '@extschema@.ab_rollback(text, text), @extschema@.ab_rollback(bigint, text), '
                   '@extschema@.ab_resume(text), @extschema@.ab_resume(bigint), @extschema@.ab_ship(text), @extschema@.ab_ship(bigint), '
                   '@extschema@.ab_rollout_to(text, double precision), @extschema@.ab_rollout_to(bigint, double precision), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text), '
                   '@extschema@.ab_create_metric_source(text, jsonb), @extschema@.ab_drop_metric_source(text) TO %I', role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_metric_sources TO %I', role);
    -- Administration runs with the caller's rights.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_allocations TO %I', role);
    -- Stored analyses are not updated: what they record of their sources decides who may
    -- read them (ab_stop_experiment stores one as its caller, hence INSERT).
    EXECUTE format('GRANT INSERT, DELETE ON @extschema@.ab_insights TO %I', role);
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
                   '@extschema@.ab_rebuild_user_metrics(text), @extschema@.ab_rebuild_user_metrics(bigint), '
                   '@extschema@.ab_reweight(text, boolean), @extschema@.ab_reweight(bigint, boolean), @extschema@.ab_reweight_due(), '
                   '@extschema@.ab_rollout_check(text), @extschema@.ab_rollout_check(bigint), @extschema@.ab_rollout_due(), '
                   '@extschema@.ab_rollback(text, text), @extschema@.ab_rollback(bigint, text), '
                   '@extschema@.ab_resume(text), @extschema@.ab_resume(bigint), @extschema@.ab_ship(text), @extschema@.ab_ship(bigint), '
                   '@extschema@.ab_rollout_to(text, double precision), @extschema@.ab_rollout_to(bigint, double precision), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision), '
                   '@extschema@.ab_create_layer(text, double precision, text, text), @extschema@.ab_delete_layer(text), '
                   '@extschema@.ab_create_metric_source(text, jsonb), @extschema@.ab_drop_metric_source(text) FROM %I', role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_metric_sources FROM %I', role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, '
                   '@extschema@.ab_audit, @extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_allocations FROM %I', role);
    EXECUTE format('REVOKE USAGE ON SEQUENCE @extschema@.ab_experiments_id_seq, @extschema@.ab_variants_id_seq, '
                   '@extschema@.ab_results_id_seq, @extschema@.ab_insights_id_seq, @extschema@.ab_audit_id_seq, '
                   '@extschema@.ab_layers_id_seq FROM %I', role);
    PERFORM @extschema@.ab_revoke_analyst(role);
    PERFORM @extschema@.ab_revoke_app(role);
END;
$$;
-- End of safe rollouts.

-- Funnel and retention metrics (ab_funnel, ab_retention): new functions, analyst rights as
-- ab_breakdown's. The metrics themselves are new keys of a definition: no table changes.
CREATE FUNCTION "ab_funnel"(
	"experiment" TEXT /* Option < & str > */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"step" INT,  /* i32 */
	"step_metric" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"share" double precision,  /* Option < f64 > */
	"conversion" double precision,  /* Option < f64 > */
	"conversion_diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"p_value" double precision  /* Option < f64 > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_funnel_wrapper';
CREATE FUNCTION "ab_funnel"(
	"experiment" bigint /* Option < i64 > */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"step" INT,  /* i32 */
	"step_metric" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"share" double precision,  /* Option < f64 > */
	"conversion" double precision,  /* Option < f64 > */
	"conversion_diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"p_value" double precision  /* Option < f64 > */
)
STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_funnel_by_id_wrapper';
CREATE FUNCTION "ab_retention"(
	"experiment" TEXT /* Option < & str > */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"enrolled" bigint,  /* i64 */
	"too_new" bigint,  /* i64 */
	"eligible" bigint,  /* i64 */
	"active" bigint,  /* i64 */
	"rate" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"p_value" double precision  /* Option < f64 > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_retention_wrapper';
CREATE FUNCTION "ab_retention"(
	"experiment" bigint /* Option < i64 > */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"enrolled" bigint,  /* i64 */
	"too_new" bigint,  /* i64 */
	"eligible" bigint,  /* i64 */
	"active" bigint,  /* i64 */
	"rate" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"p_value" double precision  /* Option < f64 > */
)
STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_retention_by_id_wrapper';
ALTER FUNCTION ab_funnel(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_funnel(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_retention(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_retention(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_funnel(text), ab_funnel(bigint), ab_retention(text), ab_retention(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ab_funnel(text) IS 'Per funnel metric, step and variant: the users who reached the step in order within the funnel''s window, their share of the enrolled users, the conversion from the previous step, and each treatment''s difference from the control in that conversion with its CI and p-value (delta method; a two-proportion z-test for step 1).';
COMMENT ON FUNCTION ab_funnel(bigint) IS 'ab_funnel by experiment id.';
COMMENT ON FUNCTION ab_retention(text) IS 'Per retention metric and variant: the users enrolled, those enrolled too recently to have lived through the metric''s days (left out), the eligible and active users, the retention rate and each treatment''s difference from the control with its CI and p-value (two-proportion z-test).';
COMMENT ON FUNCTION ab_retention(bigint) IS 'ab_retention by experiment id.';
CREATE OR REPLACE FUNCTION ab_grant_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_interactions(text), @extschema@.ab_interactions(bigint), '
                   '@extschema@.ab_differential_impact(text), @extschema@.ab_differential_impact(bigint), '
                   '@extschema@.ab_funnel(text), @extschema@.ab_funnel(bigint), '
                   '@extschema@.ab_retention(text), @extschema@.ab_retention(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_period_srm_p_value(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, @extschema@.ab_insight_history, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
                   'TO %I', role);
    -- Stored analyses through the views, which show a row read from metric sources only to
    -- roles that may read them; of the table itself, only the columns that say which rows exist.
    EXECUTE format('GRANT SELECT (id, experiment_id, computed_at, metric_name, variant, is_control) '
                   'ON @extschema@.ab_insights TO %I', role);
END;
$$;
CREATE OR REPLACE FUNCTION ab_revoke_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_interactions(text), @extschema@.ab_interactions(bigint), '
                   '@extschema@.ab_differential_impact(text), @extschema@.ab_differential_impact(bigint), '
                   '@extschema@.ab_funnel(text), @extschema@.ab_funnel(bigint), '
                   '@extschema@.ab_retention(text), @extschema@.ab_retention(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_period_srm_p_value(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, @extschema@.ab_insight_history, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
                   'FROM %I', role);
END;
$$;
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view (stored analyses through ab_latest_insights and ab_insight_history) and run ab_analyze, ab_summary, ab_bayes, ab_plot, ab_timeline, ab_plot_timeline, ab_breakdown, ab_interactions, ab_differential_impact, ab_funnel and ab_retention.';
-- Roles that could run ab_breakdown before this update (analysts, administrators, a direct
-- grant) may run ab_funnel and ab_retention after it, without ab_grant_analyst again.
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.ab_breakdown(text, text)'::pg_catalog.regprocedure
          AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text AND a.grantee OPERATOR(pg_catalog.<>) 0::pg_catalog.oid AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_funnel(text), @extschema@.ab_funnel(bigint), @extschema@.ab_retention(text), @extschema@.ab_retention(bigint) TO %s', grantee);
    END LOOP;
END;
$$;

-- Regression adjustment with several covariates, and cluster-randomized experiments: ab_adjusted (a metric's "covariates" live in
-- ab_experiments.metrics, so no table changes), with the grants and pinned search_path of
-- ab_breakdown; ab_grant_analyst and ab_revoke_analyst cover it.
CREATE FUNCTION "ab_adjusted"(
	"experiment" TEXT /* & str */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"clusters" bigint,  /* Option < i64 > */
	"covariates" INT,  /* i32 */
	"adjusted_mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"std_error" double precision,  /* Option < f64 > */
	"unadjusted_std_error" double precision,  /* Option < f64 > */
	"variance_reduction" double precision,  /* Option < f64 > */
	"variance_reduction_vs_cuped" double precision,  /* Option < f64 > */
	"srm_p_value" double precision  /* Option < f64 > */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_adjusted_wrapper';
CREATE FUNCTION "ab_adjusted"(
	"experiment" bigint /* i64 */
) RETURNS TABLE (
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"clusters" bigint,  /* Option < i64 > */
	"covariates" INT,  /* i32 */
	"adjusted_mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"std_error" double precision,  /* Option < f64 > */
	"unadjusted_std_error" double precision,  /* Option < f64 > */
	"variance_reduction" double precision,  /* Option < f64 > */
	"variance_reduction_vs_cuped" double precision,  /* Option < f64 > */
	"srm_p_value" double precision  /* Option < f64 > */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_adjusted_by_id_wrapper';
ALTER FUNCTION ab_adjusted(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_adjusted(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_adjusted(text), ab_adjusted(bigint) FROM PUBLIC;
COMMENT ON FUNCTION ab_adjusted(text) IS 'Per metric declaring "covariates" (in a cluster-randomized experiment, every continuous and binary metric) and variant: the metric adjusted for its covariates (Lin''s regression adjustment: per arm, OLS on the covariates centered at their mean over every arm; strata as indicators), HC1 robust standard errors (cluster-robust in a cluster-randomized experiment), each treatment against the control, the share of the variance removed against no adjustment and against single-covariate CUPED on the first covariate, and the sample ratio check of the randomization unit.';
COMMENT ON FUNCTION ab_adjusted(bigint) IS 'ab_adjusted by experiment id.';
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view (stored analyses through ab_latest_insights and ab_insight_history) and run ab_analyze, ab_summary, ab_bayes, ab_plot, ab_timeline, ab_plot_timeline, ab_breakdown, ab_interactions, ab_differential_impact, ab_funnel, ab_retention and ab_adjusted.';

CREATE OR REPLACE FUNCTION ab_grant_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_interactions(text), @extschema@.ab_interactions(bigint), '
                   '@extschema@.ab_differential_impact(text), @extschema@.ab_differential_impact(bigint), '
                   '@extschema@.ab_funnel(text), @extschema@.ab_funnel(bigint), '
                   '@extschema@.ab_retention(text), @extschema@.ab_retention(bigint), '
                   '@extschema@.ab_adjusted(text), @extschema@.ab_adjusted(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_period_srm_p_value(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, @extschema@.ab_insight_history, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
                   'TO %I', role);
    -- Stored analyses through the views, which show a row read from metric sources only to
    -- roles that may read them; of the table itself, only the columns that say which rows exist.
    EXECUTE format('GRANT SELECT (id, experiment_id, computed_at, metric_name, variant, is_control) '
                   'ON @extschema@.ab_insights TO %I', role);
END;
$$;

CREATE OR REPLACE FUNCTION ab_revoke_analyst(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_analyze(text), @extschema@.ab_analyze(bigint), '
                   '@extschema@.ab_summary(text), @extschema@.ab_summary(bigint), '
                   '@extschema@.ab_bayes(text, jsonb), @extschema@.ab_bayes(bigint, jsonb), '
                   '@extschema@.ab_plot(text), @extschema@.ab_plot(bigint), '
                   '@extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                   '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                   '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text), '
                   '@extschema@.ab_interactions(text), @extschema@.ab_interactions(bigint), '
                   '@extschema@.ab_differential_impact(text), @extschema@.ab_differential_impact(bigint), '
                   '@extschema@.ab_funnel(text), @extschema@.ab_funnel(bigint), '
                   '@extschema@.ab_retention(text), @extschema@.ab_retention(bigint), '
                   '@extschema@.ab_adjusted(text), @extschema@.ab_adjusted(bigint), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint), '
                   '@extschema@.ab_period_srm_p_value(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, @extschema@.ab_assignments, '
                   '@extschema@.ab_results, @extschema@.ab_user_metrics, @extschema@.ab_covariates, @extschema@.ab_insights, @extschema@.ab_audit, '
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights, @extschema@.ab_insight_history, '
                   '@extschema@.ab_layers, @extschema@.ab_layer_experiments, @extschema@.ab_layer_overview, '
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history, @extschema@.ab_metric_sources '
                   'FROM %I', role);
END;
$$;

-- Every role that may run ab_breakdown may run ab_adjusted.
DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.ab_breakdown(text, text)'::pg_catalog.regprocedure AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text
               AND a.grantee OPERATOR(pg_catalog.<>) p.proowner LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_adjusted(text), @extschema@.ab_adjusted(bigint) TO %s', r);
    END LOOP;
END
$$;

-- Cluster-randomized experiments: the unit an experiment buckets by.
DO $$
DECLARE
    on_worker boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus'::pg_catalog.name) THEN
        EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO on_worker USING '@extschema@.ab_experiments'::pg_catalog.regclass;
    END IF;
    IF NOT on_worker THEN
        EXECUTE 'ALTER TABLE @extschema@.ab_experiments ADD COLUMN randomization_unit text CONSTRAINT ab_experiments_randomization_unit_check CHECK (randomization_unit IS NULL OR randomization_unit = ANY (breakdowns))';
    END IF;
END
$$;
COMMENT ON COLUMN ab_experiments.randomization_unit IS 'A cluster-randomized experiment''s unit: the attribute (one of breakdowns) whose value every user of a cluster shares; users are bucketed by it. NULL: users are randomized one by one.';
-- End of regression adjustment and cluster-randomized experiments.

-- Administration that runs with the caller's rights resolves no name through the caller's
-- search_path either: an operator planted in a schema on it (one that matches more closely
-- than pg_catalog's) would otherwise run with the rights of whoever checks or steps a
-- rollout, reweights a bandit or stops an experiment with declare_winner.
ALTER FUNCTION ab_rollout_check(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_rollout_check(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_rollout_due() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_rollback(text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_rollback(bigint, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_resume(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_resume(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_ship(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_ship(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_rollout_to(text, double precision) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_rollout_to(bigint, double precision) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_reweight(text, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_reweight(bigint, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_reweight_due() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_stop_experiment(text, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_stop_experiment(bigint, boolean) SET search_path = pg_catalog, pg_temp;

-- ab_testing--0.14.0--0.15.0.sql
CREATE OR REPLACE FUNCTION ab_get_experiment(experiment bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e @extschema@.ab_experiments;
    users jsonb;
    -- The role that called (this function runs as the extension's owner): the role SET ROLE
    -- chose, else the one that logged in.
    caller name := CASE pg_catalog.current_setting('role') WHEN 'none' THEN session_user
                   ELSE pg_catalog.current_setting('role')::name END;
    out jsonb;
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
    out := jsonb_build_object(
        'id', e.id,
        'name', e.name,
        'description', e.description,
        'experiment_type', e.experiment_type,
        'status', e.status,
        'primary_metric', e.primary_metric,
        'metrics', e.metrics,
        'strict_metrics', e.strict_metrics,
        'allocation', coalesce(e.allocation, '{"mode": "fixed"}'),
        'breakdowns', to_jsonb(e.breakdowns),
        'randomization_unit', e.randomization_unit,
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
        'results_recorded', (SELECT coalesce(sum(m.n), 0)::bigint FROM @extschema@.ab_user_metrics m WHERE m.experiment_id = e.id),
        'covariates_recorded', (SELECT count(*) FROM @extschema@.ab_covariates c WHERE c.experiment_id = e.id),
        'allocation_history', (SELECT coalesce(jsonb_agg(jsonb_build_object('period', h.period, 'started_at', h.started_at,
                                                                        'weights', h.weights, 'posterior', h.posterior)
                                                     ORDER BY h.period), '[]')
                               FROM @extschema@.ab_allocations h WHERE h.experiment_id = e.id),
        'layer', (SELECT jsonb_build_object('name', l.name, 'holdout', m.range_start IS NULL,
                                            'percentage', (m.range_end - m.range_start)::float8 / 100,
                                            'range_start', m.range_start, 'range_end', m.range_end)
                  FROM @extschema@.ab_layer_experiments m JOIN @extschema@.ab_layers l ON l.id = m.layer_id
                  WHERE m.experiment_id = e.id));
    -- A bandit's posteriors (its allocation history) only for roles that may read ab_allocations.
    IF NOT pg_catalog.has_table_privilege(caller, '@extschema@.ab_allocations', 'SELECT') THEN
        out := out - 'allocation_history';
    END IF;
    RETURN out;
END;
$$;
ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;
COMMENT ON COLUMN ab_insights.test IS 'welch, z, stratified (bandit experiments) or cluster (cluster-robust, in a cluster-randomized experiment), with -sequential in sequential mode.';

-- Interactions in ab_summary: the comments of ab_summary and ab_interactions say what they
-- report and which other experiments are compared.
COMMENT ON FUNCTION ab_summary(text) IS 'A plain-words report of the experiment and its recommendation, ending with the interactions with other experiments that ab_interactions flags (nothing when none is).';
COMMENT ON FUNCTION ab_interactions(text) IS 'Per other experiment sharing users with this one (not one that stopped before the other started, nor one of its layer with a disjoint range) and metric both have: the users in both, the chi-square p-value of the independence of the two assignments, and the interaction of the treatment effects on the metric (OLS with an interaction term, HC2 variance, Wald test; the term furthest from 0 in standard errors), p-values adjusted across every row with the experiment''s correction; a row without metric when none is shared.';

-- Roles that could run ab_reweight before the update to 0.14.0 (administrators, a direct
-- grant) may run the rollout functions, as after ab_grant_admin: the update to 0.14.0 did not
-- grant them. Every operator is pg_catalog's (the extension's schema is on the script's
-- search_path).
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::pg_catalog.regrole
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.oid OPERATOR(pg_catalog.=) '@extschema@.ab_reweight(text, boolean)'::pg_catalog.regprocedure
          AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'::pg_catalog.text
          AND a.grantee OPERATOR(pg_catalog.<>) 0::pg_catalog.oid AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_rollout_check(text), @extschema@.ab_rollout_check(bigint), '
                                  '@extschema@.ab_rollout_due(), @extschema@.ab_rollback(text, text), @extschema@.ab_rollback(bigint, text), '
                                  '@extschema@.ab_resume(text), @extschema@.ab_resume(bigint), @extschema@.ab_ship(text), '
                                  '@extschema@.ab_ship(bigint), @extschema@.ab_rollout_to(text, double precision), '
                                  '@extschema@.ab_rollout_to(bigint, double precision) TO %s', grantee);
    END LOOP;
END
$$;
