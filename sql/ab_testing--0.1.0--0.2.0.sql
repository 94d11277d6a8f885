-- ab_testing 0.1.0 -> 0.2.0: least-privilege roles, SECURITY DEFINER functions with a pinned
-- search_path, the audit trail of lifecycle changes, dashboard views and ab_plot. Everything
-- here is also in the fresh-install sources (sql/schema.sql, sql/functions.sql, src/);
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.
\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.2.0'" to load this file. \quit

-- Who created, started, stopped or deleted an experiment, and when: written by the lifecycle
-- functions (not a trigger, which would fire again while pg_restore reloads the tables).
-- Rows outlive the experiment they describe.
CREATE TABLE ab_audit (
    id               bigserial PRIMARY KEY,
    experiment_id    bigint NOT NULL,
    experiment_name  text NOT NULL,
    action           text NOT NULL CHECK (action IN ('created', 'started', 'stopped', 'deleted')),
    detail           jsonb NOT NULL DEFAULT '{}',
    role_name        name NOT NULL DEFAULT current_user,
    session_role     name NOT NULL DEFAULT session_user,
    at               timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
CREATE INDEX ab_audit_experiment ON ab_audit (experiment_id, at);

SELECT pg_catalog.pg_extension_config_dump('ab_audit', '');
SELECT pg_catalog.pg_extension_config_dump('ab_audit_id_seq', '');

COMMENT ON TABLE ab_audit IS 'Who created, started, stopped or deleted each experiment through the ab_* functions, and when; kept after the experiment is deleted.';
COMMENT ON COLUMN ab_audit.experiment_id IS 'ab_experiments.id of the experiment (which may no longer exist).';
COMMENT ON COLUMN ab_audit.experiment_name IS 'The experiment''s name at the time.';
COMMENT ON COLUMN ab_audit.action IS 'created, started, stopped or deleted.';
COMMENT ON COLUMN ab_audit.detail IS 'The declared winner of a stop; the type of a creation.';
COMMENT ON COLUMN ab_audit.role_name IS 'The role that made the change (current_user).';
COMMENT ON COLUMN ab_audit.session_role IS 'The role that logged in (session_user).';
COMMENT ON COLUMN ab_audit.at IS 'When the change was made.';


CREATE FUNCTION ab_plot(experiment text) RETURNS text
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_plot_wrapper';

CREATE FUNCTION ab_plot(experiment bigint) RETURNS text
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'ab_plot_by_id_wrapper';

-- Views for dashboards (Grafana, Metabase): experiment health and the latest insights.
CREATE VIEW ab_experiment_health AS
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
JOIN LATERAL (
    SELECT v.name AS variant, v.position, v.traffic_allocation,
           (SELECT count(*) FROM @extschema@.ab_assignments a WHERE a.experiment_id = e.id AND a.variant_id = v.id) AS users
    FROM @extschema@.ab_variants v WHERE v.experiment_id = e.id) c ON true
GROUP BY e.id;

CREATE VIEW ab_latest_insights AS
SELECT e.name AS experiment, i.*
FROM @extschema@.ab_insights i
JOIN @extschema@.ab_experiments e ON e.id = i.experiment_id
WHERE i.computed_at = (SELECT max(j.computed_at) FROM @extschema@.ab_insights j WHERE j.experiment_id = i.experiment_id);

COMMENT ON VIEW ab_experiment_health IS 'Per experiment: users per variant, sample ratio mismatch p-value (below 0.001 is broken assignment), days running and progress towards min_sample_size (1 = reached).';
COMMENT ON VIEW ab_latest_insights IS 'The rows of each experiment''s most recent ab_analyze run.';
COMMENT ON FUNCTION ab_plot(text) IS 'An SVG forest plot of each treatment''s difference from the control with its CI, per metric.';
COMMENT ON FUNCTION ab_plot(bigint) IS 'ab_plot by experiment id.';

-- Privileges. Out of the box PUBLIC may compute statistics and nothing else; the owner hands
-- out the rest with ab_grant_app, ab_grant_analyst and ab_grant_admin.
--
-- The application and analysis functions run with the owner's rights (SECURITY DEFINER), so
-- their callers need no privilege on the tables. Every one of them pins search_path:
-- ab_get_experiment, ab_record_result, ab_analyze and ab_summary with a SET clause,
-- ab_get_variant inside its code (a SET clause would cost every call on the hot path; its
-- assigned-user path resolves no names, and its other paths run with the same pinned path).
-- Administration runs with the caller's rights, so ab_audit records who did it.
ALTER FUNCTION ab_get_variant(text, text, jsonb, text) SECURITY DEFINER;
ALTER FUNCTION ab_get_variant(bigint, text, jsonb, text) SECURITY DEFINER;
ALTER FUNCTION ab_record_result(text, text, double precision, text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_record_result(bigint, text, double precision, text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_get_experiment(text) SECURITY DEFINER;
ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;
ALTER FUNCTION ab_analyze(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_analyze(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_summary(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_summary(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION
    ab_create_experiment(jsonb),
    ab_start_experiment(text), ab_start_experiment(bigint),
    ab_stop_experiment(text, boolean), ab_stop_experiment(bigint, boolean),
    ab_delete_experiment(text), ab_delete_experiment(bigint),
    ab_record_covariate(text, text, text, double precision), ab_record_covariate(bigint, text, text, double precision),
    ab_get_variant(text, text, jsonb, text), ab_get_variant(bigint, text, jsonb, text),
    ab_record_result(text, text, double precision, text, text), ab_record_result(bigint, text, double precision, text, text),
    ab_get_experiment(text), ab_get_experiment(bigint),
    ab_analyze(text), ab_analyze(bigint),
    ab_summary(text), ab_summary(bigint),
    ab_plot(text), ab_plot(bigint),
    ab_invalidate_cache(), ab_check_variants()
FROM PUBLIC;

CREATE FUNCTION ab_grant_app(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', '@extschema@', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.ab_get_variant(text, text, jsonb, text), '
                   '@extschema@.ab_get_variant(bigint, text, jsonb, text), '
                   '@extschema@.ab_record_result(text, text, double precision, text, text), '
                   '@extschema@.ab_record_result(bigint, text, double precision, text, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) TO %I', role);
    EXECUTE format('GRANT SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_experiment_overview TO %I', role);
END;
$$;

CREATE FUNCTION ab_revoke_app(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_get_variant(text, text, jsonb, text), '
                   '@extschema@.ab_get_variant(bigint, text, jsonb, text), '
                   '@extschema@.ab_record_result(text, text, double precision, text, text), '
                   '@extschema@.ab_record_result(bigint, text, double precision, text, text), '
                   '@extschema@.ab_get_experiment(text), @extschema@.ab_get_experiment(bigint) FROM %I', role);
    EXECUTE format('REVOKE SELECT ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_experiment_overview FROM %I', role);
END;
$$;

CREATE FUNCTION ab_grant_analyst(role name) RETURNS void
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
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights '
                   'TO %I', role);
END;
$$;

CREATE FUNCTION ab_revoke_analyst(role name) RETURNS void
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
                   '@extschema@.ab_experiment_overview, @extschema@.ab_experiment_health, @extschema@.ab_latest_insights '
                   'FROM %I', role);
END;
$$;

CREATE FUNCTION ab_grant_admin(role name) RETURNS void
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
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision) TO %I', role);
    -- Administration runs with the caller's rights.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_covariates, @extschema@.ab_insights '
                   'TO %I', role);
    EXECUTE format('GRANT INSERT ON @extschema@.ab_audit TO %I', role);
    EXECUTE format('GRANT USAGE ON SEQUENCE @extschema@.ab_experiments_id_seq, @extschema@.ab_variants_id_seq, '
                   '@extschema@.ab_results_id_seq, @extschema@.ab_insights_id_seq, @extschema@.ab_audit_id_seq TO %I', role);
END;
$$;

CREATE FUNCTION ab_revoke_admin(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION @extschema@.ab_create_experiment(jsonb), '
                   '@extschema@.ab_start_experiment(text), @extschema@.ab_start_experiment(bigint), '
                   '@extschema@.ab_stop_experiment(text, boolean), @extschema@.ab_stop_experiment(bigint, boolean), '
                   '@extschema@.ab_delete_experiment(text), @extschema@.ab_delete_experiment(bigint), '
                   '@extschema@.ab_record_covariate(text, text, text, double precision), '
                   '@extschema@.ab_record_covariate(bigint, text, text, double precision) FROM %I', role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON @extschema@.ab_experiments, @extschema@.ab_variants, '
                   '@extschema@.ab_assignments, @extschema@.ab_results, @extschema@.ab_covariates, @extschema@.ab_insights, '
                   '@extschema@.ab_audit FROM %I', role);
    EXECUTE format('REVOKE USAGE ON SEQUENCE @extschema@.ab_experiments_id_seq, @extschema@.ab_variants_id_seq, '
                   '@extschema@.ab_results_id_seq, @extschema@.ab_insights_id_seq, @extschema@.ab_audit_id_seq FROM %I', role);
    PERFORM @extschema@.ab_revoke_analyst(role);
    PERFORM @extschema@.ab_revoke_app(role);
END;
$$;

REVOKE ALL ON FUNCTION ab_grant_app(name), ab_revoke_app(name), ab_grant_analyst(name), ab_revoke_analyst(name),
    ab_grant_admin(name), ab_revoke_admin(name) FROM PUBLIC;

COMMENT ON FUNCTION ab_grant_app(name) IS 'Lets a role do what an application needs: ab_get_variant, ab_record_result and reading experiment definitions.';
COMMENT ON FUNCTION ab_revoke_app(name) IS 'Takes back what ab_grant_app gave.';
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view and run ab_analyze, ab_summary and ab_plot.';
COMMENT ON FUNCTION ab_revoke_analyst(name) IS 'Takes back what ab_grant_analyst gave.';
COMMENT ON FUNCTION ab_grant_admin(name) IS 'Lets a role administer experiments (create, start, stop, delete, covariates) on top of the app and analyst rights.';
COMMENT ON FUNCTION ab_revoke_admin(name) IS 'Takes back what ab_grant_admin gave, with the app and analyst rights.';
