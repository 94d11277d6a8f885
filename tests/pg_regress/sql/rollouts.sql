-- Safe rollouts: the new variant's share of new users follows the steps, users keep their
-- variant, a breached guardrail rolls back (every call then returns the control's config),
-- and every decision is in ab_audit.
CREATE FUNCTION rollout_def(name text, allocation jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('name', name, 'experiment_type', 'model', 'primary_metric', 'resolved',
        'salt', 'rollout-salt', 'allocation', allocation,
        'metrics', '{"resolved": {"type": "binary"}, "latency": {"direction": "lower", "margin": 0.5}}'::jsonb,
        'variants', '[{"name": "old", "is_control": true, "traffic_allocation": 50, "config": {"model": "old"}},
                      {"name": "new", "traffic_allocation": 50, "config": {"model": "new"}}]'::jsonb)
$$;

-- Bad rollouts are refused whole (22023), and nothing is written.
SELECT expect_error($$SELECT ab_create_experiment(rollout_def('bad', '{"mode": "rollout", "steps": [10, 5, 100]}'))$$);
SELECT expect_error($$SELECT ab_create_experiment(rollout_def('bad', '{"mode": "rollout", "steps": [10, 50]}'))$$);
SELECT expect_error($$SELECT ab_create_experiment(rollout_def('bad', '{"mode": "rollout", "step_every": "often"}'))$$);
SELECT expect_error($$SELECT ab_create_experiment(rollout_def('bad', '{"mode": "rollout", "min_share": 5}'))$$);
SELECT count(*) AS written FROM ab_experiments WHERE name = 'bad';

-- The variants take the first step's shares, whatever the definition said.
SELECT ab_create_experiment(rollout_def('assistant model', '{"mode": "rollout", "steps": [10, 50, 100], "step_every": "1 second"}')) > 0 AS created;
SELECT name, traffic_allocation FROM ab_variants
WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'assistant model') ORDER BY position;
SELECT allocation FROM ab_experiments WHERE name = 'assistant model';
SELECT ab_start_experiment('assistant model');

-- Step 1: 10% of 2000 new users get the new variant.
CREATE TEMP TABLE step1 AS
SELECT 'u' || g AS user_id, ab_get_variant('assistant model', 'u' || g) ->> 'variant' AS variant
FROM generate_series(1, 2000) g;
SELECT variant, count(*) FROM step1 GROUP BY variant ORDER BY variant;

-- Not due yet: guardrails hold, nothing changes.
SELECT action, step, share, detail -> 'findings' -> 0 ->> 'guardrail' AS guardrail
FROM ab_rollout_check('assistant model');

-- After step_every the check takes the next step; users keep their variant, and among new
-- users the new variant only gains (its range of hash points grows).
SELECT pg_sleep(1.1);
SELECT action, step, share, reason FROM ab_rollout_check('assistant model');
SELECT count(*) FILTER (WHERE ab_get_variant('assistant model', user_id) ->> 'variant' IS DISTINCT FROM variant) AS moved
FROM step1;
CREATE TEMP TABLE step2 AS
SELECT 'v' || g AS user_id, ab_get_variant('assistant model', 'v' || g) ->> 'variant' AS variant
FROM generate_series(1, 2000) g;
SELECT variant, count(*) FROM step2 GROUP BY variant ORDER BY variant;
SELECT period, weights FROM ab_allocations
WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'assistant model') ORDER BY period;

-- The new model is slower by 2 (the margin is 0.5): the next check rolls back.
SELECT count(*) AS recorded FROM (
    SELECT ab_record_result('assistant model', 'latency',
                            CASE WHEN variant = 'new' THEN 3 ELSE 1 END + (hashtext(user_id) % 100) / 100.0, user_id)
    FROM (SELECT * FROM step1 UNION ALL SELECT * FROM step2) u) r;
SELECT action, step, share, reason FROM ab_rollout_check('assistant model');

-- Rolled back: every user is served the control's config, those assigned the new variant
-- included; their assignments stay as they were, and new users are assigned the control.
SELECT ab_get_variant('assistant model', user_id) AS served, count(*)
FROM (SELECT * FROM step1 UNION ALL SELECT * FROM step2) u GROUP BY 1;
SELECT v.name, count(*) FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id
WHERE a.experiment_id = (SELECT id FROM ab_experiments WHERE name = 'assistant model') GROUP BY v.name ORDER BY v.name;
SELECT ab_get_variant('assistant model', 'brand new user') ->> 'variant' AS new_user;
SELECT name, traffic_allocation FROM ab_variants
WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'assistant model') ORDER BY position;
-- The check's data is kept: with the audit row and as the new period's record.
SELECT action, detail ->> 'by' AS by, detail -> 'findings' -> 0 ->> 'guardrail' AS guardrail,
       (detail -> 'findings' -> 0 ->> 'breached')::boolean AS breached,
       (detail -> 'findings' -> 0 ->> 'users')::float8 AS users,
       round((detail -> 'findings' -> 0 ->> 'estimate')::numeric, 2) AS harm,
       (detail -> 'findings' -> 0 ->> 'bound')::float8 > 0.5 AS bound_above_margin
FROM ab_audit WHERE experiment_name = 'assistant model' AND action = 'rolled_back';
SELECT posterior ->> 'reason' = (SELECT detail ->> 'reason' FROM ab_audit WHERE action = 'rolled_back'
                                 AND experiment_name = 'assistant model') AS same_record
