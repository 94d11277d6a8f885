-- SQL-language parts of the extension: experiment read-out, cache invalidation triggers,
-- and the documentation of every function (psql \df+ shows it).

CREATE FUNCTION ab_get_experiment(experiment bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e @extschema@.ab_experiments;
BEGIN
    SELECT * INTO e FROM @extschema@.ab_experiments WHERE id = experiment;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'experiment with id % does not exist', experiment
            USING ERRCODE = 'undefined_object', HINT = 'ab_experiment_overview lists the experiments';
    END IF;
    RETURN jsonb_build_object(
        'id', e.id,
        'name', e.name,
        'description', e.description,
        'experiment_type', e.experiment_type,
        'status', e.status,
        'primary_metric', e.primary_metric,
        'metrics', e.metrics,
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
                       'users', (SELECT count(*) FROM @extschema@.ab_assignments a
                                 WHERE a.experiment_id = e.id AND a.variant_id = v.id))
                   ORDER BY v.position), '[]')
            FROM @extschema@.ab_variants v WHERE v.experiment_id = e.id),
        'users_assigned', (SELECT count(*) FROM @extschema@.ab_assignments a WHERE a.experiment_id = e.id),
        'results_recorded', (SELECT count(*) FROM @extschema@.ab_results r WHERE r.experiment_id = e.id),
        'covariates_recorded', (SELECT count(*) FROM @extschema@.ab_covariates c WHERE c.experiment_id = e.id));
END;
$$;

CREATE FUNCTION ab_get_experiment(experiment text) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    experiment_id bigint;
BEGIN
    SELECT id INTO experiment_id FROM @extschema@.ab_experiments WHERE name = experiment;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'experiment "%" does not exist', experiment
            USING ERRCODE = 'undefined_object', HINT = 'ab_experiment_overview lists the experiments';
    END IF;
    RETURN @extschema@.ab_get_experiment(experiment_id);
END;
$$;

CREATE TRIGGER ab_experiments_invalidate_cache
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab_experiments
    FOR EACH STATEMENT EXECUTE FUNCTION ab_invalidate_cache();
CREATE TRIGGER ab_variants_invalidate_cache
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab_variants
    FOR EACH STATEMENT EXECUTE FUNCTION ab_invalidate_cache();

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
COMMENT ON FUNCTION ab_analyze(text) IS 'Per metric and variant: per-user statistics and Welch''s test against the control; stored in ab_insights.';
COMMENT ON FUNCTION ab_analyze(bigint) IS 'ab_analyze by experiment id.';
COMMENT ON FUNCTION ab_summary(text) IS 'A plain-words report of the experiment and its recommendation.';
COMMENT ON FUNCTION ab_summary(bigint) IS 'ab_summary by experiment id.';
COMMENT ON FUNCTION ab_welch_test(bigint, double precision, double precision, bigint, double precision, double precision, double precision) IS 'Welch''s two-sample t-test from summary statistics (diff = b - a), as scipy.stats.ttest_ind_from_stats(equal_var=False).';
COMMENT ON FUNCTION ab_invalidate_cache() IS 'Trigger: tells every backend to reload its cache of experiment definitions.';
COMMENT ON FUNCTION ab_record_covariate(text, text, text, double precision) IS 'Records (or replaces) a user''s pre-experiment covariate for a metric; ab_analyze then reports CUPED estimates.';
COMMENT ON FUNCTION ab_record_covariate(bigint, text, text, double precision) IS 'ab_record_covariate by experiment id.';
COMMENT ON FUNCTION ab_proportion_test(bigint, bigint, bigint, bigint, double precision) IS 'Two-proportion z-test (pooled z, unpooled Wald CI of diff = b - a), as statsmodels proportions_ztest.';
COMMENT ON FUNCTION ab_srm_test(bigint[], double precision[]) IS 'Sample ratio mismatch: chi-square goodness of fit of observed counts against weights, as scipy.stats.chisquare.';
COMMENT ON FUNCTION ab_sample_size(double precision, double precision, double precision, double precision) IS 'Users per arm to detect an absolute difference mde (two-sided, equal allocation, normal approximation).';
COMMENT ON FUNCTION ab_adjust_p_values(double precision[], text) IS 'Adjusted p-values: holm (Holm-Bonferroni) or bh (Benjamini-Hochberg), in input order.';
