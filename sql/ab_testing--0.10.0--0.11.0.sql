-- 0.10.0 -> 0.11.0: metrics read from the application's own tables.
-- * ab_metric_sources (registered sources: a relation and its columns, by name) with
--   ab_create_metric_source and ab_drop_metric_source, for administrators.
-- * Source metrics (a metric's "source", "window" and "covariate") live in
--   ab_experiments.metrics: no column changes.
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
COMMENT ON COLUMN ab_metric_sources.definition IS 'relation (schema-qualified), user_column, time_column, value_column, filter: names checked against the catalog.';

--FUNCTIONS--

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
        EXECUTE pg_catalog.format('GRANT SELECT, INSERT, DELETE ON @extschema@.ab_metric_sources TO %s', r);
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
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON @extschema@.ab_metric_sources TO %I', role);
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
    EXECUTE format('REVOKE SELECT, INSERT, DELETE ON @extschema@.ab_metric_sources FROM %I', role);
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