FROM ab_allocations WHERE experiment_id = (SELECT id FROM ab_experiments WHERE name = 'assistant model')
ORDER BY period DESC LIMIT 1;

-- The analysis compares the variants within each step (weight period), as a bandit's does:
-- the shares changed, so the pooled counts would look like a sample ratio mismatch.
SELECT DISTINCT metric_name, test FROM ab_analyze('assistant model') WHERE NOT is_control ORDER BY 1;
SELECT srm_p_value > 0.01 AS srm_ok FROM ab_experiment_health WHERE name = 'assistant model';
SELECT DISTINCT srm_p_value > 0.01 AS srm_ok FROM ab_analyze('assistant model');

-- A rolled-back rollout is not checked, and not rolled back twice (55000).
SELECT expect_error($$SELECT * FROM ab_rollout_check('assistant model')$$);
SELECT expect_error($$SELECT ab_rollback('assistant model', 'again')$$);
SELECT expect_error($$SELECT ab_ship('assistant model')$$);
-- ab_resume goes back to the step it was rolled back from: the new variant is served again.
SELECT ab_resume('assistant model');
SELECT ab_get_variant('assistant model', (SELECT user_id FROM step2 WHERE variant = 'new' ORDER BY user_id LIMIT 1)) ->> 'variant' AS served;
SELECT expect_error($$SELECT ab_resume('assistant model')$$);
-- Manual rollback needs a reason; bad arguments change nothing.
SELECT expect_error($$SELECT ab_rollback('assistant model', '  ')$$);
SELECT expect_error($$SELECT ab_rollback('assistant model', NULL)$$);
SELECT expect_error($$SELECT ab_rollback('no such rollout', 'why')$$);
SELECT allocation ->> 'state' AS state FROM ab_experiments WHERE name = 'assistant model';
SELECT ab_rollback('assistant model', 'support tickets about the new model');
SELECT ab_get_variant('assistant model', (SELECT user_id FROM step2 WHERE variant = 'new' ORDER BY user_id LIMIT 1)) ->> 'variant' AS served;
SELECT ab_resume('assistant model');
-- Shipping: every new user gets the new variant; checks stop.
SELECT ab_ship('assistant model');
SELECT count(*) FILTER (WHERE ab_get_variant('assistant model', 'w' || g) ->> 'variant' = 'new') AS new_of_500
FROM generate_series(1, 500) g;
SELECT expect_error($$SELECT * FROM ab_rollout_check('assistant model')$$);
SELECT action, detail ->> 'by' AS by, detail ->> 'reason' AS reason, detail ->> 'share' AS share, detail ->> 'to_share' AS to_share
FROM ab_audit WHERE experiment_name = 'assistant model' ORDER BY id;

-- Only rollouts are rolled back.
SELECT ab_create_experiment(rollout_def('fixed one', NULL) - 'allocation') > 0 AS created;
SELECT expect_error($$SELECT ab_rollback('fixed one', 'no')$$);
SELECT ab_start_experiment('fixed one');
SELECT expect_error($$SELECT ab_rollback('fixed one', 'no')$$);

-- ab_rollout_due: one row per ramping rollout; one that fails is its own row.
SELECT ab_create_experiment(rollout_def('due ok', '{"mode": "rollout", "steps": [50, 100], "step_every": "1 hour"}')) > 0 AS created;
SELECT ab_create_experiment(rollout_def('due broken', '{"mode": "rollout", "steps": [50, 100], "step_every": "1 hour"}')) > 0 AS created;
SELECT ab_start_experiment('due ok'), ab_start_experiment('due broken');
-- The rollout functions run with search_path pinned to pg_catalog: the trigger brings its own.
CREATE FUNCTION refuse_period() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.experiment_id = (SELECT id FROM ab_experiments WHERE name = 'due broken') THEN
        RAISE EXCEPTION 'no new period for this one' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_period BEFORE INSERT ON ab_allocations FOR EACH ROW EXECUTE FUNCTION refuse_period();
UPDATE ab_allocations SET started_at = started_at - interval '2 hours'
WHERE experiment_id IN (SELECT id FROM ab_experiments WHERE name IN ('due ok', 'due broken'));
SELECT experiment, action, step, share, reason FROM ab_rollout_due() ORDER BY experiment;
SELECT name, allocation ->> 'step' AS step, allocation ->> 'state' AS state
FROM ab_experiments WHERE name IN ('due ok', 'due broken') ORDER BY name;
DROP TRIGGER refuse_period ON ab_allocations;
-- Each function also takes the experiment's id.
SELECT action, step FROM ab_rollout_check((SELECT id FROM ab_experiments WHERE name = 'due ok'));
SELECT ab_rollback((SELECT id FROM ab_experiments WHERE name = 'due ok'), 'by id') ->> 'state' AS rolled_back,
       ab_resume((SELECT id FROM ab_experiments WHERE name = 'due ok')) ->> 'state' AS resumed,
       ab_ship((SELECT id FROM ab_experiments WHERE name = 'due ok')) ->> 'state' AS shipped;
SELECT expect_error($$SELECT ab_rollback(-1::bigint, 'x')$$);
DROP FUNCTION refuse_period();

-- Clean up.
SELECT ab_stop_experiment(name) ->> 'status' FROM ab_experiments
WHERE name IN ('assistant model', 'fixed one', 'due ok', 'due broken') ORDER BY name;
SELECT ab_delete_experiment(name) FROM ab_experiments
WHERE name IN ('assistant model', 'fixed one', 'due ok', 'due broken');
DROP FUNCTION rollout_def(text, jsonb);
