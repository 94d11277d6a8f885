-- Metrics read from the application's own tables (metric sources): registration checked
-- against the catalog, exposure after enrollment within a window, the reads made with the
-- analysing role's privileges and row-level security, and every error with its SQLSTATE.
SET TimeZone = 'UTC';
CREATE SCHEMA crm;
CREATE TABLE crm.loan_applications (
    id          serial PRIMARY KEY,
    borrower_id text NOT NULL,
    applied_at  timestamptz NOT NULL,
    status      text NOT NULL,
    amount      numeric,
    branch      text
);
CREATE VIEW crm.funded_loans AS SELECT * FROM crm.loan_applications WHERE status = 'funded';
-- An administrator registers a source only if it may read the columns the source reads.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ab_src_admin') THEN
        EXECUTE 'DROP OWNED BY ab_src_admin';
        DROP ROLE ab_src_admin;
    END IF;
END;
$$;
CREATE ROLE ab_src_admin;
SELECT ab_grant_admin('ab_src_admin');
SET ROLE ab_src_admin;
SELECT expect_error($$SELECT ab_create_metric_source('by admin', '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "applied_at"}')$$);
RESET ROLE;
GRANT USAGE ON SCHEMA crm TO ab_src_admin;
SET ROLE ab_src_admin;
SELECT expect_error($$SELECT ab_create_metric_source('by admin', '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "applied_at"}')$$);
SELECT expect_error($$SELECT count(*) FROM crm.loan_applications$$);
RESET ROLE;
-- Column privileges on the columns it reads are enough.
GRANT SELECT (borrower_id, applied_at) ON crm.loan_applications TO ab_src_admin;
SET ROLE ab_src_admin;
SELECT ab_create_metric_source('by admin', '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "applied_at"}');
SELECT expect_error($$SELECT ab_create_metric_source('by admin, amounts', '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "applied_at", "value_column": "amount"}')$$);
SELECT name, created_by FROM ab_metric_sources WHERE name = 'by admin';
SELECT ab_drop_metric_source('by admin');
RESET ROLE;
DROP OWNED BY ab_src_admin;
DROP ROLE ab_src_admin;
-- A table whose names need quoting: a quote and a newline in its columns.
CREATE TABLE crm."odd ""names""" ("who
id" bigint, "when" timestamp, "how much" integer);

SELECT ab_create_metric_source('applications',
  '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "applied_at"}');
SELECT ab_create_metric_source('funded amounts',
  '{"relation": "crm.funded_loans", "user_column": "borrower_id", "time_column": "applied_at", "value_column": "amount"}');
SELECT ab_create_metric_source('odd', jsonb_build_object('relation', 'crm."odd ""names"""', 'user_column', E'who\nid',
  'time_column', 'when', 'value_column', 'how much', 'filter', jsonb_build_object('how much', jsonb_build_object('>', 0))));
SELECT name, definition FROM ab_metric_sources ORDER BY name;

-- Registration errors, each with its SQLSTATE, and nothing registered.
SELECT expect_error($$SELECT ab_create_metric_source('x', '{"relation": "loan_applications", "user_column": "borrower_id", "time_column": "applied_at"}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('x', '{"relation": "crm.loans", "user_column": "borrower_id", "time_column": "applied_at"}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('x', '{"relation": "crm.loan_applications_id_seq", "user_column": "borrower_id", "time_column": "applied_at"}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('x', '{"relation": "crm.loan_applications", "user_column": "borrower", "time_column": "applied_at"}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('x', '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "status"}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('x', '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "applied_at", "value_column": "branch"}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('x', '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "applied_at", "filter": {"amount": "lots"}}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('x', '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "applied_at", "filter": {"amount": {"~": "1"}}}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('x', '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "applied_at", "sql": "true"}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('applications', '{"relation": "crm.loan_applications", "user_column": "borrower_id", "time_column": "applied_at"}')$$);
SELECT expect_error($$SELECT ab_create_metric_source(NULL, '{}')$$);
SELECT expect_error($$SELECT ab_create_metric_source(E'bad\u0007', '{}')$$);
SELECT count(*) AS sources FROM ab_metric_sources;

-- A filter value is a literal of the column's type, never SQL: this one matches no row.
SELECT ab_create_experiment($${"name": "injection", "experiment_type": "workflow", "primary_metric": "funded",
  "metrics": {"funded": {"type": "binary", "source": {"relation": "crm.loan_applications", "user_column": "borrower_id",
              "time_column": "applied_at", "filter": {"status": "x' OR 'a' = 'a"}}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}$$) > 0 AS created;

-- The experiment: funded within 14 days (binary, CUPED on the 30 days before), the funded
-- amount (sum), applications (count, no window) and the amount per application (ratio).
SELECT ab_create_experiment('{"name": "fast track", "experiment_type": "workflow", "primary_metric": "funded_14d",
  "salt": "fast-track", "min_sample_size": 20,
  "metrics": {"funded_14d": {"type": "binary", "window": "14 days", "covariate": {"lookback": "30 days"},
                             "source": {"relation": "crm.loan_applications", "user_column": "borrower_id",
                                        "time_column": "applied_at", "filter": {"status": "funded"}}},
              "funded_amount": {"aggregation": "sum", "source": "funded amounts", "window": "14 days"},
              "applications": {"aggregation": "count", "source": "applications"},
              "amount_per_application": {"type": "ratio", "numerator": "funded_amount", "denominator": "applications"}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "fast", "traffic_allocation": 50}]}') AS e \gset
SELECT ab_get_experiment('fast track') -> 'metrics' -> 'funded_amount' AS stored;
SELECT ab_start_experiment('fast track');
SELECT count(*) AS enrolled FROM (SELECT ab_get_variant('fast track', 'b' || g) FROM generate_series(1, 400) g) s;
-- Enrollment times spread over a day, so that rows fall before, inside and after each window.
UPDATE ab_assignments SET assigned_at = '2026-03-01 00:00:00+00'::timestamptz + substr(user_id, 2)::int * interval '3 minutes'
WHERE experiment_id = :e;
CREATE TEMP TABLE arm AS
SELECT a.user_id, substr(a.user_id, 2)::int AS g, v.name AS variant, a.assigned_at
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = :e;
INSERT INTO crm.loan_applications (borrower_id, applied_at, status, amount)
SELECT user_id, assigned_at + interval '2 days', CASE WHEN g % 10 < CASE variant WHEN 'fast' THEN 5 ELSE 3 END THEN 'funded' ELSE 'declined' END,
       200000 + g * 100
FROM arm
UNION ALL -- before enrollment: in CUPED's pre-period only
SELECT user_id, assigned_at - interval '5 days', CASE WHEN g % 10 < 4 THEN 'funded' ELSE 'declined' END, 150000 FROM arm WHERE g % 3 = 0
UNION ALL -- funded after the 14 days: counted by applications only
SELECT user_id, assigned_at + interval '20 days', 'funded', 90000 FROM arm WHERE g % 7 = 0
UNION ALL -- at the moment of enrollment: counts
SELECT user_id, assigned_at, 'funded', 1000 FROM arm WHERE g = 1
UNION ALL -- people never enrolled
SELECT 'walk-in-' || g, '2026-03-02', 'funded', 50000 FROM generate_series(1, 50) g;

-- The figures by hand, from the same rows.
SELECT variant, count(*) AS users,
       avg((EXISTS (SELECT 1 FROM crm.loan_applications l WHERE l.borrower_id = arm.user_id AND l.status = 'funded'
                    AND l.applied_at >= arm.assigned_at AND l.applied_at < arm.assigned_at + interval '14 days'))::int)::numeric(6, 4) AS funded_14d,
       avg((SELECT coalesce(sum(l.amount), 0) FROM crm.loan_applications l WHERE l.borrower_id = arm.user_id AND l.status = 'funded'
            AND l.applied_at >= arm.assigned_at AND l.applied_at < arm.assigned_at + interval '14 days'))::numeric(12, 2) AS funded_amount,
       avg((SELECT count(*) FROM crm.loan_applications l WHERE l.borrower_id = arm.user_id AND l.applied_at >= arm.assigned_at))::numeric(6, 4) AS applications
FROM arm GROUP BY variant ORDER BY variant;
SELECT metric_name, variant, users, mean::numeric(12, 4) AS mean, diff::numeric(12, 4) AS diff, p_value < 0.05 AS significant_alone,
       cuped_diff IS NOT NULL AS cuped, test
FROM ab_analyze('fast track') ORDER BY metric_name, variant;
SELECT ab_summary('fast track') LIKE '%Recommendation: ship "fast"%' AS ships_fast;
SELECT ab_plot('fast track') LIKE '%funded_14d%' AS plotted;
SELECT metric_name, variant, chance_to_beat_control > 0.99 AS likely FROM ab_bayes('fast track') WHERE NOT is_control ORDER BY 1;
SELECT metric_name, variant, users FROM ab_latest_insights WHERE experiment_id = :e AND NOT is_control ORDER BY 1;
-- Sequential mode reads the same rows with always-valid intervals.
SELECT ab_create_experiment('{"name": "fast track, sequential", "experiment_type": "workflow", "primary_metric": "funded_14d",
  "salt": "fast-track", "sequential": true,
  "metrics": {"funded_14d": {"type": "binary", "window": "14 days",
                             "source": {"relation": "crm.loan_applications", "user_column": "borrower_id",
                                        "time_column": "applied_at", "filter": {"status": "funded"}}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "fast", "traffic_allocation": 50}]}') AS s \gset
INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at)
SELECT :s, a.user_id, v2.id, a.assigned_at FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
JOIN ab_variants v2 ON v2.experiment_id = :s AND v2.name = v.name WHERE a.experiment_id = :e;
SELECT variant, users, mean::numeric(6, 4) AS mean, test FROM ab_analyze('fast track, sequential') ORDER BY variant;
-- Once the experiment stops, a metric without a window counts rows up to the stop only.
SELECT ab_create_experiment('{"name": "stopped", "experiment_type": "workflow", "primary_metric": "applications",
  "metrics": {"applications": {"aggregation": "count", "source": "applications"}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "fast", "traffic_allocation": 50}]}') AS st \gset
INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at)
SELECT :st, a.user_id, v2.id, a.assigned_at FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
JOIN ab_variants v2 ON v2.experiment_id = :st AND v2.name = v.name WHERE a.experiment_id = :e;
SELECT variant, mean::numeric(6, 4) AS running FROM ab_analyze('stopped') ORDER BY variant;
SELECT ab_start_experiment('stopped');
SELECT ab_stop_experiment('stopped');
UPDATE ab_experiments SET stopped_at = '2026-03-10' WHERE id = :st;
SELECT variant, mean::numeric(6, 4) AS stopped FROM ab_analyze('stopped') ORDER BY variant;

-- A breakdown of a source metric: each segment of enrolled users on its own.
SELECT ab_create_experiment('{"name": "by branch", "experiment_type": "workflow", "primary_metric": "applications",
  "salt": "by-branch", "breakdowns": ["branch"],
  "metrics": {"applications": {"aggregation": "count", "source": "applications"}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "fast", "traffic_allocation": 50}]}') AS br \gset
SELECT ab_start_experiment('by branch');
SELECT count(ab_get_variant('by branch', 'b' || g, jsonb_build_object('branch', CASE WHEN g % 3 = 0 THEN 'online' ELSE 'office' END)))
       AS enrolled FROM generate_series(1, 400) g;
UPDATE ab_assignments SET assigned_at = '2026-03-01 00:00:00+00'::timestamptz + substr(user_id, 2)::int * interval '3 minutes'
WHERE experiment_id = :br;
SELECT value AS branch, variant, users, mean::numeric(6, 4) AS mean FROM ab_breakdown('by branch', 'branch') ORDER BY 1, 2;
SELECT a.attributes ->> 'branch' AS branch, v.name AS variant, count(*) AS users,
       avg((SELECT count(*) FROM crm.loan_applications l WHERE l.borrower_id = a.user_id AND l.applied_at >= a.assigned_at))::numeric(6, 4) AS by_hand
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = :br GROUP BY 1, 2 ORDER BY 1, 2;

-- Quantiles of a source metric: of the per-user sums, and of every value read.
SELECT ab_create_experiment('{"name": "amount quantiles", "experiment_type": "workflow", "primary_metric": "amount",
  "salt": "fast-track",
  "metrics": {"amount": {"aggregation": "sum", "source": "funded amounts", "window": "14 days"},
              "median_per_user": {"type": "quantile", "of": "amount", "quantile": 0.5},
              "p90_application": {"type": "quantile", "of": "amount", "quantile": 0.9, "level": "event"}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "fast", "traffic_allocation": 50}]}') AS q \gset
INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at)
SELECT :q, a.user_id, v2.id, a.assigned_at FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
JOIN ab_variants v2 ON v2.experiment_id = :q AND v2.name = v.name WHERE a.experiment_id = :e;
CREATE TEMP VIEW funded_in_window AS
SELECT arm.variant, arm.user_id, l.amount::float8 AS amount FROM arm JOIN crm.loan_applications l ON l.borrower_id = arm.user_id
WHERE l.status = 'funded' AND l.applied_at >= arm.assigned_at AND l.applied_at < arm.assigned_at + interval '14 days';
SELECT a.metric_name, a.variant, a.users, a.mean = h.q AS equals_percentile_cont
FROM ab_analyze('amount quantiles') a
JOIN (SELECT 'median_per_user' AS metric_name, variant, percentile_cont(0.5) WITHIN GROUP (ORDER BY total) AS q
      FROM (SELECT variant, user_id, sum(amount) AS total FROM funded_in_window GROUP BY 1, 2) u GROUP BY variant
      UNION ALL
      SELECT 'p90_application', variant, percentile_cont(0.9) WITHIN GROUP (ORDER BY amount) FROM funded_in_window GROUP BY variant) h
  USING (metric_name, variant)
