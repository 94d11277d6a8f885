-- 0.9.0 -> 0.10.0: results over time, dimension breakdowns and quantile metrics.
-- * ab_timeline (per day, the cumulative comparison with the control) and ab_plot_timeline
--   (its line chart).
-- * ab_experiments.breakdowns (attributes stored at enrollment), ab_assignments.attributes
--   (what each user had of them; NULL for every user enrolled before), ab_breakdown, and
--   ab_get_experiment showing the breakdowns.
-- * Quantile metrics live in ab_experiments.metrics: only the comments change.
-- ab_grant_analyst and ab_revoke_analyst cover the new functions, and every role that may run
-- ab_summary may run them.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.

\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.10.0'" to load this file. \quit

COMMENT ON COLUMN ab_experiments.metrics IS 'Per metric: {"type": continuous|binary|ratio|quantile, "aggregation": mean|sum|count|max per user, "direction": higher|lower is better, "mde", "margin" (a guardrail''s non-inferiority margin), "cap"; a ratio also "numerator" and "denominator"; a quantile "of", "quantile" and "level": user|event}.';
COMMENT ON COLUMN ab_insights.metric_type IS 'continuous, binary, ratio or quantile.';
ALTER TABLE ab_experiments ADD COLUMN breakdowns text[] NOT NULL DEFAULT '{}' CHECK (cardinality(breakdowns) <= 5);
COMMENT ON COLUMN ab_experiments.breakdowns IS 'Attributes of the users stored with each assignment, to break the analysis down by (ab_breakdown).';
ALTER TABLE ab_assignments ADD COLUMN attributes jsonb CHECK (jsonb_typeof(attributes) = 'object');
COMMENT ON COLUMN ab_assignments.attributes IS 'The attributes listed in the experiment''s breakdowns that the user had at enrollment, as text; NULL when none.';

CREATE FUNCTION "ab_timeline"(
	"experiment" TEXT, /* Option < & str > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"day" date,  /* Date */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"test" TEXT  /* Option < String > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_timeline_wrapper';
CREATE FUNCTION "ab_timeline"(
	"experiment" bigint, /* Option < i64 > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"day" date,  /* Date */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"test" TEXT  /* Option < String > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_timeline_by_id_wrapper';
CREATE FUNCTION "ab_plot_timeline"(
	"experiment" TEXT, /* Option < & str > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_plot_timeline_wrapper';
CREATE FUNCTION "ab_plot_timeline"(
	"experiment" bigint, /* Option < i64 > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_plot_timeline_by_id_wrapper';
CREATE FUNCTION "ab_breakdown"(
	"experiment" TEXT, /* Option < & str > */
	"attribute" TEXT /* Option < & str > */
) RETURNS TABLE (
	"value" TEXT,  /* Option < String > */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"comparisons" INT  /* i32 */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_breakdown_wrapper';
CREATE FUNCTION "ab_breakdown"(
	"experiment" bigint, /* Option < i64 > */
	"attribute" TEXT /* Option < & str > */
) RETURNS TABLE (
	"value" TEXT,  /* Option < String > */
	"metric_name" TEXT,  /* String */
	"variant" TEXT,  /* String */
	"is_control" bool,  /* bool */
	"users" bigint,  /* i64 */
	"mean" double precision,  /* Option < f64 > */
	"diff" double precision,  /* Option < f64 > */
	"ci_lower" double precision,  /* Option < f64 > */
	"ci_upper" double precision,  /* Option < f64 > */
	"relative_lift" double precision,  /* Option < f64 > */
	"p_value" double precision,  /* Option < f64 > */
	"p_value_adjusted" double precision,  /* Option < f64 > */
	"significant" bool,  /* Option < bool > */
	"comparisons" INT  /* i32 */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_breakdown_by_id_wrapper';
ALTER FUNCTION ab_breakdown(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_breakdown(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_timeline(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_timeline(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot_timeline(text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ab_plot_timeline(bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ab_timeline(text, text), ab_timeline(bigint, text), ab_plot_timeline(text, text),
    ab_plot_timeline(bigint, text), ab_breakdown(text, text), ab_breakdown(bigint, text) FROM PUBLIC;
COMMENT ON FUNCTION ab_timeline(text, text) IS 'Per day since the first enrollment (in the session''s TimeZone), metric and variant: the comparison with the control over the users enrolled and the results recorded by the end of that day (cumulative; without CUPED; ratio and quantile metrics excluded).';
COMMENT ON FUNCTION ab_timeline(bigint, text) IS 'ab_timeline by experiment id.';
COMMENT ON FUNCTION ab_plot_timeline(text, text) IS 'An SVG line chart of each treatment''s cumulative difference from the control on a metric (the primary one by default), day by day, with its CI as a band.';
COMMENT ON FUNCTION ab_plot_timeline(bigint, text) IS 'ab_plot_timeline by experiment id.';
COMMENT ON FUNCTION ab_breakdown(text, text) IS 'Per value of an attribute stored at enrollment (one of the experiment''s breakdowns; NULL: not given), metric and variant: the comparison with the control among those users, p-values adjusted across every segment and treatment of the metric (without CUPED; ratio and quantile metrics excluded).';
COMMENT ON FUNCTION ab_breakdown(bigint, text) IS 'ab_breakdown by experiment id.';
COMMENT ON FUNCTION ab_grant_analyst(name) IS 'Lets a role read every table and view and run ab_analyze, ab_summary, ab_bayes, ab_plot, ab_timeline, ab_plot_timeline and ab_breakdown.';

DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
             WHERE p.oid = '@extschema@.ab_summary(text)'::regprocedure AND a.privilege_type = 'EXECUTE'
               AND a.grantee <> p.proowner LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.ab_timeline(text, text), @extschema@.ab_timeline(bigint, text), '
                                  '@extschema@.ab_plot_timeline(text, text), @extschema@.ab_plot_timeline(bigint, text), '
                                  '@extschema@.ab_breakdown(text, text), @extschema@.ab_breakdown(bigint, text) TO %s', r);
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
                   '@extschema@.ab_allocations, @extschema@.ab_allocation_history '
                   'FROM %I', role);
END;
$$;

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
END;
$$;
ALTER FUNCTION ab_get_experiment(bigint) SECURITY DEFINER;
