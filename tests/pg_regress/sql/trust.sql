-- Trust boundaries of metric sources: code that a source relation's owner controls (a view's
-- functions, a cast of its column's type) runs as that owner, never with the privileges of
-- the role running the analysis; what the owner would see and the caller could not is
-- refused; system catalogs are no source; a naive timestamp is read as UTC.
SET TimeZone = 'UTC';
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ab_tr_app', 'ab_tr_admin', 'ab_tr_analyst'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('DROP OWNED BY %I CASCADE', r);
            EXECUTE format('DROP ROLE %I', r);
        END IF;
    END LOOP;
END;
$$;
-- An application that runs its own migrations (owns its schema), an administrator and an
-- analyst, both allowed to read the application's table.
CREATE ROLE ab_tr_app;
CREATE ROLE ab_tr_admin;
CREATE ROLE ab_tr_analyst;
SELECT ab_grant_app('ab_tr_app'), ab_grant_admin('ab_tr_admin'), ab_grant_analyst('ab_tr_analyst');
CREATE SCHEMA app AUTHORIZATION ab_tr_app;
SET ROLE ab_tr_app;
CREATE TABLE app.conv (user_id text, at timestamptz, amount numeric);
-- What the application's code saw (who ran it, and what it managed to do) it says in a
-- NOTICE, once per read: a read is read-only, so it could not store it.
CREATE FUNCTION app.tell(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('app.told', true) IS DISTINCT FROM 'yes' THEN
        PERFORM set_config('app.told', 'yes', false);
        RAISE NOTICE 'ran as %: %', current_user, what;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA app TO ab_tr_admin, ab_tr_analyst;
GRANT SELECT ON app.conv TO ab_tr_admin, ab_tr_analyst;
RESET ROLE;
SELECT ab_create_experiment('{"name": "trust", "experiment_type": "workflow", "primary_metric": "converted", "salt": "trust",
  "metrics": {"converted": {"type": "binary", "window": "1 day",
                            "source": {"relation": "app.conv", "user_column": "user_id", "time_column": "at"}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') > 0 AS created;
SELECT ab_start_experiment('trust');
SELECT count(ab_get_variant('trust', 'u' || g)) AS enrolled FROM generate_series(1, 40) g;
INSERT INTO app.conv SELECT 'u' || g, now() + interval '1 hour', g FROM generate_series(1, 40) g WHERE g % 3 = 0;
SELECT variant, users, mean::numeric(6, 4) AS mean FROM ab_analyze('trust') ORDER BY variant;

-- Route A: the application replaces its table by a view whose WHERE runs its own function,
-- which makes the application superuser when run by a superuser and forges an experiment's
-- description when run by a role that may change it.
SET ROLE ab_tr_app;
ALTER TABLE app.conv RENAME TO conv_data;
CREATE FUNCTION app.payload() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    su text := 'not tried';
    forged text;
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        BEGIN
            ALTER ROLE ab_tr_app SUPERUSER;
            su := 'done';
        EXCEPTION WHEN OTHERS THEN su := SQLSTATE;
        END;
    END IF;
    BEGIN
        UPDATE public.ab_experiments SET description = 'forged' WHERE name = 'trust';
        forged := 'done';
    EXCEPTION WHEN OTHERS THEN forged := SQLSTATE;
    END;
    PERFORM app.tell(format('superuser %s, forge %s', su, forged));
    RETURN true;
END;
$$;
CREATE VIEW app.conv AS SELECT * FROM app.conv_data WHERE app.payload();
GRANT SELECT ON app.conv TO ab_tr_admin, ab_tr_analyst;
RESET ROLE;
-- A superuser, an administrator and an analyst run the analysis: the function runs as the
-- application each time, the application stays an ordinary role, nothing is forged, and
-- the answer is the same.
SELECT ab_summary('trust') LIKE '%converted%' AS summary;
SELECT variant, users, mean::numeric(6, 4) AS mean FROM ab_analyze('trust') ORDER BY variant;
SET ROLE ab_tr_admin;
SELECT variant, users, mean::numeric(6, 4) AS mean FROM ab_analyze('trust') ORDER BY variant;
SELECT count(*) AS timeline_rows FROM ab_timeline('trust');
RESET ROLE;
SET ROLE ab_tr_analyst;
SELECT variant, users, mean::numeric(6, 4) AS mean FROM ab_analyze('trust') ORDER BY variant;
RESET ROLE;
SELECT rolsuper AS app_is_superuser FROM pg_roles WHERE rolname = 'ab_tr_app';
SELECT description AS not_forged FROM ab_experiments WHERE name = 'trust';
-- A plain SET made by the owner's code does not outlive the read.
SET ROLE ab_tr_app;
CREATE OR REPLACE FUNCTION app.payload() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('search_path', 'app, pg_catalog', false);
    RETURN true;
END;
$$;
RESET ROLE;
SELECT count(*) AS rows FROM ab_analyze('trust');
SHOW search_path;

-- Route B: the application changes its user column to a composite type of its own with a
-- cast to text; the cast runs as the application.
SET ROLE ab_tr_app;
CREATE TYPE app.uid AS (v text);
CREATE FUNCTION app.uid_text(app.uid) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM app.tell('cast');
    RETURN $1.v;
END;
$$;
CREATE CAST (app.uid AS text) WITH FUNCTION app.uid_text(app.uid);
CREATE TABLE app.conv_typed (user_id app.uid, at timestamptz);
INSERT INTO app.conv_typed SELECT ROW(user_id)::app.uid, at FROM app.conv_data;
GRANT SELECT ON app.conv_typed TO ab_tr_admin, ab_tr_analyst;
RESET ROLE;
SELECT ab_create_experiment('{"name": "trust typed", "experiment_type": "workflow", "primary_metric": "converted", "salt": "trust",
  "metrics": {"converted": {"type": "binary", "window": "1 day",
                            "source": {"relation": "app.conv_typed", "user_column": "user_id", "time_column": "at"}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS typed \gset
INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at)
SELECT :typed, a.user_id, v2.id, a.assigned_at FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
JOIN ab_variants v2 ON v2.experiment_id = :typed AND v2.name = v.name
WHERE a.experiment_id = (SELECT id FROM ab_experiments WHERE name = 'trust');
SELECT variant, users, mean::numeric(6, 4) AS mean FROM ab_analyze('trust typed') ORDER BY variant;

-- What a relation is built on counts too: a superuser's view over the application's table
-- would run the application's cast with the analyst's privileges (read as the analyst) or a
-- superuser's (read as the view's owner), so it is refused; owned by the application, the
-- same view is read as the application.
CREATE VIEW public.typed_report AS SELECT * FROM app.conv_typed;
GRANT SELECT ON public.typed_report TO ab_tr_analyst, ab_tr_admin;
SET ROLE ab_tr_admin;
SELECT expect_error($$SELECT ab_create_metric_source('report', '{"relation": "public.typed_report", "user_column": "user_id", "time_column": "at"}')$$);
RESET ROLE;
ALTER VIEW public.typed_report OWNER TO ab_tr_app;
SET ROLE ab_tr_admin;
SELECT ab_create_metric_source('report', '{"relation": "public.typed_report", "user_column": "user_id", "time_column": "at"}');
SELECT ab_drop_metric_source('report');
RESET ROLE;
DROP VIEW public.typed_report;

-- A relation owned by the caller itself, or by a role whose privileges the caller's owner
-- holds, is read as the caller (the application analysing its own table).
GRANT ab_tr_analyst TO ab_tr_app;
SET ROLE ab_tr_analyst;
SELECT variant, users FROM ab_analyze('trust typed') ORDER BY variant;
RESET ROLE;
REVOKE ab_tr_analyst FROM ab_tr_app;

-- Row-level security: read as the owner, the policies that bind the analyst would not
-- apply, so the analysis refuses (a superuser, who bypasses them, may read it).
SET ROLE ab_tr_app;
CREATE TABLE app.private (user_id text, at timestamptz);
INSERT INTO app.private SELECT user_id, at FROM app.conv_data;
ALTER TABLE app.private ENABLE ROW LEVEL SECURITY;
CREATE POLICY partial ON app.private TO ab_tr_analyst, ab_tr_admin USING (user_id LIKE 'u1%');
GRANT SELECT ON app.private TO ab_tr_admin, ab_tr_analyst;
-- A view that runs as its caller (security_invoker) would check its tables against the owner.
CREATE VIEW app.invoker WITH (security_invoker) AS SELECT * FROM app.conv_data;
GRANT SELECT ON app.invoker TO ab_tr_admin, ab_tr_analyst;
RESET ROLE;
SELECT ab_create_experiment('{"name": "trust rls", "experiment_type": "workflow", "primary_metric": "converted", "salt": "trust",
  "metrics": {"converted": {"type": "binary", "window": "1 day",
                            "source": {"relation": "app.private", "user_column": "user_id", "time_column": "at"}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS rls \gset
INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at)
SELECT :rls, a.user_id, v2.id, a.assigned_at FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
JOIN ab_variants v2 ON v2.experiment_id = :rls AND v2.name = v.name
WHERE a.experiment_id = (SELECT id FROM ab_experiments WHERE name = 'trust');
SELECT variant, users, mean::numeric(6, 4) AS mean FROM ab_analyze('trust rls') ORDER BY variant;
SET ROLE ab_tr_analyst;
SELECT expect_error($$SELECT count(*) FROM ab_analyze('trust rls')$$);
SELECT expect_error($$SELECT ab_summary('trust rls')$$);
SELECT expect_error($$SELECT count(*) FROM ab_timeline('trust rls')$$);
RESET ROLE;
-- The message and its hint, in full.
SET ROLE ab_tr_admin;
SELECT ab_create_metric_source('private', '{"relation": "app.private", "user_column": "user_id", "time_column": "at"}');
SELECT expect_error($$SELECT ab_create_metric_source('invoker', '{"relation": "app.invoker", "user_column": "user_id", "time_column": "at"}')$$);
-- A foreign table would be read through its owner's user mapping.
RESET ROLE;
CREATE FOREIGN DATA WRAPPER ab_tr_fdw;
CREATE SERVER ab_tr_server FOREIGN DATA WRAPPER ab_tr_fdw;
CREATE FOREIGN TABLE app.remote (user_id text, at timestamptz) SERVER ab_tr_server;
ALTER FOREIGN TABLE app.remote OWNER TO ab_tr_app;
GRANT SELECT ON app.remote TO ab_tr_admin;
SET ROLE ab_tr_admin;
SELECT expect_error($$SELECT ab_create_metric_source('remote', '{"relation": "app.remote", "user_column": "user_id", "time_column": "at"}')$$);
-- Without SELECT on a column the source reads, nothing is read as the owner either; with
-- SELECT on the columns it reads, the source is registered (and planned as the owner).
RESET ROLE;
SET ROLE ab_tr_app;
REVOKE SELECT ON app.conv_data FROM ab_tr_admin;
GRANT SELECT (user_id, at) ON app.conv_data TO ab_tr_admin;
RESET ROLE;
SET ROLE ab_tr_admin;
SELECT ab_create_metric_source('conversions', '{"relation": "app.conv_data", "user_column": "user_id", "time_column": "at"}');
SELECT expect_error($$SELECT ab_create_metric_source('amounts', '{"relation": "app.conv_data", "user_column": "user_id", "time_column": "at", "value_column": "amount"}')$$);
SELECT count(*) AS registered FROM ab_metric_sources WHERE name IN ('private', 'invoker', 'amounts', 'conversions');
SELECT ab_drop_metric_source('conversions');
RESET ROLE;

-- System catalogs and the extension's own tables are no source, for anyone.
SELECT expect_error($$SELECT ab_create_metric_source('passwords', '{"relation": "pg_catalog.pg_authid", "user_column": "rolname", "time_column": "rolvaliduntil", "filter": {"rolpassword": {">=": "SCRAM"}}}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('schema', '{"relation": "information_schema.tables", "user_column": "table_name", "time_column": "table_name"}')$$);
SELECT expect_error($$SELECT ab_create_metric_source('own', '{"relation": "public.ab_results", "user_column": "user_id", "time_column": "recorded_at"}')$$);
SELECT expect_error($$SELECT ab_create_experiment('{"name": "oracle", "experiment_type": "workflow", "primary_metric": "m",
  "metrics": {"m": {"type": "binary", "source": {"relation": "pg_catalog.pg_authid", "user_column": "rolname", "time_column": "rolvaliduntil"}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}')$$);
SELECT count(*) AS created FROM ab_experiments WHERE name = 'oracle';

-- A timestamp without time zone is read as UTC, whatever the session's time zone.
CREATE TABLE public.trust_naive (user_id text, at timestamp);
-- At the last enrollment (an hour after it would fall on tomorrow in some zones late in the
-- day, after the timeline's last day).
INSERT INTO public.trust_naive SELECT 'u' || g, (SELECT max(assigned_at) FROM ab_assignments) AT TIME ZONE 'UTC'
FROM generate_series(1, 40) g WHERE g % 3 = 0;
SELECT ab_create_experiment('{"name": "trust naive", "experiment_type": "workflow", "primary_metric": "converted", "salt": "trust",
  "metrics": {"converted": {"type": "binary", "window": "1 day",
                            "source": {"relation": "public.trust_naive", "user_column": "user_id", "time_column": "at"}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS naive \gset
INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at)
SELECT :naive, a.user_id, v2.id, a.assigned_at FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
JOIN ab_variants v2 ON v2.experiment_id = :naive AND v2.name = v.name
WHERE a.experiment_id = (SELECT id FROM ab_experiments WHERE name = 'trust');
SELECT variant, users, mean::numeric(6, 4) AS utc FROM ab_analyze('trust naive') ORDER BY variant;
SET TimeZone = 'Australia/Lord_Howe';
SELECT variant, users, mean::numeric(6, 4) AS lord_howe FROM ab_analyze('trust naive') ORDER BY variant;
SET TimeZone = 'America/Los_Angeles';
SELECT variant, users, mean::numeric(6, 4) AS los_angeles FROM ab_analyze('trust naive') ORDER BY variant;
SELECT sum(n) AS timeline_conversions FROM (SELECT DISTINCT day, variant, (users * mean)::int AS n FROM ab_timeline('trust naive')
  WHERE day = (SELECT max(day) FROM ab_timeline('trust naive'))) t;
SET TimeZone = 'UTC';

-- Read as the owner or as the caller, every kind of metric gives the same analysis,
-- timeline and breakdown: the same rows in a table the application owns (read as the
-- application for the administrator) and in one the superuser owns (read as the caller).
SET ROLE ab_tr_app;
CREATE TABLE app.loans (borrower text, at timestamptz, amount numeric);
GRANT SELECT ON app.loans TO ab_tr_admin;
RESET ROLE;
CREATE TABLE public.trusted_loans (borrower text, at timestamptz, amount numeric);
GRANT SELECT ON public.trusted_loans TO ab_tr_admin;
CREATE FUNCTION pg_temp.definition(name text, relation text) RETURNS jsonb LANGUAGE sql AS $$
SELECT jsonb_build_object('name', name, 'experiment_type', 'workflow', 'primary_metric', 'funded', 'salt', 'eq',
  'breakdowns', jsonb_build_array('branch'),
  'metrics', jsonb_build_object(
     'funded', jsonb_build_object('type', 'binary', 'window', '14 days', 'covariate', jsonb_build_object('lookback', '30 days'),
                                  'source', jsonb_build_object('relation', relation, 'user_column', 'borrower', 'time_column', 'at',
                                                               'filter', jsonb_build_object('amount', jsonb_build_object('>', 1350)))),
     'amount', jsonb_build_object('aggregation', 'sum', 'window', '14 days', 'cap', jsonb_build_object('percentile', 0.9),
                                  'source', jsonb_build_object('relation', relation, 'user_column', 'borrower', 'time_column', 'at',
                                                               'value_column', 'amount')),
     'applications', jsonb_build_object('aggregation', 'count',
                                  'source', jsonb_build_object('relation', relation, 'user_column', 'borrower', 'time_column', 'at')),
     'per_application', jsonb_build_object('type', 'ratio', 'numerator', 'amount', 'denominator', 'applications'),
     'median', jsonb_build_object('type', 'quantile', 'of', 'amount', 'quantile', 0.5),
     'p90_loan', jsonb_build_object('type', 'quantile', 'of', 'amount', 'quantile', 0.9, 'level', 'event')),
  'variants', jsonb_build_array(jsonb_build_object('name', 'control', 'is_control', true, 'traffic_allocation', 50),
                                jsonb_build_object('name', 'new', 'traffic_allocation', 50)))
$$;
SELECT ab_create_experiment(pg_temp.definition('eq owner', 'app.loans')) AS eq_owner \gset
SELECT ab_create_experiment(pg_temp.definition('eq caller', 'public.trusted_loans')) AS eq_caller \gset
SELECT ab_start_experiment('eq owner');
SELECT count(ab_get_variant('eq owner', 'b' || g, jsonb_build_object('branch', CASE WHEN g % 3 = 0 THEN 'online' ELSE 'office' END)))
  AS enrolled FROM generate_series(1, 300) g;
UPDATE ab_assignments SET assigned_at = '2026-03-01 00:00:00+00'::timestamptz + substr(user_id, 2)::int * interval '7 minutes'
WHERE experiment_id = :eq_owner;
INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at, attributes)
SELECT :eq_caller, a.user_id, v2.id, a.assigned_at, a.attributes FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
JOIN ab_variants v2 ON v2.experiment_id = :eq_caller AND v2.name = v.name WHERE a.experiment_id = :eq_owner;
INSERT INTO public.trusted_loans
SELECT a.user_id, a.assigned_at + (g % 5 - 2) * interval '4 days', 1000 + (substr(a.user_id, 2)::int * 37 + g * 11) % 500
       + CASE v.name WHEN 'new' THEN 60 ELSE 0 END
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id, generate_series(1, 4) g
WHERE a.experiment_id = :eq_owner AND (substr(a.user_id, 2)::int + g) % 3 <> 0;
INSERT INTO app.loans SELECT * FROM public.trusted_loans;
SET ROLE ab_tr_admin;
CREATE TEMP TABLE eq AS
SELECT 'analyze' AS what, e AS experiment, metric_name, variant, NULL::text AS at, users, round(mean::numeric, 6) AS mean,
       round(diff::numeric, 6) AS diff, round(p_value::numeric, 6) AS p, round(cuped_diff::numeric, 6) AS cuped
FROM unnest(ARRAY['eq owner', 'eq caller']) e, ab_analyze(e)
UNION ALL
SELECT 'bayes', e, metric_name, variant, NULL, NULL, NULL, NULL, round(chance_to_beat_control::numeric, 2), NULL
FROM unnest(ARRAY['eq owner', 'eq caller']) e, ab_bayes(e)
UNION ALL
SELECT 'timeline', e, metric_name, variant, day::text, users, round(mean::numeric, 6), round(diff::numeric, 6), round(p_value::numeric, 6), NULL
FROM unnest(ARRAY['eq owner', 'eq caller']) e, ab_timeline(e)
UNION ALL
SELECT 'breakdown', e, metric_name, variant, value, users, round(mean::numeric, 6), round(diff::numeric, 6), round(p_value::numeric, 6), NULL
FROM unnest(ARRAY['eq owner', 'eq caller']) e, ab_breakdown(e, 'branch');
RESET ROLE;
SELECT what, count(*) FILTER (WHERE experiment = 'eq owner') AS rows,
       count(*) FILTER (WHERE experiment = 'eq owner' AND mean IS NOT NULL) AS with_mean
FROM eq GROUP BY what ORDER BY what;
-- No row of one is missing from the other.
SELECT what, metric_name, variant, at FROM (
  (SELECT what, metric_name, variant, at, users, mean, diff, p, cuped FROM eq WHERE experiment = 'eq owner'
   EXCEPT SELECT what, metric_name, variant, at, users, mean, diff, p, cuped FROM eq WHERE experiment = 'eq caller')
  UNION ALL
  (SELECT what, metric_name, variant, at, users, mean, diff, p, cuped FROM eq WHERE experiment = 'eq caller'
   EXCEPT SELECT what, metric_name, variant, at, users, mean, diff, p, cuped FROM eq WHERE experiment = 'eq owner')) d;
SELECT metric_name, variant, users, mean, cuped IS NOT NULL AS cuped FROM eq WHERE what = 'analyze' AND experiment = 'eq owner'
ORDER BY 1, 2;
SELECT ab_stop_experiment('eq owner') ->> 'status' AS status;
DROP TABLE public.trusted_loans;

-- A stored analysis shows what its sources hold: its rows are shown by ab_latest_insights
-- and ab_insight_history only to roles that may read those sources (or that hold the
-- privileges of the role that ran it). The administrator may not read the salaries, the
-- analyst may; the analyst's stored analysis stays out of the administrator's views.
SET ROLE ab_tr_app;
CREATE TABLE app.salaries (user_id text, at timestamptz, salary numeric);
INSERT INTO app.salaries VALUES ('u3', now() + interval '1 hour', 123456);
GRANT SELECT ON app.salaries TO ab_tr_analyst;
RESET ROLE;
SET ROLE ab_tr_admin;
SELECT expect_error($$SELECT ab_create_experiment('{"name": "salary", "experiment_type": "workflow", "primary_metric": "pay",
  "metrics": {"pay": {"aggregation": "sum", "source": {"relation": "app.salaries", "user_column": "user_id", "time_column": "at", "value_column": "salary"}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}')$$);
RESET ROLE;
SELECT ab_create_experiment('{"name": "salary", "experiment_type": "workflow", "primary_metric": "pay",
  "metrics": {"pay": {"aggregation": "sum", "source": {"relation": "app.salaries", "user_column": "user_id", "time_column": "at", "value_column": "salary"}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS salary \gset
INSERT INTO ab_assignments (experiment_id, user_id, variant_id, assigned_at)
SELECT :salary, 'u3', min(id), now() FROM ab_variants WHERE experiment_id = :salary;
SET ROLE ab_tr_analyst;
SELECT variant, users, mean FROM ab_analyze('salary') WHERE users > 0;
SELECT experiment, variant, mean, computed_by, source_reads FROM ab_latest_insights WHERE experiment = 'salary' AND users > 0;
RESET ROLE;
SET ROLE ab_tr_admin;
SELECT count(*) AS admin_latest FROM ab_latest_insights WHERE experiment = 'salary';
SELECT count(*) AS admin_history FROM ab_insight_history WHERE experiment = 'salary';
-- Analyses without sources are shown as before.
SELECT count(*) > 0 AS admin_sees_others FROM ab_insight_history WHERE experiment <> 'salary';
-- The table itself says which rows exist, not what they hold.
SELECT count(*) AS rows_exist FROM ab_insights WHERE experiment_id = :salary;
SELECT expect_error($$SELECT mean FROM ab_insights$$);
SELECT expect_error($$SELECT * FROM ab_insights$$);
RESET ROLE;
-- A role holding the analyst's privileges sees what the analyst computed.
GRANT ab_tr_analyst TO ab_tr_admin;
SET ROLE ab_tr_admin;
SELECT count(*) AS admin_as_member FROM ab_latest_insights WHERE experiment = 'salary';
RESET ROLE;
REVOKE ab_tr_analyst FROM ab_tr_admin;
SELECT count(*) AS superuser_latest FROM ab_latest_insights WHERE experiment = 'salary';

-- A bandit's posteriors: ab_get_experiment shows the allocation history only to roles that
-- may read ab_allocations.
SET ROLE ab_tr_app;
SELECT ab_get_experiment('trust') ? 'allocation_history' AS app_sees_history;
RESET ROLE;
SET ROLE ab_tr_analyst;
SELECT ab_get_experiment('trust') ? 'allocation_history' AS analyst_sees_history;
RESET ROLE;

-- PUBLIC may execute exactly these functions (the pure statistics), nothing else.
SELECT p.oid::regprocedure::text AS public_function
FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ab_testing') AND d.classid = 'pg_proc'::regclass
  AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))
ORDER BY 1;
-- ab_experiment_health's readers may still run it.
SET ROLE ab_tr_analyst;
SELECT count(*) >= 1 AS health FROM ab_experiment_health;
RESET ROLE;

-- Later files see none of this.
SELECT ab_stop_experiment('trust') ->> 'status' AS status;
SELECT count(ab_delete_experiment(name)) AS deleted FROM ab_experiments WHERE name LIKE 'trust%' OR name LIKE 'eq %' OR name = 'salary';
DROP TABLE public.trust_naive;
DROP SCHEMA app CASCADE;
DROP SERVER ab_tr_server;
DROP FOREIGN DATA WRAPPER ab_tr_fdw;
DROP OWNED BY ab_tr_app, ab_tr_admin, ab_tr_analyst;
DROP ROLE ab_tr_app, ab_tr_admin, ab_tr_analyst;
RESET TimeZone;