ORDER BY 1, 2;
DROP VIEW funded_in_window;

-- Nothing is recorded under a source metric's name.
SELECT expect_error($$SELECT ab_record_result('fast track', 'funded_14d', 1, 'b1')$$);
-- The timeline: on each day, the source's rows up to its end (in the session's time zone).
SELECT count(DISTINCT day) AS days, min(day) AS first, max(day) AS last, count(DISTINCT metric_name) AS metrics
FROM ab_timeline('fast track');
SELECT day, variant, users, mean::numeric(8, 4) AS mean FROM ab_timeline('fast track', 'funded_14d')
WHERE day IN ('2026-03-01', '2026-03-03') ORDER BY 1, 2;
SELECT variant, avg((EXISTS (SELECT 1 FROM crm.loan_applications l WHERE l.borrower_id = arm.user_id AND l.status = 'funded'
                    AND l.applied_at >= arm.assigned_at AND l.applied_at < arm.assigned_at + interval '14 days'
                    AND l.applied_at::date <= '2026-03-03'))::int)::numeric(8, 4) AS by_hand_on_march_3
FROM arm GROUP BY variant ORDER BY variant;
-- The last day is ab_analyze's comparison (without CUPED); the ratio is left out.
SELECT count(*) AS compared,
       count(*) FILTER (WHERE a.users IS DISTINCT FROM t.users OR abs(a.diff - t.diff) > 1e-9 * abs(a.diff)
                          OR abs(a.p_value - t.p_value) > 1e-9 * a.p_value OR (a.diff IS NULL) <> (t.diff IS NULL)) AS mismatches
