-- ab_record_results: a batch of results in one statement, with ab_record_result's checks on
-- every row; a bad row fails the whole batch and names its position.
CREATE TABLE bulk_signups (user_id text, at timestamptz);
-- Later files derive data from result ids: the sequence is put back at the end.
SELECT last_value AS seq_last, is_called AS seq_called FROM ab_results_id_seq \gset
SELECT ab_create_experiment('{"name": "bulk", "experiment_type": "prompt", "primary_metric": "converted",
  "salt": "bulk-salt", "min_sample_size": 2,
  "metrics": {"converted": {"type": "binary"}, "revenue": {}, "items": {"aggregation": "sum"},
              "per_item": {"type": "ratio", "numerator": "items", "denominator": "converted"},
              "p90": {"type": "quantile", "of": "revenue", "quantile": 0.9},
              "signed_up": {"type": "binary", "source": {"relation": "public.bulk_signups", "user_column": "user_id", "time_column": "at"}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS e \gset
SELECT ab_start_experiment('bulk');
SELECT count(ab_get_variant('bulk', 'u' || g)) AS assigned FROM generate_series(1, 6) g;

-- Rows of users without an assignment are skipped: the count says what was recorded.
SELECT ab_record_results('bulk', ARRAY['converted', 'revenue', 'revenue', 'revenue', 'converted'],
                         ARRAY[1, 2.5, 4, 8, 0], ARRAY['u1', 'u1', 'u1', 'nobody', 'u2']) AS recorded;
-- By id, with sessions and the events' own times (between the assignment and now).
SELECT ab_record_results(:e, ARRAY['items', 'items'], ARRAY[3, 1], ARRAY['u2', 'u3'], ARRAY['s1', NULL],
                         ARRAY[(SELECT assigned_at FROM ab_assignments WHERE experiment_id = :e AND user_id = 'u2'), NULL]) AS recorded;
SELECT ab_record_results('bulk', '{}', '{}', '{}') AS empty_batch;
SELECT user_id, metric_name, metric_value, session_id,
       recorded_at = (SELECT assigned_at FROM ab_assignments a WHERE a.experiment_id = :e AND a.user_id = r.user_id) AS at_assignment
FROM ab_results r WHERE experiment_id = :e ORDER BY user_id, metric_name, metric_value;
-- The per-user state is what ab_rebuild_user_metrics recomputes from the results.
CREATE TEMP TABLE kept AS SELECT * FROM ab_user_metrics WHERE experiment_id = :e;
SELECT user_id, metric_name, n, total, max FROM kept ORDER BY user_id, metric_name;
-- A batch adds to the state that single results left.
SELECT ab_record_result('bulk', 'revenue', 1, 'u1');
SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue'], ARRAY[16, 0.5], ARRAY['u1', 'u1']) AS recorded;
SELECT n, total, max FROM ab_user_metrics WHERE experiment_id = :e AND user_id = 'u1' AND metric_name = 'revenue';
DROP TABLE kept;
CREATE TEMP TABLE kept AS SELECT * FROM ab_user_metrics WHERE experiment_id = :e;
SELECT ab_rebuild_user_metrics('bulk') AS rebuilt;
SELECT count(*) AS differences FROM (
  (SELECT * FROM kept EXCEPT SELECT * FROM ab_user_metrics WHERE experiment_id = :e)
  UNION ALL
  (SELECT * FROM ab_user_metrics WHERE experiment_id = :e EXCEPT SELECT * FROM kept)) d;

-- Every error names the bad row; nothing of a failed batch is recorded.
SELECT count(*) AS results_before FROM ab_results WHERE experiment_id = :e \gset
SELECT expect_error($$SELECT ab_record_results('bulk', NULL, ARRAY[1], ARRAY['u1'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue'], NULL, ARRAY['u1'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue'], ARRAY[1], NULL)$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue'], ARRAY[1], ARRAY['u1', 'u2'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue'], ARRAY[1], ARRAY['u1'], ARRAY['s1', 's2'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue'], ARRAY[1], ARRAY['u1'], NULL, ARRAY[now(), now()])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', NULL], ARRAY[1, 2], ARRAY['u1', 'u2'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue'], ARRAY[1, NULL], ARRAY['u1', 'u2'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue'], ARRAY[1, 2], ARRAY['u1', NULL])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', ' '], ARRAY[1, 2], ARRAY['u1', 'u2'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue', 'revenue'], ARRAY[1, 2, 'NaN']::float8[], ARRAY['u1', 'u2', 'u3'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue'], ARRAY[1, 1e16], ARRAY['u1', 'u2'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue'], ARRAY[1, 2], ARRAY['u1', ''])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue'], ARRAY[1, 2], ARRAY['u1', 'u2'], ARRAY[NULL, repeat('s', 513)])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revnue'], ARRAY[1, 2], ARRAY['u1', 'u2'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue', 'per_item'], ARRAY[1, 2, 3], ARRAY['u1', 'u2', 'u3'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'p90'], ARRAY[1, 3], ARRAY['u1', 'u2'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'signed_up'], ARRAY[1, 1], ARRAY['u1', 'u2'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['converted', 'revenue', 'converted'], ARRAY[1, 7, 0.5], ARRAY['u1', 'u2', 'u3'])$$);
-- recorded_at: not in the future (any row), not before the user's assignment.
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue'], ARRAY[1, 2], ARRAY['u1', 'u2'], NULL, ARRAY[now(), now() - interval '1 day'])$$);
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue', 'revenue', 'revenue'], ARRAY[1, 2, 3], ARRAY['nobody', 'u1', 'u2'], NULL, ARRAY[now() + interval '1 hour', now() + interval '1 hour', NULL])$$);
SELECT expect_error($$SELECT ab_record_results('missing', ARRAY['revenue'], ARRAY[1], ARRAY['u1'])$$);
SELECT expect_error($$SELECT ab_record_results(NULL::text, ARRAY['revenue'], ARRAY[1], ARRAY['u1'])$$);
SELECT count(*) - :results_before AS recorded_by_failed_batches FROM ab_results WHERE experiment_id = :e;
SELECT count(*) AS state_changed_by_failed_batches FROM (
  (SELECT * FROM kept EXCEPT SELECT * FROM ab_user_metrics WHERE experiment_id = :e)
  UNION ALL
  (SELECT * FROM ab_user_metrics WHERE experiment_id = :e EXCEPT SELECT * FROM kept)) d;

-- The bound on distinct metric names holds across the batch, naming the first row of the
-- name past it; the names of a failed batch are not admitted.
SELECT ab_create_experiment('{"name": "bulk-open", "experiment_type": "prompt", "primary_metric": "m1",
  "salt": "bulk-open-salt", "strict_metrics": false,
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS open \gset
SELECT ab_start_experiment('bulk-open');
SELECT ab_get_variant('bulk-open', 'u1') IS NOT NULL AS assigned;
SELECT ab_record_results('bulk-open', array_agg('m' || g), array_agg(1::float8), array_agg('u1'::text)) AS recorded
FROM generate_series(1, 99) g;
SELECT expect_error($$SELECT ab_record_results('bulk-open', ARRAY['m1', 'm100', 'm101'], ARRAY[1, 1, 1], ARRAY['u1', 'u1', 'u1'])$$);
SELECT ab_record_results('bulk-open', ARRAY['m1', 'm100'], ARRAY[1, 1], ARRAY['u1', 'u1']) AS recorded;
SELECT count(DISTINCT metric_name) AS names FROM ab_results WHERE experiment_id = :open;

-- A stopped experiment refuses the batch rather than dropping it.
SELECT ab_stop_experiment('bulk-open') ->> 'status' AS status;
SELECT expect_error($$SELECT ab_record_results('bulk-open', ARRAY['m1'], ARRAY[1], ARRAY['u1'])$$);

-- Who may run it: the application (and so the administrator), not PUBLIC nor the analyst.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ab_bulk_nobody', 'ab_bulk_app', 'ab_bulk_analyst', 'ab_bulk_admin'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('DROP OWNED BY %I', r);
            EXECUTE format('DROP ROLE %I', r);
        END IF;
    END LOOP;
END;
$$;
CREATE ROLE ab_bulk_nobody;
CREATE ROLE ab_bulk_app;
CREATE ROLE ab_bulk_analyst;
CREATE ROLE ab_bulk_admin;
SELECT ab_grant_app('ab_bulk_app'), ab_grant_analyst('ab_bulk_analyst'), ab_grant_admin('ab_bulk_admin');
SELECT r AS role, has_function_privilege(r, 'ab_record_results(text, text[], double precision[], text[], text[], timestamptz[])', 'EXECUTE') AS by_name,
       has_function_privilege(r, 'ab_record_results(bigint, text[], double precision[], text[], text[], timestamptz[])', 'EXECUTE') AS by_id
FROM unnest(ARRAY['ab_bulk_nobody', 'ab_bulk_app', 'ab_bulk_analyst', 'ab_bulk_admin']) r;
SET ROLE ab_bulk_app;
SELECT ab_record_results('bulk', ARRAY['revenue'], ARRAY[1], ARRAY['u4']) AS recorded;
RESET ROLE;
SET ROLE ab_bulk_nobody;
SELECT expect_error($$SELECT ab_record_results('bulk', ARRAY['revenue'], ARRAY[1], ARRAY['u4'])$$);
RESET ROLE;
SELECT ab_revoke_app('ab_bulk_app'), ab_revoke_analyst('ab_bulk_analyst'), ab_revoke_admin('ab_bulk_admin');
SELECT r AS role, has_function_privilege(r, 'ab_record_results(text, text[], double precision[], text[], text[], timestamptz[])', 'EXECUTE') AS by_name
FROM unnest(ARRAY['ab_bulk_app', 'ab_bulk_admin']) r;
DROP OWNED BY ab_bulk_nobody, ab_bulk_app, ab_bulk_analyst, ab_bulk_admin;
DROP ROLE ab_bulk_nobody, ab_bulk_app, ab_bulk_analyst, ab_bulk_admin;
-- In a procedure after COMMIT, now() (the default time) is the new transaction's start, later
-- than the CALL's: a time between the two is in the past and accepted.
CREATE PROCEDURE bulk_after_commit() LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.3);
    COMMIT;
    PERFORM ab_record_results('bulk', ARRAY['revenue', 'revenue'], ARRAY[5, 6], ARRAY['u4', 'u4'], NULL,
                              ARRAY[statement_timestamp() + interval '0.1 second', NULL]);
END;
$$;
CALL bulk_after_commit();
SELECT metric_value, recorded_at < now() AS in_the_past FROM ab_results
WHERE experiment_id = :e AND user_id = 'u4' AND metric_value IN (5, 6) ORDER BY metric_value;
DROP PROCEDURE bulk_after_commit();
SELECT ab_stop_experiment('bulk') ->> 'status' AS status;
SELECT ab_delete_experiment('bulk'), ab_delete_experiment('bulk-open');
DROP TABLE bulk_signups;
SELECT setval('ab_results_id_seq', :seq_last, :'seq_called') IS NOT NULL AS sequence_restored;
