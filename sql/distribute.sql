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

-- DROP EXTENSION on a Citus coordinator removes the tables and Citus's metadata but leaves the
-- shard tables on every node (Citus 13.2): drop them first.
CREATE FUNCTION ab_drop_shards() RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped bigint := 0;
    t record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'ab_drop_shards needs Citus, and the citus extension is not installed in this database'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    FOR t IN SELECT p.logicalrelid, n.nspname, c.relname
               FROM pg_dist_partition p
               JOIN pg_class c ON c.oid = p.logicalrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'ab_testing'
    LOOP
        dropped := dropped + citus_drop_all_shards(t.logicalrelid, t.nspname, t.relname);
    END LOOP;
    RETURN dropped;
END;
$$;

REVOKE ALL ON FUNCTION ab_distribute(), ab_distributed_views(), ab_drop_shards() FROM PUBLIC;

COMMENT ON FUNCTION ab_distribute() IS 'On a Citus coordinator: makes the experiment-level tables reference tables, distributes assignments, results and covariates by user_id (colocated), and delegates ab_get_variant, ab_record_result and ab_record_covariate to the worker holding the user. Idempotent; returns what it laid out and whether it changed anything.';
COMMENT ON FUNCTION ab_distributed_views() IS 'Replaces the dashboard views with forms Citus can plan; called by ab_distribute().';
COMMENT ON FUNCTION ab_drop_shards() IS 'On a Citus coordinator, before DROP EXTENSION ab_testing: drops every shard of the extension''s tables on every node (their rows are lost, as DROP EXTENSION loses them); returns how many.';