FROM ab_analyze('fast track') a
JOIN (SELECT * FROM ab_timeline('fast track') WHERE day = '2026-03-21') t USING (metric_name, variant);
SELECT expect_error($$SELECT * FROM ab_timeline('fast track', 'amount_per_application')$$);

-- Definition errors.
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad", "experiment_type": "workflow", "primary_metric": "m",
  "metrics": {"m": {"aggregation": "sum", "source": "missing"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad", "experiment_type": "workflow", "primary_metric": "m",
  "metrics": {"m": {"aggregation": "sum", "source": "applications"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad", "experiment_type": "workflow", "primary_metric": "m",
  "metrics": {"m": {"type": "binary", "source": "funded amounts"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad", "experiment_type": "workflow", "primary_metric": "m",
  "metrics": {"m": {"aggregation": "count", "window": "14 days"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad", "experiment_type": "workflow", "primary_metric": "m",
  "metrics": {"m": {"aggregation": "count", "source": "applications", "window": "two weeks"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad", "experiment_type": "workflow", "primary_metric": "m",
  "metrics": {"m": {"aggregation": "count", "source": "applications"}, "p": {"type": "quantile", "of": "m", "quantile": 0.5, "level": "event"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad", "experiment_type": "workflow", "primary_metric": "m",
  "allocation": {"mode": "bandit"}, "metrics": {"m": {"aggregation": "count", "source": "applications"}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT count(*) AS experiments FROM ab_experiments WHERE name = 'bad';

-- A source in use cannot be dropped; an unused one can.
SELECT expect_error($$SELECT ab_drop_metric_source('applications')$$);
SELECT ab_drop_metric_source('odd');
SELECT expect_error($$SELECT ab_drop_metric_source('odd')$$);
SELECT expect_error($$SELECT ab_drop_metric_source(NULL)$$);
SELECT expect_error($$SELECT ab_create_metric_source('x', NULL)$$);

-- Values out of the range a metric value may take are refused at analysis, not averaged
-- (beyond what float8 arithmetic can square, PostgreSQL itself refuses the sum).
INSERT INTO crm.loan_applications (borrower_id, applied_at, status, amount)
SELECT user_id, assigned_at + interval '1 day', 'funded', 1e20 FROM arm WHERE g = 2;
SELECT expect_error($$SELECT count(*) FROM ab_analyze('fast track')$$);
UPDATE crm.loan_applications SET amount = 1e300 WHERE amount = 1e20;
SELECT expect_error($$SELECT count(*) FROM ab_analyze('fast track')$$);
DELETE FROM crm.loan_applications WHERE amount = 1e300;

-- The read is a security-restricted operation in a read-only transaction: code in a source
-- cannot create objects, temporary or not, write, or change the role in the analysing session.
CREATE FUNCTION crm.sneaky() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS sneaky_trace (at timestamptz);
    RETURN 1;
END;
$$;
CREATE VIEW crm.sneaky_loans AS SELECT borrower_id, applied_at, crm.sneaky() AS k FROM crm.loan_applications;
SELECT ab_create_experiment('{"name": "sneaky", "experiment_type": "workflow", "primary_metric": "m",
  "metrics": {"m": {"aggregation": "count", "source": {"relation": "crm.sneaky_loans", "user_column": "borrower_id",
                                                      "time_column": "applied_at", "filter": {"k": 1}}}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS sn \gset
INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at)
SELECT :sn, 'b1', id, '2026-03-01' FROM ab_variants WHERE experiment_id = :sn AND name = 'a';
SELECT expect_error($$SELECT count(*) FROM ab_analyze('sneaky')$$);
SELECT count(*) AS traces FROM pg_class WHERE relname = 'sneaky_trace';
SELECT ab_delete_experiment('sneaky');

-- Privileges: the analysis reads the source as the role running it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ab_src_analyst') THEN
        EXECUTE 'DROP OWNED BY ab_src_analyst';
        DROP ROLE ab_src_analyst;
    END IF;
END;
$$;
CREATE ROLE ab_src_analyst;
SELECT ab_grant_analyst('ab_src_analyst');
SET ROLE ab_src_analyst;
SELECT current_user, expect_error($$SELECT count(*) FROM ab_analyze('fast track')$$);
SELECT expect_error($$SELECT ab_summary('fast track')$$);
SELECT expect_error($$SELECT count(*) FROM crm.loan_applications$$);
-- After the failed reads, the session is still the analyst's.
SELECT current_user;
RESET ROLE;
GRANT USAGE ON SCHEMA crm TO ab_src_analyst;
GRANT SELECT ON crm.loan_applications, crm.funded_loans TO ab_src_analyst;
-- Row-level security: the analyst sees the rows of even-numbered borrowers only, and so does
-- the analysis run as the analyst (the view reads as its owner, who sees every row).
ALTER TABLE crm.loan_applications ENABLE ROW LEVEL SECURITY;
CREATE POLICY even ON crm.loan_applications TO ab_src_analyst USING (borrower_id ~ '^b[0-9]*[02468]$');
SET ROLE ab_src_analyst;
SELECT metric_name, variant, users, mean::numeric(12, 4) AS mean FROM ab_analyze('fast track')
WHERE metric_name IN ('funded_14d', 'funded_amount') ORDER BY 1, 2;
RESET ROLE;
SELECT metric_name, variant, users, mean::numeric(12, 4) AS mean FROM ab_analyze('fast track')
WHERE metric_name IN ('funded_14d', 'funded_amount') ORDER BY 1, 2;
-- By hand, as the analyst sees the rows.
SELECT variant, avg((EXISTS (SELECT 1 FROM crm.loan_applications l WHERE l.borrower_id = arm.user_id AND l.status = 'funded'
                    AND l.applied_at >= arm.assigned_at AND l.applied_at < arm.assigned_at + interval '14 days'
                    AND l.borrower_id ~ '^b[0-9]*[02468]$'))::int)::numeric(12, 4) AS funded_14d_seen_by_analyst
FROM arm GROUP BY variant ORDER BY variant;

-- A source whose table changed since: the analysis says what is missing.
ALTER TABLE crm.loan_applications RENAME COLUMN status TO state;
SELECT expect_error($$SELECT count(*) FROM ab_analyze('fast track')$$);
ALTER TABLE crm.loan_applications RENAME COLUMN state TO status;
DROP VIEW crm.funded_loans;
SELECT expect_error($$SELECT count(*) FROM ab_analyze('fast track')$$);

RESET TimeZone;

-- Later files see none of this.
SELECT ab_stop_experiment('fast track') ->> 'status' AS status, ab_stop_experiment('by branch') ->> 'status' AS status;
SELECT count(ab_delete_experiment(name)) AS deleted FROM ab_experiments
WHERE name IN ('injection', 'fast track', 'fast track, sequential', 'stopped', 'by branch', 'amount quantiles');
SELECT ab_drop_metric_source('applications'), ab_drop_metric_source('funded amounts');
DROP OWNED BY ab_src_analyst;
DROP ROLE ab_src_analyst;
DROP SCHEMA crm CASCADE;
