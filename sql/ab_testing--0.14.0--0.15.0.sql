-- Cluster-randomized experiments: ab_get_experiment shows the randomization unit; ab_insights.test
-- may be cluster.
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
