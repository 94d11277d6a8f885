-- Results over time: day d's row is the comparison as it stood at the end of day d (in the
-- session's TimeZone), over the users enrolled by then and what they had recorded by then.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO';
SELECT ab_create_experiment('{"name": "daily", "experiment_type": "prompt", "primary_metric": "resolved",
  "salt": "daily-salt", "min_sample_size": 20, "sequential": true,
  "metrics": {"resolved": {"type": "binary"}, "tokens": {"aggregation": "sum", "direction": "lower"},
              "satisfaction": {}, "conversations": {"aggregation": "count"},
              "tokens_per_conversation": {"type": "ratio", "numerator": "tokens", "denominator": "conversations"}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS e \gset
SELECT ab_start_experiment('daily');
-- Nothing enrolled yet: no days.
SELECT count(*) AS days FROM ab_timeline('daily');
SELECT count(*) AS users FROM (SELECT ab_get_variant('daily', 'u' || g) FROM generate_series(1, 300) g) s;
CREATE TEMP TABLE arm AS
SELECT a.user_id, substr(a.user_id, 2)::int AS g, v.name AS variant
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = :e;
-- Users enroll on days 0, 1 and 3 at 22:00 UTC; each records two or three days later at 02:00.
UPDATE ab_assignments SET assigned_at = '2026-03-02 22:00+00'::timestamptz + (substr(user_id, 2)::int % 3 * 3 / 2 || ' days')::interval
WHERE experiment_id = :e;
SELECT count(*) FILTER (WHERE ok) AS recorded FROM (
  SELECT ab_record_result('daily', 'resolved', (g % 7 < CASE variant WHEN 'control' THEN 3 ELSE 4 END)::int, user_id) AS ok FROM arm
  UNION ALL
  SELECT ab_record_result('daily', 'tokens', 500 + (g * 37) % 200 - CASE variant WHEN 'new' THEN 40 ELSE 0 END, user_id) FROM arm
  UNION ALL
  SELECT ab_record_result('daily', 'conversations', 1, user_id) FROM arm
  UNION ALL
  SELECT ab_record_result('daily', 'satisfaction', 3 + (g % 5) * 0.4, user_id) FROM arm WHERE g % 2 = 0
) s;
UPDATE ab_results r SET recorded_at = a.assigned_at + interval '1 day 4 hours' + (r.id % 2 || ' days')::interval
FROM ab_assignments a WHERE a.experiment_id = :e AND r.experiment_id = :e AND a.user_id = r.user_id;
SELECT ab_rebuild_user_metrics('daily');

SELECT day, metric_name, variant, users, round(mean::numeric, 4) AS mean, round(diff::numeric, 4) AS diff,
       round(ci_lower::numeric, 4) AS ci_lower, round(ci_upper::numeric, 4) AS ci_upper, round(p_value::numeric, 4) AS p,
       significant, test
FROM ab_timeline('daily') ORDER BY metric_name, day, variant;

-- The last day is the analysis of all the data: every column the two share agrees.
SELECT count(*) AS mismatches
FROM ab_analyze('daily') a
JOIN (SELECT * FROM ab_timeline('daily') WHERE day = (SELECT max(day) FROM ab_timeline('daily'))) t USING (metric_name, variant)
WHERE a.users <> t.users OR a.test IS DISTINCT FROM t.test OR a.significant IS DISTINCT FROM t.significant
   OR abs(a.mean - t.mean) > 1e-9 * abs(a.mean) OR abs(a.diff - t.diff) > 1e-9 * abs(a.diff)
   OR abs(a.ci_lower - t.ci_lower) > 1e-9 * abs(a.ci_lower) OR abs(a.ci_upper - t.ci_upper) > 1e-9 * abs(a.ci_upper)
   OR abs(a.p_value - t.p_value) > 1e-9 * a.p_value OR abs(a.p_value_adjusted - t.p_value_adjusted) > 1e-9 * a.p_value_adjusted;
-- Every metric but the ratio, each on every day.
SELECT metric_name, count(DISTINCT day) AS days, min(day) AS first, max(day) AS last
FROM ab_timeline('daily') GROUP BY 1 ORDER BY 1;
-- One metric, by id too.
SELECT count(*) AS rows, count(DISTINCT metric_name) AS metrics FROM ab_timeline(:e, 'tokens');

-- Days are the session's: in New York the 02:00 UTC results fall on the day before.
SET TimeZone = 'America/New_York';
SELECT min(day) AS first, max(day) AS last, count(DISTINCT day) AS days FROM ab_timeline('daily', 'tokens');
SET TimeZone = 'UTC';

-- The line chart: one line and one band per treatment, the first and the last day (in any DateStyle).
SET DateStyle = 'SQL, DMY';
SELECT left(svg, 4) AS starts, svg LIKE '%<polyline%' AS line, svg LIKE '%<polygon%' AS band,
       svg LIKE '%2026-03-02%' AND svg LIKE '%2026-03-08%' AS days, svg LIKE '%on the last day%' AS legend
FROM ab_plot_timeline('daily') svg;
SELECT ab_plot_timeline(:e, 'satisfaction') LIKE '%satisfaction%' AS named;
SET DateStyle = 'ISO';

-- Errors: a metric the experiment does not have, a ratio, a bad name, no experiment.
SELECT expect_error($$SELECT * FROM ab_timeline('daily', 'tokenz')$$);
SELECT expect_error($$SELECT * FROM ab_timeline('daily', 'tokens_per_conversation')$$);
SELECT expect_error($$SELECT ab_plot_timeline('daily', 'tokens_per_conversation')$$);
SELECT expect_error($$SELECT * FROM ab_timeline('daily', ' ')$$);
SELECT expect_error($$SELECT * FROM ab_timeline(NULL::text)$$);
SELECT expect_error($$SELECT * FROM ab_timeline('dayly')$$);
SELECT expect_error($$SELECT ab_plot_timeline(-1::bigint)$$);

-- Analysts may run it (ab_grant_analyst); an application role may not.
CREATE ROLE ab_timeline_reader;
CREATE ROLE ab_timeline_app;
SELECT ab_grant_analyst('ab_timeline_reader');
SELECT ab_grant_app('ab_timeline_app');
SET ROLE ab_timeline_reader;
SELECT count(*) > 0 AS analyst_reads FROM ab_timeline('daily');
SELECT length(ab_plot_timeline('daily')) > 0 AS analyst_plots;
RESET ROLE;
SET ROLE ab_timeline_app;
SELECT expect_error($$SELECT * FROM ab_timeline('daily')$$);
RESET ROLE;
SELECT ab_revoke_analyst('ab_timeline_reader');
SELECT has_function_privilege('ab_timeline_reader', 'ab_timeline(text, text)', 'EXECUTE') AS still_allowed;
SELECT ab_revoke_app('ab_timeline_app');
DROP OWNED BY ab_timeline_reader;
DROP OWNED BY ab_timeline_app;
DROP ROLE ab_timeline_reader;
DROP ROLE ab_timeline_app;

SELECT ab_stop_experiment('daily') ->> 'status' AS status;
SELECT ab_delete_experiment('daily');
RESET TimeZone;
RESET DateStyle;
