-- Interactions between experiments (ab_interactions) and differential impact across the
-- segments of every breakdown attribute (ab_differential_impact).
SELECT ab_create_experiment('{"name": "rate quote", "experiment_type": "ui", "primary_metric": "applied",
  "salt": "rate-quote-salt", "breakdowns": ["loan_type", "channel"],
  "metrics": {"applied": {"type": "binary"}, "amount": {}, "calls": {"aggregation": "count"}, "fee": {}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS a \gset
SELECT ab_create_experiment('{"name": "welcome email", "experiment_type": "prompt", "primary_metric": "applied",
  "salt": "welcome-salt", "metrics": {"applied": {"type": "binary"}, "amount": {}},
  "variants": [{"name": "plain", "is_control": true, "traffic_allocation": 34}, {"name": "short", "traffic_allocation": 33},
               {"name": "warm", "traffic_allocation": 33}]}') AS b \gset
SELECT ab_create_experiment('{"name": "footer", "experiment_type": "ui", "primary_metric": "clicks", "salt": "footer-salt",
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS c \gset
SELECT ab_create_experiment('{"name": "alone", "experiment_type": "ui", "primary_metric": "applied", "salt": "alone-salt",
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') AS d \gset
SELECT ab_start_experiment(x) FROM unnest(ARRAY['rate quote', 'welcome email', 'footer', 'alone']) x;

-- 900 users in "rate quote" and "welcome email", 300 of them in "footer" too; "alone" has
-- users of its own.
SELECT count(ab_get_variant('rate quote', 'rq' || g, jsonb_build_object('loan_type', (ARRAY['fha', 'va', 'conventional'])[g % 3 + 1],
                                                               'channel', CASE WHEN g % 4 = 0 THEN 'phone' ELSE 'web' END)))
       AS users FROM generate_series(1, 900) g;
SELECT count(ab_get_variant('welcome email', 'rq' || g)) AS users FROM generate_series(1, 900) g;
SELECT count(ab_get_variant('footer', 'rq' || g)) AS users FROM generate_series(1, 300) g;
SELECT count(ab_get_variant('alone', 'alone' || g)) AS users FROM generate_series(1, 50) g;
CREATE TEMP TABLE arms AS
SELECT substr(a.user_id, 3)::int AS g, a.user_id, va.name AS quote, vb.name AS email
FROM ab_assignments a JOIN ab_variants va ON va.id = a.variant_id
JOIN ab_assignments b ON b.user_id = a.user_id AND b.experiment_id = :b JOIN ab_variants vb ON vb.id = b.variant_id
WHERE a.experiment_id = :a;
SELECT quote, email, count(*) FROM arms GROUP BY 1, 2 ORDER BY 1, 2;

-- The new quote raises the amount by 40 only with the warm email (an interaction); applied has
-- additive effects. Both experiments record both metrics; calls only "rate quote".
SELECT count(*) FILTER (WHERE ok) AS recorded FROM (
  SELECT ab_record_result(e, 'amount', 200 + (g * 37 % 101) + CASE WHEN quote = 'new' AND email = 'warm' THEN 40 ELSE 0 END, user_id) AS ok
  FROM arms, unnest(ARRAY['rate quote', 'welcome email']) e
  UNION ALL
  SELECT ab_record_result(e, 'applied', (g * 13 % 100 < 30 + CASE quote WHEN 'new' THEN 5 ELSE 0 END
                                                       + CASE email WHEN 'plain' THEN 0 ELSE 3 END)::int, user_id)
  FROM arms, unnest(ARRAY['rate quote', 'welcome email']) e
  UNION ALL
  SELECT ab_record_result('rate quote', 'calls', 1, user_id) FROM arms WHERE g % 3 = 0
) s;

SELECT other_experiment, metric_name, shared_users, round(independence_p::numeric, 4) AS independence_p,
       variant, other_variant, round(interaction::numeric, 3) AS interaction, round(interaction_se::numeric, 3) AS se,
       round(p_value::numeric, 6) AS p, round(p_value_adjusted::numeric, 6) AS p_adjusted, flagged
FROM ab_interactions('rate quote');
-- By id, the same rows; from the other side, the same shared users and independence test.
SELECT (SELECT array_agg(i ORDER BY i::text) FROM ab_interactions(:a) i)
     = (SELECT array_agg(i ORDER BY i::text) FROM ab_interactions('rate quote') i) AS same_by_id;
SELECT other_experiment, metric_name, shared_users, round(independence_p::numeric, 4) AS independence_p,
       round(p_value::numeric, 6) AS p, flagged
FROM ab_interactions('welcome email');
-- An experiment sharing no users has no rows.
SELECT count(*) AS rows FROM ab_interactions('alone');

-- Differential impact: the new quote raises VA borrowers' fee by 15 and nobody else's. VA is
-- flagged, and so is conventional: its effect is compared with the rest's, which VA pulls
-- up. The channel segments, the amount (whose interaction with the email does not depend on
-- the segment) and applied are not flagged (VA's amount at p = 0.018 alone is q = 0.12 among
-- the 17 tests). Calls are recorded by FHA borrowers only: one value in that segment, no
-- test (NULL).
SELECT count(ab_record_result('rate quote', 'fee', 100 + abs(hashtext(user_id || 'fee')) % 101 + CASE WHEN quote = 'new' AND g % 3 = 1 THEN 15 ELSE 0 END, user_id))
       AS recorded FROM arms;
SELECT attribute, coalesce(value, '(not given)') AS value, metric_name, variant, users,
       round(effect::numeric, 3) AS effect, round(effect_elsewhere::numeric, 3) AS elsewhere,
       round(p_value::numeric, 6) AS p, round(q_value::numeric, 6) AS q, flagged,
       round(heterogeneity_p::numeric, 6) AS heterogeneity_p
FROM ab_differential_impact('rate quote');
SELECT count(*) AS rows, count(*) FILTER (WHERE flagged) AS flagged FROM ab_differential_impact(:a);
-- The summary ends with the interactions flagged, after its recommendation: both sides of
-- the quote and email pair (the warm email's amount); nothing for "footer", which shares
-- users but no metric, nor for "alone", which shares none.
SELECT substring(ab_summary('rate quote') FROM 'Recommendation: [^\n]*\n(.*)$') AS findings;
SELECT substring(ab_summary('welcome email') FROM 'Recommendation: [^\n]*\n(.*)$') AS findings;
SELECT ab_summary(x) LIKE '%Interactions%' AS mentioned FROM unnest(ARRAY['footer', 'alone']) x;

-- Errors: unknown experiment, NULL, a bandit, an experiment without breakdowns.
SELECT expect_error($$SELECT * FROM ab_interactions('rate qoute')$$);
SELECT expect_error($$SELECT * FROM ab_interactions(987654)$$);
SELECT expect_error($$SELECT * FROM ab_interactions(NULL::text)$$);
SELECT expect_error($$SELECT * FROM ab_differential_impact('rate qoute')$$);
SELECT expect_error($$SELECT * FROM ab_differential_impact(NULL::bigint)$$);
SELECT expect_error($$SELECT * FROM ab_differential_impact('welcome email')$$);
SELECT ab_create_experiment('{"name": "bandit quote", "experiment_type": "ui", "primary_metric": "m",
  "metrics": {"m": {"type": "binary"}}, "allocation": {"mode": "bandit"}, "breakdowns": ["loan_type"],
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') IS NOT NULL AS created;
SELECT expect_error($$SELECT * FROM ab_interactions('bandit quote')$$);
SELECT expect_error($$SELECT * FROM ab_differential_impact('bandit quote')$$);
-- An attribute with more than 100 values among the enrolled users is not a category.
SELECT ab_create_experiment('{"name": "many towns", "experiment_type": "ui", "primary_metric": "m", "breakdowns": ["town"],
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') IS NOT NULL AS created;
SELECT ab_start_experiment('many towns');
SELECT count(ab_get_variant('many towns', 'town' || g, jsonb_build_object('town', 'town ' || g))) AS users FROM generate_series(1, 101) g;
SELECT expect_error($$SELECT * FROM ab_differential_impact('many towns')$$);
SELECT ab_stop_experiment('many towns') ->> 'status' AS status;

SELECT ab_stop_experiment(x) ->> 'status' AS status FROM unnest(ARRAY['rate quote', 'welcome email', 'footer', 'alone']) x;
SELECT ab_delete_experiment(x) FROM unnest(ARRAY['rate quote', 'welcome email', 'footer', 'alone', 'bandit quote', 'many towns']) x;
