-- Ratio metrics: the ratio of two metrics' per-user means (delta method).
SELECT ab_create_experiment('{"name": "ratios", "experiment_type": "prompt", "primary_metric": "tokens_per_conversation",
  "salt": "ratio-salt", "min_sample_size": 50,
  "metrics": {"conversations": {"aggregation": "count"}, "token_usage": {"aggregation": "sum", "direction": "lower"},
              "resolved": {"type": "binary"},
              "tokens_per_conversation": {"type": "ratio", "numerator": "token_usage", "denominator": "conversations",
                                          "direction": "lower", "mde": 20},
              "resolved_share": {"type": "ratio", "numerator": "resolved", "denominator": "conversations"}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "short", "traffic_allocation": 50}]}') AS e \gset
SELECT ab_start_experiment('ratios');
SELECT count(*) AS users FROM (SELECT ab_get_variant('ratios', 'u' || g) FROM generate_series(1, 400) g) s;
CREATE TEMP TABLE arm AS
SELECT a.user_id, substr(a.user_id, 2)::int AS g, v.name AS variant
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = :e;

-- 0 to 4 conversations per user (every fifth user has none); shorter prompts use fewer tokens.
SELECT count(*) FILTER (WHERE ok) AS recorded FROM (
  SELECT ab_record_result('ratios', 'conversations', 1, user_id) AS ok FROM arm, generate_series(1, g % 5) c
  UNION ALL
  SELECT ab_record_result('ratios', 'token_usage',
           CASE variant WHEN 'control' THEN 800 ELSE 700 END + (g * c * 37) % 300, user_id)
  FROM arm, generate_series(1, g % 5) c
  UNION ALL
  SELECT ab_record_result('ratios', 'resolved', 1, user_id) FROM arm WHERE g % 5 > 0 AND g % 3 <> 0
) s;

SELECT metric_name, variant, users, round(mean::numeric, 6) AS mean, round(std_dev::numeric, 6) AS std_dev,
       round(diff::numeric, 6) AS diff, round(ci_lower::numeric, 6) AS ci_lower, round(ci_upper::numeric, 6) AS ci_upper,
       round(relative_lift::numeric, 6) AS lift, round(p_value::numeric, 6) AS p, significant, metric_type, test,
       users_needed
FROM ab_analyze('ratios') WHERE metric_type = 'ratio' ORDER BY metric_name, variant;

-- By hand: the ratio of the per-user sums over every assigned user, and its delta-method
-- variance n var(R) = var(y - R x) / mean(x)^2, tested with Welch: the same numbers.
WITH per_user AS (
  SELECT arm.variant, arm.user_id,
         coalesce(sum(r.metric_value) FILTER (WHERE r.metric_name = 'token_usage'), 0) AS y,
         count(r.*) FILTER (WHERE r.metric_name = 'conversations') AS x
  FROM arm LEFT JOIN ab_results r ON r.user_id = arm.user_id AND r.experiment_id = :e
  GROUP BY 1, 2),
ratio AS (SELECT variant, count(*) AS n, sum(y) / sum(x) AS r, avg(x) AS mx FROM per_user GROUP BY 1),
lin AS (SELECT variant, n, r, var_samp((p.y - r * p.x) / mx) AS v FROM per_user p JOIN ratio USING (variant) GROUP BY 1, 2, 3),
manual AS (SELECT w.* FROM lin c, lin t, LATERAL ab_welch_test(c.n, c.r, c.v, t.n, t.r, t.v) w
           WHERE c.variant = 'control' AND t.variant = 'short')
SELECT abs(a.diff - m.diff) < 1e-9 AS same_diff, abs(a.p_value - m.p_value) <= 1e-9 * m.p_value AS same_p,
       abs(a.ci_lower - m.ci_lower) < 1e-9 AND abs(a.ci_upper - m.ci_upper) < 1e-9 AS same_ci
FROM manual m, ab_analyze('ratios') a WHERE a.metric_name = 'tokens_per_conversation' AND a.variant = 'short';

-- The summary names the parts.
SELECT line FROM regexp_split_to_table(ab_summary('ratios'), E'\n') line WHERE line LIKE '%delta method%';

