-- 0.11.0 -> 0.12.0: trust boundaries and soundness.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.12.0'" to load this file. \quit

-- Analyses read-only, bounded timelines, one value rule: what ab_analyze, ab_timeline and
-- ab_reweight_due now do.
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
ALTER TABLE ab_insights ADD COLUMN source_reads jsonb, ADD COLUMN computed_by name;
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
               AND a.grantee <> 0 AND a.grantee <> c.relowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_period_srm_p_value(bigint) TO %s', r::pg_catalog.regrole);
    END LOOP;
    FOR r IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = '@extschema@.ab_latest_insights'::pg_catalog.regclass AND a.privilege_type = 'SELECT'
               AND a.grantee <> 0 AND a.grantee <> c.relowner
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
