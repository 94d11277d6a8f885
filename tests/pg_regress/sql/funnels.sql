-- Funnel metrics (ordered steps within a window) and retention metrics (active in days
-- [N, M) after enrollment, among the users enrolled long enough ago): ab_funnel,
-- ab_retention, and both as binary metrics in ab_analyze.
SELECT ab_create_experiment('{"name": "loan flow", "experiment_type": "workflow", "primary_metric": "funded",
  "salt": "loan-flow-salt",
  "metrics": {"application_started": {"type": "binary"}, "documents_uploaded": {"type": "binary"},
              "approved": {"type": "binary"}, "funded_loan": {"type": "binary"}, "login": {"aggregation": "count"},
              "funded": {"funnel": {"steps": ["application_started", "documents_uploaded", "approved", "funded_loan"],
                                    "window": "30 days"}},
              "funded_stepwise": {"funnel": {"steps": ["application_started", "documents_uploaded", "approved", "funded_loan"],
                                             "window": "14 days", "from": "previous"}},
              "active_d7_30": {"retention": {"metric": "login", "days": [7, 30]}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "checklist", "traffic_allocation": 50}]}') IS NOT NULL AS created;
SELECT ab_start_experiment('loan flow');
SELECT count(ab_get_variant('loan flow', 'b' || g)) AS users FROM generate_series(1, 420) g;
-- 400 borrowers enrolled on 2024-01-01, 20 just now (too new for the retention metric).
UPDATE ab_assignments SET assigned_at = '2024-01-01 00:00+00'
WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'loan flow') AND substr(user_id, 2)::int <= 400;
CREATE TEMP TABLE borrowers AS
SELECT substr(a.user_id, 2)::int AS g, a.user_id, v.name AS variant, a.assigned_at AS t0
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
WHERE a.experiment_id = (SELECT id FROM ab_experiments WHERE name = 'loan flow');
SELECT variant, count(*) FROM borrowers GROUP BY 1 ORDER BY 1;

-- Each step a fixed share of the previous one's borrowers; the checklist gets more documents
-- uploaded. Documents come on day 2, approvals on day 6, 25 (within 30 days of enrollment but
-- not within 14 of the documents) or 40 (neither), funding 2 days after approval; some loans
-- are funded without an application first (they do not count); logins on days 2, 10 or 31.
CREATE TEMP TABLE events AS
SELECT 'application_started' AS metric, 1.0::float8 AS value, user_id, t0 + interval '1 hour' AS at FROM borrowers WHERE g % 10 < 8 AND g <= 400
UNION ALL SELECT 'documents_uploaded', 1, user_id, t0 + interval '2 days' FROM borrowers
  WHERE g <= 400 AND g % 10 < 8 AND g % 5 < CASE variant WHEN 'checklist' THEN 4 ELSE 3 END
UNION ALL SELECT 'approved', 1, user_id, t0 + (ARRAY[40, 25, 6, 6, 6, 6, 6])[g % 7 + 1] * interval '1 day' FROM borrowers
  WHERE g <= 400 AND g % 10 < 8 AND g % 5 < 3 AND g % 3 < 2
UNION ALL SELECT 'funded_loan', 1, user_id, t0 + ((ARRAY[40, 25, 6, 6, 6, 6, 6])[g % 7 + 1] + 2) * interval '1 day' FROM borrowers
  WHERE g <= 400 AND g % 10 < 8 AND g % 5 < 3 AND g % 3 < 2 AND g % 2 = 0
UNION ALL SELECT 'funded_loan', 1, user_id, t0 + interval '3 days' FROM borrowers WHERE g <= 400 AND g % 10 >= 8 AND g % 4 = 0
UNION ALL SELECT 'login', 1, user_id, t0 + (ARRAY[interval '2 days', interval '10 days', interval '31 days'])[g % 3 + 1]
  FROM borrowers WHERE g % 2 = 1 OR variant = 'checklist' AND g % 4 = 0;
SELECT ab_record_results('loan flow', array_agg(metric ORDER BY user_id, at, metric), array_agg(value ORDER BY user_id, at, metric),
                         array_agg(user_id ORDER BY user_id, at, metric), NULL, array_agg(at ORDER BY user_id, at, metric)) AS recorded
FROM events WHERE at <= now();

SELECT metric_name, step, step_metric, variant, users, round(share::numeric, 4) AS share,
       round(conversion::numeric, 4) AS conversion, round(conversion_diff::numeric, 4) AS diff,
       round(ci_lower::numeric, 4) AS ci_lower, round(ci_upper::numeric, 4) AS ci_upper, round(p_value::numeric, 4) AS p
