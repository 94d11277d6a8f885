-- ab_testing 0.7.0 -> 0.8.0: bandit experiments (adaptive allocation).
-- * ab_experiments.allocation: NULL (fixed) or the bandit settings of the definition.
-- * ab_assignments.period: the weight period whose weights assigned the user (0 for all
--   existing assignments).
-- * ab_allocations: the weight periods of each bandit; view ab_allocation_history.
-- * ab_reweight, ab_reweight_due, ab_period_srm_p_value; ab_get_experiment shows the
--   allocation and its history; ab_experiment_health checks a bandit's sample ratio per period.
-- * The grant functions and ab_distribute cover the new table.
-- Everything here is also in the fresh-install sources (sql/schema.sql, sql/functions.sql,
-- sql/distribute.sql, src/); tests/client/test_operations.py checks that an upgraded database
-- matches a fresh install object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.8.0'" to load this file. \quit

ALTER TABLE ab_experiments ADD COLUMN allocation jsonb CHECK (jsonb_typeof(allocation) = 'object');
ALTER TABLE ab_assignments ADD COLUMN period integer NOT NULL DEFAULT 0 CHECK (period >= 0);
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
