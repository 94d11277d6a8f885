-- 0.10.0 -> 0.11.0: metrics read from the application's own tables.
-- * ab_metric_sources (registered sources: a relation and its columns, by name) with
--   ab_create_metric_source and ab_drop_metric_source, for administrators.
-- * Source metrics (a metric's "source", "window" and "covariate") live in
--   ab_experiments.metrics: no column changes.
-- * ab_distribute makes ab_metric_sources a reference table.
-- ab_grant_analyst / ab_grant_admin and their revokes cover the new table and functions;
-- every role that may run ab_summary may read ab_metric_sources, and every role that may run
-- ab_create_experiment may register and drop sources.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.11.0'" to load this file. \quit

-- Metric sources registered for any experiment to read (ab_create_metric_source): a
-- relation of the application's and its columns, by name, never SQL text.
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
    FOR r IN SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid = '@extschema@.ab_summary(text)'::regprocedure AND a.privilege_type = 'EXECUTE'
               AND a.grantee <> p.proowner LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON @extschema@.ab_metric_sources TO %s', r);
    END LOOP;
    FOR r IN SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid = '@extschema@.ab_create_experiment(jsonb)'::regprocedure AND a.privilege_type = 'EXECUTE'
               AND a.grantee <> p.proowner LOOP
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