FROM ab_funnel('loan flow') ORDER BY 1, 2, 4;
-- The same counts of "funded" straight from the events: each step's first time at or after
-- the previous step's, within 30 days of enrollment.
SELECT b.variant, count(s1.t) AS started, count(s2.t) AS uploaded,
       count(s3.t) FILTER (WHERE s3.t <= b.t0 + interval '30 days') AS approved, count(s4.t) AS funded
FROM borrowers b
LEFT JOIN LATERAL (SELECT min(at) AS t FROM events WHERE user_id = b.user_id AND metric = 'application_started' AND at >= b.t0) s1 ON true
LEFT JOIN LATERAL (SELECT min(at) AS t FROM events WHERE user_id = b.user_id AND metric = 'documents_uploaded' AND at >= s1.t) s2 ON true
LEFT JOIN LATERAL (SELECT min(at) AS t FROM events WHERE user_id = b.user_id AND metric = 'approved' AND at >= s2.t) s3 ON true
LEFT JOIN LATERAL (SELECT min(at) AS t FROM events WHERE user_id = b.user_id AND metric = 'funded_loan' AND at >= s3.t
                   AND at <= b.t0 + interval '30 days') s4 ON s3.t <= b.t0 + interval '30 days'
GROUP BY 1 ORDER BY 1;
SELECT metric_name, variant, enrolled, too_new, eligible, active, round(rate::numeric, 4) AS rate,
       round(diff::numeric, 4) AS diff, round(p_value::numeric, 4) AS p
FROM ab_retention('loan flow') ORDER BY 1, 2;
SELECT metric_name, variant, users, round(mean::numeric, 4) AS mean, round(p_value::numeric, 4) AS p
FROM ab_analyze('loan flow') WHERE metric_name IN ('funded', 'funded_stepwise', 'active_d7_30') ORDER BY 1, 2;
SELECT line FROM regexp_split_to_table(ab_summary('loan flow'), E'\n') line
WHERE line ~ '^(funded|funded_stepwise|active_d7_30) ';

-- Nothing is recorded under their names; a timeline of one is refused.
SELECT ab_record_result('loan flow', 'funded', 1, 'b1');
SELECT ab_record_result('loan flow', 'active_d7_30', 1, 'b1');
SELECT * FROM ab_timeline('loan flow', 'funded');

-- Bad definitions are refused, whole.
CREATE FUNCTION pg_temp.define(metric jsonb) RETURNS bigint LANGUAGE sql AS $$
  SELECT ab_create_experiment(jsonb_build_object('name', 'bad funnel', 'experiment_type', 'workflow', 'primary_metric', 'f',
    'metrics', jsonb_build_object('started', '{"type": "binary"}'::jsonb, 'uploaded', '{"type": "binary"}'::jsonb,
                                  'login', '{"aggregation": "count"}'::jsonb, 'f', metric),
    'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb))
$$;
SELECT pg_temp.define('{"funnel": {"steps": ["started"]}}');
SELECT pg_temp.define('{"funnel": {"steps": ["started", "upload"]}}');
SELECT pg_temp.define('{"funnel": {"steps": ["started", "started"]}}');
SELECT pg_temp.define('{"funnel": {"steps": ["started", "uploaded"], "window": "a month"}}');
SELECT pg_temp.define('{"funnel": {"steps": ["started", "uploaded"], "from": "start"}}');
SELECT pg_temp.define('{"funnel": {"steps": ["started", "uploaded"]}, "window": "30 days"}');
SELECT pg_temp.define('{"retention": {"metric": "login", "days": [30, 7]}}');
SELECT pg_temp.define('{"retention": {"metric": "logins", "days": [7, 30]}}');
SELECT count(*) AS bad_experiments FROM ab_experiments WHERE name = 'bad funnel';

-- Stopped, the retention counts users enrolled 30 days before the stop.
SELECT ab_stop_experiment('loan flow') ->> 'status' AS status;
SELECT variant, too_new, eligible, active FROM ab_retention('loan flow') ORDER BY 1;
-- A stop 19 days after the enrollment leaves nobody old enough.
UPDATE ab_experiments SET stopped_at = '2024-01-20 00:00+00' WHERE name = 'loan flow';
SELECT variant, too_new, eligible, active FROM ab_retention('loan flow') ORDER BY 1;
SELECT ab_delete_experiment('loan flow');