-- A ratio is computed from its parts: results and covariates under its name are refused.
SELECT expect_error($$SELECT ab_record_result('ratios', 'tokens_per_conversation', 12, 'u1')$$);
SELECT expect_error($$SELECT ab_record_covariate('ratios', 'resolved_share', 'u1', 0.5)$$);
SELECT count(*) AS stored FROM ab_results WHERE experiment_id = :e AND metric_name IN ('tokens_per_conversation', 'resolved_share');

-- Definitions that cannot make a ratio.
WITH defs(label, metrics) AS (VALUES
  ('no denominator', '{"t": {"aggregation": "sum"}, "r": {"type": "ratio", "numerator": "t"}}'),
  ('undeclared part', '{"tokens": {"aggregation": "sum"}, "c": {"aggregation": "count"}, "r": {"type": "ratio", "numerator": "token", "denominator": "c"}}'),
  ('mean part', '{"t": {}, "c": {"aggregation": "count"}, "r": {"type": "ratio", "numerator": "t", "denominator": "c"}}'),
  ('ratio of a ratio', '{"t": {"aggregation": "sum"}, "c": {"aggregation": "count"}, "r": {"type": "ratio", "numerator": "t", "denominator": "c"}, "rr": {"type": "ratio", "numerator": "r", "denominator": "c"}}'),
  ('by itself', '{"t": {"aggregation": "sum"}, "r": {"type": "ratio", "numerator": "t", "denominator": "t"}}'),
  ('parts on a non-ratio', '{"t": {"aggregation": "sum", "denominator": "c"}}'),
  ('aggregated ratio', '{"t": {"aggregation": "sum"}, "c": {"aggregation": "count"}, "r": {"type": "ratio", "numerator": "t", "denominator": "c", "aggregation": "sum"}}'))
