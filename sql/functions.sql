-- SQL-language parts of the extension: experiment read-out, cache invalidation triggers,
-- and the documentation of every function (psql \df+ shows it).

CREATE FUNCTION ab_get_experiment(experiment bigint) RETURNS jsonb
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

CREATE FUNCTION ab_get_experiment(experiment text) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    experiment_id bigint;
BEGIN
    IF experiment IS NULL THEN
        RAISE EXCEPTION 'experiment must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT id INTO experiment_id FROM @extschema@.ab_experiments WHERE name = experiment;
    IF NOT FOUND AND pg_catalog.getdatabaseencoding() = 'UTF8' THEN
        -- Names are stored in NFC: another spelling of a stored name finds it too.
        SELECT id INTO experiment_id FROM @extschema@.ab_experiments WHERE name = normalize(experiment, NFC);
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'experiment "%" does not exist', experiment
            USING ERRCODE = 'undefined_object', HINT = 'ab_experiment_overview lists the experiments';
    END IF;
    RETURN @extschema@.ab_get_experiment(experiment_id);
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
    layer_name text := @extschema@.ab_normalize_name('layer name', ab_create_layer.name);
BEGIN
    IF holdout_percentage IS NULL OR NOT (holdout_percentage >= 0 AND holdout_percentage < 100)
       OR abs(holdout_percentage * 100 - round(holdout_percentage * 100)) >= 1e-6 THEN
        RAISE EXCEPTION 'holdout_percentage is %, must be at least 0 and below 100 with at most two decimals',
            coalesce(holdout_percentage::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM @extschema@.ab_layers l WHERE l.name = layer_name) THEN
        RAISE EXCEPTION 'layer "%" already exists', layer_name
            USING ERRCODE = 'duplicate_object', HINT = 'ab_layer_overview lists the layers';
    END IF;
    IF salt IS NOT NULL AND (btrim(salt) = '' OR char_length(salt) > 200) THEN
        RAISE EXCEPTION 'salt must be 1 to 200 characters long' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO @extschema@.ab_layers (name, holdout_percentage, description, salt)
    VALUES (layer_name, holdout_percentage, coalesce(description, ''),
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
    IF ab_delete_layer.name IS NULL THEN
        RAISE EXCEPTION 'layer must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO layer FROM @extschema@.ab_layers l WHERE l.name = ab_delete_layer.name FOR UPDATE;
    IF NOT FOUND THEN
        SELECT * INTO layer FROM @extschema@.ab_layers l
         WHERE l.name = @extschema@.ab_normalize_name('layer name', ab_delete_layer.name) FOR UPDATE;
    END IF;
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

CREATE TRIGGER ab_experiments_invalidate_cache
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab_experiments
    FOR EACH STATEMENT EXECUTE FUNCTION ab_invalidate_cache();
CREATE TRIGGER ab_variants_invalidate_cache
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab_variants
    FOR EACH STATEMENT EXECUTE FUNCTION ab_invalidate_cache();
CREATE TRIGGER ab_layer_experiments_invalidate_cache
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab_layer_experiments
    FOR EACH STATEMENT EXECUTE FUNCTION ab_invalidate_cache();
-- A delete of an experiment's row waits for the transactions writing its rows, on every node
-- that deletes it (under Citus, each node holding a copy of ab_experiments).
CREATE TRIGGER ab_experiments_lock_for_delete
    BEFORE DELETE ON ab_experiments
    FOR EACH ROW EXECUTE FUNCTION ab_lock_experiment_for_delete();
ALTER TABLE ab_experiments ENABLE ALWAYS TRIGGER ab_experiments_lock_for_delete;
-- Also under session_replication_role = replica (logical replication apply, restores): a
-- backend's cache must see every change, however it is made.
ALTER TABLE ab_experiments ENABLE ALWAYS TRIGGER ab_experiments_invalidate_cache;
ALTER TABLE ab_variants ENABLE ALWAYS TRIGGER ab_variants_invalidate_cache;
ALTER TABLE ab_layer_experiments ENABLE ALWAYS TRIGGER ab_layer_experiments_invalidate_cache;

COMMENT ON FUNCTION ab_create_experiment(jsonb) IS 'Creates an experiment in draft from its JSON definition; returns its id.';
COMMENT ON FUNCTION ab_start_experiment(text) IS 'Starts a draft experiment: users are assigned and results recorded from now on.';
COMMENT ON FUNCTION ab_start_experiment(bigint) IS 'Starts a draft experiment, by id.';
COMMENT ON FUNCTION ab_stop_experiment(text, boolean) IS 'Stops a running experiment; with declare_winner, names a winner only when the winner rule allows. Returns {"status", "winner", "reason"}.';
COMMENT ON FUNCTION ab_stop_experiment(bigint, boolean) IS 'Stops a running experiment, by id.';
COMMENT ON FUNCTION ab_delete_experiment(text) IS 'Deletes a draft or stopped experiment and all its rows.';
COMMENT ON FUNCTION ab_delete_experiment(bigint) IS 'Deletes a draft or stopped experiment and all its rows, by id.';
COMMENT ON FUNCTION ab_get_experiment(text) IS 'The experiment''s definition, status, variants and counts as jsonb.';
COMMENT ON FUNCTION ab_get_experiment(bigint) IS 'The experiment''s definition, status, variants and counts as jsonb, by id.';
COMMENT ON FUNCTION ab_get_variant(text, text, jsonb, text) IS 'The user''s sticky variant {"variant", "is_control", "config"}, or NULL when the experiment is not running, the user is not targeted, or falls outside the enrolled traffic.';
COMMENT ON FUNCTION ab_get_variant(bigint, text, jsonb, text) IS 'The user''s sticky variant, by experiment id.';
COMMENT ON FUNCTION ab_record_result(text, text, double precision, text, text) IS 'Records a metric value against the user''s variant; false (nothing written) when the experiment is not running or the user is not assigned.';
COMMENT ON FUNCTION ab_record_result(bigint, text, double precision, text, text) IS 'Records a metric value against the user''s variant, by experiment id.';
COMMENT ON FUNCTION ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]) IS 'Records a batch of results in one statement, row i being the i-th element of each array (session_ids and recorded_at may be NULL: none, now); returns the rows recorded. Rows of users without an assignment are skipped; a bad row (position in the message) fails the whole batch.';
COMMENT ON FUNCTION ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]) IS 'ab_record_results by experiment id.';
COMMENT ON FUNCTION ab_analyze(text) IS 'Per metric and variant: per-user statistics and the test against the control (Welch''s t-test, a z-test for binary metrics, the delta method for ratio metrics, always-valid in sequential mode), with CUPED, Bayesian and power columns; stored in ab_insights when the transaction can write (not in a read-only transaction or on a hot standby, where the rows are returned only).';
COMMENT ON FUNCTION ab_analyze(bigint) IS 'ab_analyze by experiment id.';
COMMENT ON FUNCTION ab_summary(text) IS 'A plain-words report of the experiment and its recommendation, ending with the interactions with other experiments that ab_interactions flags (nothing when none is).';
COMMENT ON FUNCTION ab_summary(bigint) IS 'ab_summary by experiment id.';
COMMENT ON FUNCTION ab_bayes(text, jsonb) IS 'Per metric and treatment: the posterior of the effect under a Gaussian prior (the argument''s, else the metric''s prior, else flat), with a credible interval, the chance to beat the control and the expected loss of shipping it and of keeping the control.';
COMMENT ON FUNCTION ab_bayes(bigint, jsonb) IS 'ab_bayes by experiment id.';
COMMENT ON FUNCTION ab_welch_test(bigint, double precision, double precision, bigint, double precision, double precision, double precision) IS 'Welch''s two-sample t-test from summary statistics (diff = b - a), as scipy.stats.ttest_ind_from_stats(equal_var=False).';
COMMENT ON FUNCTION ab_lock_experiment_for_delete() IS 'Trigger: a delete of an experiment waits for the transactions still writing its assignments, results or covariates on this node.';
COMMENT ON FUNCTION ab_invalidate_cache() IS 'Trigger: tells every backend to reload its cache of experiment definitions.';
COMMENT ON FUNCTION ab_record_covariate(text, text, text, double precision) IS 'Records (or replaces) a user''s pre-experiment covariate for a metric; ab_analyze then reports CUPED estimates.';
COMMENT ON FUNCTION ab_record_covariate(bigint, text, text, double precision) IS 'ab_record_covariate by experiment id.';
COMMENT ON FUNCTION ab_proportion_test(bigint, bigint, bigint, bigint, double precision) IS 'Two-proportion z-test (pooled z, as statsmodels proportions_ztest), with the score CI of diff = b - a that inverts the same test.';
COMMENT ON FUNCTION ab_srm_test(bigint[], double precision[]) IS 'Sample ratio mismatch: chi-square goodness of fit of observed counts against weights, as scipy.stats.chisquare.';
COMMENT ON FUNCTION ab_sample_size(double precision, double precision, double precision, double precision) IS 'Users per arm to detect an absolute difference mde (two-sided, equal allocation, normal approximation).';
COMMENT ON FUNCTION ab_normalize_name(text, text) IS 'The name in Unicode NFC, or an error saying why it cannot name an experiment, variant, metric or layer (control, invisible or bidirectional formatting characters, blank, over 200 characters).';
COMMENT ON FUNCTION ab_adjust_p_values(double precision[], text) IS 'Adjusted p-values: holm (Holm-Bonferroni) or bh (Benjamini-Hochberg), in input order.';

