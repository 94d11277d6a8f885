-- The ab_testing demo: the "Lead Qualification Prompt Test" from creation to a declared
-- winner, with 4000 simulated borrowers and a real effect (the new prompt resolves 67% of
-- conversations instead of 62%, and answers a little slower). Run it with: psql -f demo/demo.sql (scripts/demo.sh does).
\set ON_ERROR_STOP on
\set QUIET on
\pset footer off
SELECT setseed(0.2026);

\echo '== 0. The CRM''s own table of loan applications (the experiment reads a metric from it) =='
CREATE TABLE loan_applications (
    id          bigserial PRIMARY KEY,
    borrower_id text NOT NULL,
    status      text NOT NULL,
    funded_at   timestamptz,
    amount      numeric(12, 2) NOT NULL
);

\echo '== 1. Create the experiment: the original REST API body, plus its metrics and a fixed salt =='
-- tokens_per_conversation is a ratio of two recorded metrics; token_usage is capped at its
-- 99th percentile, so the few borrowers who paste a whole loan file cannot decide it;
-- response_time is a guardrail: the new prompt may answer at most 150 ms slower; each
-- borrower's loan type is stored at enrollment, to break the analysis down by; and
-- loan_funded_14d is read from the CRM's loan_applications, nothing recorded for it:
-- a borrower counts when a loan of theirs is funded within 14 days of enrollment.'
SELECT ab_create_experiment('{
  "name": "Lead Qualification Prompt Test", "description": "Testing new prompt with examples",
  "experiment_type": "prompt", "primary_metric": "resolution_rate",
  "variants": [
    {"name": "Control", "is_control": true, "traffic_allocation": 50.0,
     "config": {"system_prompt": "Current prompt..."}},
    {"name": "Treatment", "is_control": false, "traffic_allocation": 50.0,
     "config": {"system_prompt": "New prompt with examples..."}}],
  "min_sample_size": 100,
  "metrics": {"resolution_rate": {}, "satisfaction_score": {}, "response_time": {"direction": "lower", "margin": 150},
              "conversations": {"aggregation": "count"},
              "token_usage": {"aggregation": "sum", "direction": "lower", "cap": {"percentile": 0.99}},
              "tokens_per_conversation": {"type": "ratio", "numerator": "token_usage", "denominator": "conversations",
                                          "direction": "lower"},
              "loan_funded_14d": {"type": "binary", "window": "14 days",
                                  "source": {"relation": "public.loan_applications", "user_column": "borrower_id",
                                             "time_column": "funded_at", "filter": {"status": "funded"}}}},
  "salt": "lead-qualification", "breakdowns": ["loan_type"]}') AS experiment_id;

\echo '== 2. Start it =='
SELECT ab_start_experiment('Lead Qualification Prompt Test');

\echo '== 3. 4000 borrowers ask for their variant (the same user always gets the same one) =='
CREATE TEMP TABLE demo_users AS
SELECT 'borrower-' || g AS user_id,
       ab_get_variant('Lead Qualification Prompt Test', 'borrower-' || g,
                      jsonb_build_object('loan_type', (ARRAY['fha', 'va', 'conventional'])[1 + g % 3])) ->> 'variant' AS variant
FROM generate_series(1, 4000) AS g;
SELECT variant, count(*) AS users FROM demo_users GROUP BY variant ORDER BY variant;
SELECT ab_get_variant('Lead Qualification Prompt Test', 'borrower-1') AS "borrower-1 asks again";

\echo '== 4. Their conversations are scored: 1 to 3 conversations each =='
CREATE TEMP TABLE demo_conversations AS
SELECT u.user_id, u.variant, c AS conversation,
       (random() < CASE u.variant WHEN 'Treatment' THEN 0.67 ELSE 0.62 END)::int AS resolved,
       round((3.6 + CASE u.variant WHEN 'Treatment' THEN 0.15 ELSE 0 END + random() * 1.2 - 0.6)::numeric, 1) AS satisfaction,
       (900 + random() * 600 + CASE u.variant WHEN 'Treatment' THEN 120 ELSE 0 END)::int AS response_ms,
       -- The longer prompt costs tokens; one borrower in 200 pastes a whole loan file.
       CASE WHEN abs(hashtext(u.user_id)) % 200 = 0 THEN 80000
            ELSE 500 + abs(hashtext(u.user_id || c)) % 400 + CASE u.variant WHEN 'Treatment' THEN 150 ELSE 0 END END AS tokens
FROM demo_users u, generate_series(1, 1 + (abs(hashtext(u.user_id)) % 3)) AS c;

