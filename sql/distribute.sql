-- Citus: ab_distribute() lays the tables and functions out across the cluster.
--
-- Experiment-level tables become reference tables (a copy on every node); the per-user tables
-- are hash-distributed by user_id and colocated, so one user's assignment, results and
-- covariates live in the same shard group. The functions that take a user are distributed by
-- their user_id argument: Citus sends each call to the worker holding the user's shards,
-- where it reads and writes them locally.

-- The dashboard views in a form Citus can plan: per-experiment counts as grouped subqueries
-- joined to the experiments (Citus cannot run a correlated subquery whose outer query reads a
-- reference table). On one node the correlated form is kept: filtered by experiment, it counts
-- only that experiment's rows.
CREATE FUNCTION ab_distributed_views() RETURNS void
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
    LEFT JOIN (SELECT experiment_id, count(*) AS n FROM @extschema@.ab_results GROUP BY experiment_id) r
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

CREATE FUNCTION ab_distribute()
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

    FOREACH t IN ARRAY ARRAY['ab_assignments', 'ab_results', 'ab_covariates'] LOOP
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

REVOKE ALL ON FUNCTION ab_distribute(), ab_distributed_views() FROM PUBLIC;

COMMENT ON FUNCTION ab_distribute() IS 'On a Citus coordinator: makes the experiment-level tables reference tables, distributes assignments, results and covariates by user_id (colocated), and delegates ab_get_variant, ab_record_result and ab_record_covariate to the worker holding the user. Idempotent; returns what it laid out and whether it changed anything.';
COMMENT ON FUNCTION ab_distributed_views() IS 'Replaces the dashboard views with forms Citus can plan; called by ab_distribute().';