-- Views for dashboards (Grafana, Metabase): experiment health and the latest insights.
CREATE VIEW ab_experiment_health AS
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

CREATE VIEW ab_latest_insights AS
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

COMMENT ON VIEW ab_experiment_health IS 'Per experiment: users per variant, sample ratio mismatch p-value (below 0.001 is broken assignment), days running and progress towards min_sample_size (1 = reached).';
COMMENT ON VIEW ab_allocation_history IS 'Per bandit experiment, weight period and variant: when the period began, the variant''s traffic allocation, the posterior that produced it and the users it assigned.';
COMMENT ON VIEW ab_latest_insights IS 'The rows of each experiment''s most recent ab_analyze run that the current role may read (see ab_may_read_insight).';
COMMENT ON VIEW ab_insight_history IS 'Every stored ab_analyze row that the current role may read: of an analysis without metric sources, or whose sources it may read.';
COMMENT ON FUNCTION ab_plot(text) IS 'An SVG forest plot of each treatment''s difference from the control with its CI, per metric.';
COMMENT ON FUNCTION ab_plot(bigint) IS 'ab_plot by experiment id.';
COMMENT ON FUNCTION ab_timeline(text, text) IS 'Per day since the first enrollment (in the session''s TimeZone) until the experiment''s stop or today, metric and variant: the comparison with the control over the users enrolled and the results recorded by the end of that day (cumulative; without CUPED; ratio and quantile metrics excluded).';
COMMENT ON FUNCTION ab_timeline(bigint, text) IS 'ab_timeline by experiment id.';
COMMENT ON FUNCTION ab_plot_timeline(text, text) IS 'An SVG line chart of each treatment''s cumulative difference from the control on a metric (the primary one by default), day by day, with its CI as a band.';
COMMENT ON FUNCTION ab_plot_timeline(bigint, text) IS 'ab_plot_timeline by experiment id.';
COMMENT ON FUNCTION ab_breakdown(text, text) IS 'Per value of an attribute stored at enrollment (one of the experiment''s breakdowns; NULL: not given), metric and variant: the comparison with the control among those users, p-values adjusted across every segment and treatment of the metric (without CUPED; ratio and quantile metrics excluded).';
COMMENT ON FUNCTION ab_breakdown(bigint, text) IS 'ab_breakdown by experiment id.';
COMMENT ON FUNCTION ab_interactions(text) IS 'Per other experiment sharing users with this one (not one that stopped before the other started, nor one of its layer with a disjoint range) and metric both have: the users in both, the chi-square p-value of the independence of the two assignments, and the interaction of the treatment effects on the metric (OLS with an interaction term, HC2 variance, Wald test; the term furthest from 0 in standard errors), p-values adjusted across every row with the experiment''s correction; a row without metric when none is shared.';
COMMENT ON FUNCTION ab_interactions(bigint) IS 'ab_interactions by experiment id.';
COMMENT ON FUNCTION ab_differential_impact(text) IS 'Per breakdown attribute, segment (NULL: not given), metric and treatment: the effect among the segment''s users and among the rest, the z-test of their difference, its Benjamini-Hochberg q-value across every segment of every attribute and metric (flagged below the experiment''s alpha), and the attribute''s Cochran Q heterogeneity p-value (ratio and quantile metrics excluded).';
COMMENT ON FUNCTION ab_differential_impact(bigint) IS 'ab_differential_impact by experiment id.';
COMMENT ON FUNCTION ab_funnel(text) IS 'Per funnel metric, step and variant: the users who reached the step in order within the funnel''s window, their share of the enrolled users, the conversion from the previous step, and each treatment''s difference from the control in that conversion with its CI and p-value (delta method; a two-proportion z-test for step 1).';
COMMENT ON FUNCTION ab_funnel(bigint) IS 'ab_funnel by experiment id.';
COMMENT ON FUNCTION ab_retention(text) IS 'Per retention metric and variant: the users enrolled, those enrolled too recently to have lived through the metric''s days (left out), the eligible and active users, the retention rate and each treatment''s difference from the control with its CI and p-value (two-proportion z-test).';
COMMENT ON FUNCTION ab_retention(bigint) IS 'ab_retention by experiment id.';
COMMENT ON FUNCTION ab_adjusted(text) IS 'Per metric declaring "covariates" (in a cluster-randomized experiment, every continuous and binary metric) and variant: the metric adjusted for its covariates (Lin''s regression adjustment: per arm, OLS on the covariates centered at their mean over every arm; strata as indicators), HC1 robust standard errors (cluster-robust in a cluster-randomized experiment), each treatment against the control, the share of the variance removed against no adjustment and against single-covariate CUPED on the first covariate, and the sample ratio check of the randomization unit.';
COMMENT ON FUNCTION ab_adjusted(bigint) IS 'ab_adjusted by experiment id.';

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

