-- What dashboards read: experiment health, the latest insights, and the SVG forest plot.
SELECT ab_create_experiment('{"name": "dash", "experiment_type": "ui", "primary_metric": "clicks",
  "salt": "dash", "min_sample_size": 100, "metrics": {"clicks": {}, "latency": {"direction": "lower"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 60},
               {"name": "b <new>", "traffic_allocation": 20},
               {"name": "c", "traffic_allocation": 20}]}') AS e \gset
SELECT name, status, users_assigned, users_per_variant, srm_p_value, days_running, sample_progress
FROM ab_experiment_health WHERE id = :e;
SELECT ab_start_experiment(:e);
SELECT count(*) FILTER (WHERE ab_record_result(:e, 'clicks', CASE v ->> 'variant' WHEN 'a' THEN g % 3 ELSE g % 3 + 1 END, 'u' || g)
                          AND ab_record_result(:e, 'latency', 100 + g % 7, 'u' || g)) AS recorded
FROM (SELECT g, ab_get_variant(:e, 'u' || g) AS v FROM generate_series(1, 600) g) s;
SELECT name, status, users_assigned, users_per_variant, round(srm_p_value::numeric, 4) AS srm,
       days_running < 1 AS started_today, round(sample_progress::numeric, 2) AS progress
FROM ab_experiment_health WHERE id = :e;

SELECT count(*) FROM ab_analyze(:e);
SELECT count(*) FROM ab_analyze(:e);
SELECT experiment, metric_name, variant, users, round(diff::numeric, 4) AS diff, significant
FROM ab_latest_insights WHERE experiment_id = :e ORDER BY metric_name, variant;

-- The plot: one panel per metric, one row per treatment, names escaped.
SELECT left(ab_plot(:e), 4) AS starts, right(ab_plot(:e), 7) AS ends,
       (length(ab_plot(:e)) - length(replace(ab_plot(:e), '<circle', ''))) / length('<circle') AS points,
       position('b &lt;new&gt;' IN ab_plot(:e)) > 0 AS escaped,
       position('(lower is better' IN ab_plot(:e)) > 0 AS direction_shown;
SELECT expect_error($$SELECT ab_plot('no such experiment')$$);
SELECT ab_stop_experiment(:e);
SELECT ab_delete_experiment(:e);