SELECT count(*) FILTER (WHERE recorded) AS results_recorded
FROM (
    SELECT ab_record_result('Lead Qualification Prompt Test', 'resolution_rate', resolved, user_id,
                            user_id || '/' || conversation) AS recorded
    FROM demo_conversations
    UNION ALL
    SELECT ab_record_result('Lead Qualification Prompt Test', 'satisfaction_score', satisfaction::float8, user_id)
    FROM demo_conversations
    UNION ALL
    SELECT ab_record_result('Lead Qualification Prompt Test', 'response_time', response_ms, user_id)
    FROM demo_conversations
    UNION ALL
    SELECT ab_record_result('Lead Qualification Prompt Test', 'conversations', 1, user_id)
    FROM demo_conversations
    UNION ALL
    SELECT ab_record_result('Lead Qualification Prompt Test', 'token_usage', tokens, user_id)
    FROM demo_conversations
) AS r;

\echo '== 4b. The CRM writes loan applications as it always does: one per borrower, funded more often after the new prompt, some after 14 days =='
INSERT INTO loan_applications (borrower_id, status, funded_at, amount)
SELECT a.user_id, CASE WHEN funded THEN 'funded' ELSE 'declined' END,
       CASE WHEN funded THEN a.assigned_at + (abs(hashtext(a.user_id)) % 20) * interval '1 day' END,
       150000 + (abs(hashtext(a.user_id)) % 1000) * 250
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id,
     LATERAL (SELECT random() < CASE v.name WHEN 'Treatment' THEN 0.36 ELSE 0.30 END AS funded) f
WHERE a.experiment_id = (SELECT id FROM ab_experiments WHERE name = 'Lead Qualification Prompt Test');
SELECT status, count(*) AS applications FROM loan_applications GROUP BY status ORDER BY status;

\echo '== 5. Analyse: per-user values, Welch t-test against the control (the delta method for the ratio) =='
SELECT metric_name, variant, users, round(mean::numeric, 4) AS mean, round(diff::numeric, 4) AS diff,
       round(ci_lower::numeric, 4) AS ci_lower, round(ci_upper::numeric, 4) AS ci_upper,
       round((relative_lift * 100)::numeric, 1) AS "lift %", p_value, significant
FROM ab_analyze('Lead Qualification Prompt Test');

\echo '== 5b. The primary metric by loan type (p-values adjusted across the three segments) =='
SELECT value AS loan_type, variant, users, round(diff::numeric, 4) AS diff, round(ci_lower::numeric, 4) AS ci_lower,
       round(ci_upper::numeric, 4) AS ci_upper, round(p_value_adjusted::numeric, 4) AS p_adjusted, significant
FROM ab_breakdown('Lead Qualification Prompt Test', 'loan_type') WHERE metric_name = 'resolution_rate' AND NOT is_control;

\echo '== 6. Stop it and declare the winner the data supports =='
SELECT ab_stop_experiment('Lead Qualification Prompt Test', declare_winner => true);

\echo '== 7. The summary an analyst reads =='
\pset format unaligned
\pset tuples_only on
SELECT ab_summary('Lead Qualification Prompt Test');
\pset format aligned
\pset tuples_only off

\echo '== 8. A layer: two experiments that never share a user, and a 10% holdout kept out of both =='
SELECT ab_create_layer('agent settings', holdout_percentage => 10, salt => 'agent-settings') AS layer_id;
SELECT ab_start_experiment(ab_create_experiment(format('{
  "name": "%s", "experiment_type": "agent_config", "primary_metric": "resolution_rate",
  "layer": {"name": "agent settings", "percentage": 45},
  "variants": [{"name": "before", "is_control": true, "traffic_allocation": 50},
               {"name": "after", "traffic_allocation": 50}]}', name)::jsonb))
FROM (VALUES ('Confidence threshold'), ('Escalation wording')) AS e(name);
SELECT name, holdout_percentage, allocated_percentage, free_percentage FROM ab_layer_overview;
SELECT coalesce(ab_layer_group('agent settings', user_id), 'free') AS falls_in,
       count(*) AS users,
       count(*) FILTER (WHERE ab_get_variant('Confidence threshold', user_id) IS NOT NULL) AS in_threshold_test,
       count(*) FILTER (WHERE ab_get_variant('Escalation wording', user_id) IS NOT NULL) AS in_wording_test
FROM (SELECT DISTINCT user_id FROM demo_conversations) u
GROUP BY 1 ORDER BY 1;

\echo '== 9. All experiments =='
SELECT name, status, users_assigned, results_recorded, winner_variant FROM ab_experiment_overview;