-- Privileges. Out of the box PUBLIC may compute statistics and nothing else; the owner hands
-- out the rest with ab_grant_app, ab_grant_analyst and ab_grant_admin.
--
-- The application and analysis functions run with the owner's rights (SECURITY DEFINER), so
-- their callers need no privilege on the tables. Every one of them pins search_path:
-- ab_get_experiment, ab_analyze and ab_summary with a SET clause, ab_get_variant and
-- ab_record_result inside their code (a SET clause would cost every call on the hot path).
-- Their hot paths run only statements prepared by the extension that name every table,
-- operator and function with its schema; everything else they run, with the same pinned path.
-- Administration runs with the caller's rights, so ab_audit records who did it.
ALTER FUNCTION ab_get_variant(text, text, jsonb, text) SECURITY DEFINER;
ALTER FUNCTION ab_get_variant(bigint, text, jsonb, text) SECURITY DEFINER;
ALTER FUNCTION ab_record_result(text, text, double precision, text, text) SECURITY DEFINER;
ALTER FUNCTION ab_record_result(bigint, text, double precision, text, text) SECURITY DEFINER;
ALTER FUNCTION ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_get_experiment(text) SECURITY DEFINER;
ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;
ALTER FUNCTION ab_analyze(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_analyze(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_summary(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_summary(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_bayes(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_bayes(bigint, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_timeline(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_timeline(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot_timeline(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot_timeline(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_breakdown(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_breakdown(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_interactions(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_interactions(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_differential_impact(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_differential_impact(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_funnel(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_funnel(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_retention(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_retention(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_adjusted(text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_adjusted(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_layer_group(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION
    ab_create_experiment(jsonb),
    ab_start_experiment(text), ab_start_experiment(bigint),
    ab_stop_experiment(text, boolean), ab_stop_experiment(bigint, boolean),
    ab_delete_experiment(text), ab_delete_experiment(bigint),
    ab_rebuild_user_metrics(text), ab_rebuild_user_metrics(bigint),
    ab_reweight(text, boolean), ab_reweight(bigint, boolean), ab_reweight_due(),
    ab_rollout_check(text), ab_rollout_check(bigint), ab_rollout_due(), ab_rollback(text, text), ab_rollback(bigint, text),
    ab_resume(text), ab_resume(bigint), ab_ship(text), ab_ship(bigint),
    ab_rollout_to(text, double precision), ab_rollout_to(bigint, double precision),
    ab_record_covariate(text, text, text, double precision), ab_record_covariate(bigint, text, text, double precision),
    ab_get_variant(text, text, jsonb, text), ab_get_variant(bigint, text, jsonb, text),
    ab_record_result(text, text, double precision, text, text), ab_record_result(bigint, text, double precision, text, text),
    ab_record_results(text, text[], double precision[], text[], text[], timestamp with time zone[]),
    ab_record_results(bigint, text[], double precision[], text[], text[], timestamp with time zone[]),
    ab_get_experiment(text), ab_get_experiment(bigint),
    ab_analyze(text), ab_analyze(bigint),
    ab_summary(text), ab_summary(bigint),
    ab_bayes(text, jsonb), ab_bayes(bigint, jsonb),
    ab_plot(text), ab_plot(bigint),
    ab_timeline(text, text), ab_timeline(bigint, text), ab_plot_timeline(text, text), ab_plot_timeline(bigint, text),
    ab_breakdown(text, text), ab_breakdown(bigint, text),
    ab_interactions(text), ab_interactions(bigint), ab_differential_impact(text), ab_differential_impact(bigint),
    ab_funnel(text), ab_funnel(bigint), ab_retention(text), ab_retention(bigint),
    ab_adjusted(text), ab_adjusted(bigint),
    ab_create_layer(text, double precision, text, text), ab_delete_layer(text), ab_layer_group(text, text),
    ab_create_metric_source(text, jsonb), ab_drop_metric_source(text),
    ab_invalidate_cache(), ab_lock_experiment_for_delete(), ab_check_variants(), ab_check_layer_ranges(), ab_check_layer_update(),
    ab_period_srm_p_value(bigint)
FROM PUBLIC;

CREATE FUNCTION ab_grant_app(role name) RETURNS void
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

CREATE FUNCTION ab_revoke_app(role name) RETURNS void
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

CREATE FUNCTION ab_grant_analyst(role name) RETURNS void
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

CREATE FUNCTION ab_revoke_analyst(role name) RETURNS void
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

CREATE FUNCTION ab_revoke_admin(role name) RETURNS void
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

REVOKE ALL ON FUNCTION ab_grant_app(name), ab_revoke_app(name), ab_grant_analyst(name), ab_revoke_analyst(name),
    ab_grant_admin(name), ab_revoke_admin(name) FROM PUBLIC;

COMMENT ON FUNCTION ab_rebuild_user_metrics(text) IS 'Recomputes an experiment''s per-user state (ab_user_metrics) from ab_results, after ab_results was changed other than by ab_record_result; returns the rows written.';
COMMENT ON FUNCTION ab_rebuild_user_metrics(bigint) IS 'ab_rebuild_user_metrics by experiment id.';
COMMENT ON FUNCTION ab_reweight(text, boolean) IS 'Recomputes a running bandit experiment''s weights by Thompson sampling when its update_every has passed (always with force); enrolled users keep their variant. Returns what was done.';
COMMENT ON FUNCTION ab_reweight(bigint, boolean) IS 'ab_reweight by experiment id.';
COMMENT ON FUNCTION ab_reweight_due() IS 'Runs ab_reweight on every running bandit experiment whose update_every has passed, each in a subtransaction of its own (one that fails is a row with its error and NULL period and weights; the others are reweighted): for a scheduler such as pg_cron.';
COMMENT ON FUNCTION ab_period_srm_p_value(bigint) IS 'Sample ratio mismatch p-value of a bandit experiment, each weight period against its own weights.';
COMMENT ON FUNCTION ab_grant_app(name) IS 'Lets a role do what an application needs: ab_get_variant, ab_record_result, ab_record_results and reading experiment definitions.';
COMMENT ON FUNCTION ab_revoke_app(name) IS 'Takes back what ab_grant_app gave.';
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view (stored analyses through ab_latest_insights and ab_insight_history) and run ab_analyze, ab_summary, ab_bayes, ab_plot, ab_timeline, ab_plot_timeline, ab_breakdown, ab_interactions, ab_differential_impact, ab_funnel, ab_retention and ab_adjusted.';
COMMENT ON FUNCTION ab_create_metric_source(text, jsonb) IS 'Registers a metric source: a table or view of the application''s (schema-qualified relation, user_column, time_column, optional value_column and filter), checked against the catalog, for experiments to name in a metric''s "source". The registering role must be able to read its columns. An analysis reads it as the role running it when the relation''s owner holds that role''s privileges, else as the owner (after checking that the role may read those columns; refused where row-level security, a security_invoker view or a foreign table would then show more).';
COMMENT ON FUNCTION ab_drop_metric_source(text) IS 'Drops a metric source that no experiment names.';
COMMENT ON FUNCTION ab_revoke_analyst(name) IS 'Takes back what ab_grant_analyst gave.';
COMMENT ON FUNCTION ab_grant_admin(name) IS 'Lets a role administer experiments (create, start, stop, delete, covariates) on top of the app and analyst rights.';
COMMENT ON FUNCTION ab_revoke_admin(name) IS 'Takes back what ab_grant_admin gave, with the app and analyst rights.';
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