SELECT label, expect_error(format('SELECT ab_create_experiment(%L)', jsonb_build_object(
  'name', 'bad ratio', 'experiment_type', 'ui', 'primary_metric', 'p', 'metrics', metrics::jsonb || '{"p": {}}',
  'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb))) AS error
FROM defs ORDER BY label;
-- A bandit's analysis is stratified by weight period; a ratio metric is refused there.
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bandit ratio", "experiment_type": "prompt", "primary_metric": "resolved",
  "metrics": {"resolved": {"type": "binary"}, "t": {"aggregation": "sum"}, "c": {"aggregation": "count"},
              "r": {"type": "ratio", "numerator": "t", "denominator": "c"}},
  "allocation": {"mode": "bandit"},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT count(*) AS created FROM ab_experiments WHERE name IN ('bad ratio', 'bandit ratio');

SELECT ab_stop_experiment('ratios') ->> 'status' AS status;
SELECT ab_delete_experiment('ratios');

-- Capped metrics: each user's value is limited to the cap, an absolute value or a percentile
-- of the per-user values of the users who recorded the metric (every variant together).
SELECT ab_create_experiment('{"name": "capped", "experiment_type": "model", "primary_metric": "response_time",
  "salt": "cap-salt", "min_sample_size": 50,
  "metrics": {"response_time": {"direction": "lower", "cap": {"percentile": 0.95}},
              "token_usage": {"aggregation": "sum", "direction": "lower", "cap": {"value": 2000}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "fast", "traffic_allocation": 50}]}') AS c \gset
SELECT ab_start_experiment('capped');
SELECT count(*) AS users FROM (SELECT ab_get_variant('capped', 'u' || g) FROM generate_series(1, 300) g) s;
CREATE TEMP TABLE carm AS
SELECT a.user_id, substr(a.user_id, 2)::int AS g, v.name AS variant
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = :c;
-- Every 40th user waits a minute; every 50th burns 100,000 tokens; a third use no tokens.
SELECT count(*) FILTER (WHERE ok) AS recorded FROM (
  SELECT ab_record_result('capped', 'response_time',
           CASE WHEN g % 40 = 0 THEN 60000 ELSE 300 + (g * 7) % 200 - CASE variant WHEN 'fast' THEN 30 ELSE 0 END END, user_id) AS ok
  FROM carm
  UNION ALL
  SELECT ab_record_result('capped', 'token_usage', CASE WHEN g % 50 = 0 THEN 100000 ELSE 500 + (g * 13) % 700 END, user_id)
  FROM carm WHERE g % 3 <> 0
) s;
SELECT metric_name, variant, users, round(mean::numeric, 6) AS mean, round(diff::numeric, 6) AS diff,
       round(p_value::numeric, 6) AS p, significant
FROM ab_analyze('capped') ORDER BY metric_name, variant;

-- By hand: the 95th percentile of the users' values, then Welch's test on least(value, cap);
-- the sum metric's silent users count as 0 after the cap.
WITH rt AS (SELECT carm.variant, r.user_id, avg(r.metric_value) AS v FROM ab_results r JOIN carm USING (user_id)
            WHERE r.experiment_id = :c AND r.metric_name = 'response_time' GROUP BY 1, 2),
cap AS (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY v) AS cap FROM rt),
tok AS (SELECT carm.variant, least(coalesce(sum(r.metric_value), 0), 2000) AS v
        FROM carm LEFT JOIN ab_results r ON r.user_id = carm.user_id AND r.experiment_id = :c AND r.metric_name = 'token_usage'
        GROUP BY carm.variant, carm.user_id),
per_user AS (SELECT 'response_time' AS metric_name, variant, least(v, cap) AS v FROM rt, cap
             UNION ALL SELECT 'token_usage', variant, v FROM tok),
s AS (SELECT metric_name, variant, count(*) AS n, avg(v) AS m, var_samp(v) AS s2 FROM per_user GROUP BY 1, 2),
manual AS (SELECT c.metric_name, w.* FROM s c JOIN s t ON t.metric_name = c.metric_name AND c.variant = 'control' AND t.variant = 'fast',
           LATERAL ab_welch_test(c.n, c.m, c.s2, t.n, t.m, t.s2) w)
SELECT m.metric_name, abs(a.diff - m.diff) < 1e-9 AS same_diff, abs(a.p_value - m.p_value) <= 1e-9 * m.p_value AS same_p,
       abs(a.ci_lower - m.ci_lower) < 1e-9 AND abs(a.ci_upper - m.ci_upper) < 1e-9 AS same_ci
FROM manual m JOIN ab_analyze('capped') a ON a.metric_name = m.metric_name AND a.variant = 'fast' ORDER BY 1;
SELECT line FROM regexp_split_to_table(ab_summary('capped'), E'\n') line WHERE line LIKE '%capped at%';

WITH defs(label, metric) AS (VALUES
  ('both', '{"cap": {"value": 10, "percentile": 0.9}}'),
  ('percent, not fraction', '{"cap": {"percentile": 99}}'),
  ('negative cap of a sum', '{"aggregation": "sum", "cap": {"value": -5}}'),
  ('binary', '{"type": "binary", "cap": {"value": 1}}'),
  ('unknown key', '{"cap": {"upper": 10}}'))
SELECT label, expect_error(format('SELECT ab_create_experiment(%L)', jsonb_build_object(
  'name', 'bad cap', 'experiment_type', 'ui', 'primary_metric', 'p', 'metrics', jsonb_build_object('p', metric::jsonb),
  'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb))) AS error
FROM defs ORDER BY label;
SELECT ab_stop_experiment('capped') ->> 'status' AS status;
SELECT ab_delete_experiment('capped');

-- Guardrails: a metric with a margin is tested for non-inferiority, and the winner must pass
-- every guardrail. "aggressive" resolves the most but escalates far more; "careful" resolves
-- less, escalates about as often as the control.
SELECT ab_create_experiment('{"name": "guarded", "experiment_type": "agent_config", "primary_metric": "resolved",
  "salt": "guard-salt", "min_sample_size": 100,
  "metrics": {"resolved": {"type": "binary"},
              "escalated": {"type": "binary", "direction": "lower", "margin": 0.04},
              "response_time": {"direction": "lower", "margin": 100}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 34},
               {"name": "aggressive", "traffic_allocation": 33}, {"name": "careful", "traffic_allocation": 33}]}') AS gid \gset
SELECT ab_start_experiment('guarded');
SELECT count(*) AS users FROM (SELECT ab_get_variant('guarded', 'u' || g) FROM generate_series(1, 3000) g) s;
CREATE TEMP TABLE garm AS
SELECT a.user_id, substr(a.user_id, 2)::int AS g, v.name AS variant
FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id WHERE a.experiment_id = :gid;
SELECT count(*) FILTER (WHERE ok) AS recorded FROM (
  SELECT ab_record_result('guarded', 'resolved',
           ((g * 7) % 100 < CASE variant WHEN 'control' THEN 50 WHEN 'aggressive' THEN 62 ELSE 57 END)::int, user_id) AS ok FROM garm
  UNION ALL
  SELECT ab_record_result('guarded', 'escalated',
           ((g * 13) % 100 < CASE variant WHEN 'control' THEN 10 WHEN 'aggressive' THEN 16 ELSE 10 END)::int, user_id) FROM garm
  UNION ALL
  SELECT ab_record_result('guarded', 'response_time', 1000 + (g * 31) % 400 + CASE variant WHEN 'careful' THEN 20 ELSE 0 END, user_id)
  FROM garm
) s;
SELECT metric_name, variant, round(diff::numeric, 4) AS diff, round(relative_lift::numeric, 4) AS lift,
       round(relative_lift_ci_lower::numeric, 4) AS lift_lo, round(relative_lift_ci_upper::numeric, 4) AS lift_hi,
       round(relative_lift_p_value::numeric, 6) AS lift_p, margin, round(non_inferiority_p_value::numeric, 6) AS ni_p,
       non_inferior
FROM ab_analyze('guarded') WHERE NOT is_control ORDER BY metric_name, variant;

-- By hand: the relative lift's delta-method CI, (m_t - m_c) / m_c +- z se with
-- se^2 = v_t / m_c^2 + v_c m_t^2 / m_c^4, for the binary primary metric.
WITH s AS (SELECT variant, count(*) AS n, avg(v) AS m FROM (
             SELECT garm.variant, max(r.metric_value) AS v FROM garm JOIN ab_results r USING (user_id)
             WHERE r.experiment_id = :gid AND r.metric_name = 'resolved' GROUP BY 1, garm.user_id) u GROUP BY 1),
z AS (SELECT t.variant, (t.m - c.m) / c.m AS lift,
             sqrt(t.m * (1 - t.m) / t.n / c.m ^ 2 + c.m * (1 - c.m) / c.n * t.m ^ 2 / c.m ^ 4) AS se
      FROM s c JOIN s t ON c.variant = 'control' AND t.variant <> 'control')
SELECT z.variant, abs(a.relative_lift_ci_lower - (z.lift - 1.959963984540054 * z.se)) < 1e-9 AS same_lower,
       abs(a.relative_lift_ci_upper - (z.lift + 1.959963984540054 * z.se)) < 1e-9 AS same_upper
FROM z JOIN ab_analyze('guarded') a ON a.metric_name = 'resolved' AND a.variant = z.variant ORDER BY 1;

-- The summary reports each guardrail, and the winner is the better treatment that passes them all.
SELECT line FROM regexp_split_to_table(ab_summary('guarded'), E'\n') line WHERE line LIKE '%guardrail%' OR line LIKE 'Recommendation%';
SELECT ab_stop_experiment('guarded', declare_winner => true) ->> 'winner' AS winner;
SELECT ab_delete_experiment('guarded');

SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad margin", "experiment_type": "ui", "primary_metric": "p",
  "metrics": {"p": {"type": "binary", "margin": 2}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad margin", "experiment_type": "ui", "primary_metric": "p",
  "metrics": {"p": {"margin": -1}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);

-- ab_bayes: the posterior of each effect. With a flat prior it is ab_analyze's Bayesian
-- summary; a prior pulls the effect toward its mean.
SELECT ab_create_experiment('{"name": "bayes", "experiment_type": "prompt", "primary_metric": "score", "salt": "bayes-salt",
  "metrics": {"score": {}, "latency": {"direction": "lower", "prior": {"mean": 0, "sd": 0.01, "relative": true}}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS bid \gset
SELECT ab_start_experiment('bayes');
SELECT count(*) FILTER (WHERE ok) AS recorded FROM (
  SELECT ab_record_result('bayes', m.metric, m.value, 'u' || g) AS ok
  FROM generate_series(1, 600) g,
       LATERAL (SELECT ab_get_variant('bayes', 'u' || g) ->> 'variant' AS variant) v,
       LATERAL (VALUES ('score', 3 + (g * 7) % 10 * 0.2 + CASE v.variant WHEN 'new' THEN 0.15 ELSE 0 END),
                       ('latency', 900 + (g * 13) % 200 - CASE v.variant WHEN 'new' THEN 25 ELSE 0 END)) m(metric, value)) s;
SELECT metric_name, variant, effect, prior_mean, prior_sd, round(posterior_mean::numeric, 5) AS mean,
       round(posterior_sd::numeric, 5) AS sd, round(credible_lower::numeric, 5) AS lo, round(credible_upper::numeric, 5) AS hi,
       round(chance_to_beat_control::numeric, 5) AS chance, round(risk_of_shipping::numeric, 6) AS risk_ship,
       round(risk_of_keeping_control::numeric, 6) AS risk_keep
FROM ab_bayes('bayes') ORDER BY metric_name, variant;
SELECT abs(b.chance_to_beat_control - a.chance_to_beat_control) < 1e-12 AS same_chance,
       abs(b.risk_of_shipping - a.expected_loss) < 1e-12 AS same_loss, abs(b.posterior_mean - a.diff) < 1e-12 AS same_mean
FROM ab_bayes('bayes') b JOIN ab_analyze('bayes') a USING (metric_name, variant) WHERE b.metric_name = 'score' AND NOT b.is_control;
-- A prior given to the call replaces every metric's: a tight one on the absolute difference.
SELECT metric_name, effect, prior_sd, round(posterior_mean::numeric, 5) AS mean
FROM ab_bayes(:bid, '{"mean": 0, "sd": 0.01}') WHERE NOT is_control ORDER BY 1;
SELECT expect_error($$SELECT * FROM ab_bayes('bayes', '{"mean": 0, "sd": 0}')$$);
SELECT expect_error($$SELECT * FROM ab_bayes('bayes', '{"mean": 0, "sigma": 1}')$$);
SELECT expect_error($$SELECT * FROM ab_bayes('bayes', '[1]')$$);
SELECT expect_error($$SELECT * FROM ab_bayes(NULL::text)$$);
SELECT expect_error($$SELECT * FROM ab_bayes('bayez')$$);
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad prior", "experiment_type": "ui", "primary_metric": "p",
  "metrics": {"p": {"prior": {"mean": 0, "sd": -1}}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
-- ab_grant_analyst lets a role run it; ab_revoke_analyst takes it back.
CREATE ROLE ab_bayes_reader;
SELECT ab_grant_analyst('ab_bayes_reader');
SET ROLE ab_bayes_reader;
SELECT count(*) AS rows FROM ab_bayes('bayes');
RESET ROLE;
SELECT ab_revoke_analyst('ab_bayes_reader');
SELECT has_function_privilege('ab_bayes_reader', 'ab_bayes(text, jsonb)', 'EXECUTE') AS still_allowed;
DROP OWNED BY ab_bayes_reader;
DROP ROLE ab_bayes_reader;
SELECT ab_stop_experiment('bayes') ->> 'status' AS status;
SELECT ab_delete_experiment('bayes');

-- Quantile metrics: a quantile of another continuous metric's per-user values or of every
-- recorded value; the difference of the quantiles compared on the estimate's variance.
SELECT ab_create_experiment('{"name": "latency", "experiment_type": "model", "primary_metric": "p90",
  "salt": "latency-salt", "min_sample_size": 50,
  "metrics": {"response_time": {"direction": "lower"},
              "p90": {"type": "quantile", "of": "response_time", "quantile": 0.9, "level": "event", "direction": "lower"},
              "median_user": {"type": "quantile", "of": "response_time", "quantile": 0.5, "direction": "lower"}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "fast", "traffic_allocation": 50}]}') AS q \gset
SELECT ab_start_experiment('latency');
SELECT count(*) AS users FROM (SELECT ab_get_variant('latency', 'u' || g) FROM generate_series(1, 400) g) s;
-- 1 to 4 calls per user; the fast model's slow calls are faster.
SELECT count(*) FILTER (WHERE ok) AS recorded FROM (
  SELECT ab_record_result('latency', 'response_time',
           500 + (g * 37 + c * 101) % 700 * CASE v.name WHEN 'fast' THEN 0.8 ELSE 1 END, a.user_id) AS ok
  FROM ab_assignments a JOIN ab_variants v ON v.id = a.variant_id, LATERAL (SELECT substr(a.user_id, 2)::int AS g) x,
       generate_series(1, 1 + substr(a.user_id, 2)::int % 4) c
  WHERE a.experiment_id = :q) s;
SELECT metric_name, variant, users, round(mean::numeric, 2) AS estimate, std_dev, round(diff::numeric, 2) AS diff,
       round(ci_lower::numeric, 2) AS ci_lower, round(ci_upper::numeric, 2) AS ci_upper, round(p_value::numeric, 6) AS p,
       metric_type, test
FROM ab_analyze('latency') WHERE metric_type = 'quantile' ORDER BY metric_name, variant;
-- By hand: the event-level estimate is percentile_cont over every recorded value.
SELECT v.name AS variant, round(percentile_cont(0.9) WITHIN GROUP (ORDER BY r.metric_value)::numeric, 2) AS p90
FROM ab_results r JOIN ab_variants v ON v.id = r.variant_id WHERE r.experiment_id = :q GROUP BY 1 ORDER BY 1;
SELECT line FROM regexp_split_to_table(ab_summary('latency'), E'\n') line WHERE line ~ '^(p90|median_user) ';
-- A quantile is computed, never recorded; it has no timeline and no breakdown yet.
SELECT expect_error($$SELECT ab_record_result('latency', 'p90', 100, 'u1')$$);
SELECT expect_error($$SELECT ab_record_covariate('latency', 'p90', 'u1', 100)$$);
SELECT expect_error($$SELECT * FROM ab_timeline('latency', 'p90')$$);
SELECT count(*) AS timeline_metrics FROM (SELECT DISTINCT metric_name FROM ab_timeline('latency')) t;
-- Definition errors.
SELECT label, expect_error(format($$SELECT ab_create_experiment(%L)$$, jsonb_build_object(
  'name', 'bad quantile', 'experiment_type', 'model', 'primary_metric', 'rt', 'metrics', m,
  'variants', '[{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]'::jsonb))) AS error
FROM (VALUES
  ('level out of range', '{"rt": {}, "q": {"type": "quantile", "of": "rt", "quantile": 1.5}}'::jsonb),
  ('no of', '{"rt": {}, "q": {"type": "quantile", "quantile": 0.9}}'),
  ('undeclared of', '{"rt": {}, "q": {"type": "quantile", "of": "latency", "quantile": 0.9}}'),
  ('binary of', '{"rt": {}, "b": {"type": "binary"}, "q": {"type": "quantile", "of": "b", "quantile": 0.9}}'),
  ('quantile of a quantile', '{"rt": {}, "q": {"type": "quantile", "of": "rt", "quantile": 0.9}, "qq": {"type": "quantile", "of": "q", "quantile": 0.5}}'),
  ('unknown level', '{"rt": {}, "q": {"type": "quantile", "of": "rt", "quantile": 0.9, "level": "session"}}'),
  ('quantile keys elsewhere', '{"rt": {"quantile": 0.9}}')
) d(label, m) ORDER BY label;
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bandit quantile", "experiment_type": "model", "primary_metric": "rt",
  "metrics": {"rt": {}, "q": {"type": "quantile", "of": "rt", "quantile": 0.9}}, "allocation": {"mode": "bandit"},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);
SELECT count(*) AS created FROM ab_experiments WHERE name IN ('bad quantile', 'bandit quantile');
SELECT ab_stop_experiment('latency') ->> 'status' AS status;
SELECT ab_delete_experiment('latency');
