-- Regression adjustment (ab_adjusted): a metric adjusted for pre-period values and a stratum
-- stored at assignment, and a cluster-randomized experiment analysed with cluster-robust
-- errors. The data is a fixed function of the user number (no random()).
SELECT ab_create_experiment('{"name": "adjusted", "experiment_type": "agent_config", "primary_metric": "funded",
  "salt": "adjusted-salt", "breakdowns": ["loan_type"],
  "metrics": {"funded": {"aggregation": "sum", "covariates": ["funded", "applications", {"attribute": "loan_type"}]},
              "applications": {"aggregation": "count"}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS e \gset
SELECT ab_start_experiment('adjusted');
SELECT count(*) FILTER (WHERE v IS NOT NULL) AS enrolled FROM (
  SELECT ab_get_variant('adjusted', 'u' || g, jsonb_build_object('loan_type', (ARRAY['fha', 'va', 'conventional'])[g % 3 + 1])) AS v
  FROM generate_series(1, 900) g) s;
INSERT INTO ab_covariates (experiment_id, user_id, metric_name, value)
SELECT :e, 'u' || g, 'funded', (g * 37 % 101) / 10.0 FROM generate_series(1, 900) g
UNION ALL SELECT :e, 'u' || g, 'applications', g % 5 FROM generate_series(1, 900) g WHERE g % 7 <> 0;
SELECT count(*) AS recorded FROM (
  SELECT ab_record_result('adjusted', 'funded',
           (g * 37 % 101) / 10.0 * 0.9 + (g % 5) * 0.4 + (g % 3) * 1.5 + (g * 53 % 17) / 8.0
           + CASE (ab_get_variant('adjusted', 'u' || g) ->> 'variant') WHEN 'new' THEN 0.6 ELSE 0 END, 'u' || g)
  FROM generate_series(1, 900) g) s;
SELECT metric_name, variant, is_control, users, clusters, covariates, round(adjusted_mean::numeric, 4) AS adjusted_mean,
       round(diff::numeric, 4) AS diff, round(ci_lower::numeric, 4) AS ci_lower, round(ci_upper::numeric, 4) AS ci_upper,
       p_value < 1e-6 AS p_tiny, significant, round(std_error::numeric, 5) AS std_error,
       round(unadjusted_std_error::numeric, 5) AS unadjusted_std_error,
       round(variance_reduction::numeric, 4) AS variance_reduction,
       round(variance_reduction_vs_cuped::numeric, 4) AS vs_cuped, round(srm_p_value::numeric, 4) AS srm
FROM ab_adjusted('adjusted');
-- By id, the same rows.
SELECT count(*) AS same FROM ab_adjusted(:e) a JOIN ab_adjusted('adjusted') b USING (metric_name, variant)
WHERE a.diff IS NOT DISTINCT FROM b.diff;
-- Errors: an experiment without covariates, an unknown one.
SELECT ab_create_experiment('{"name": "plain", "experiment_type": "prompt", "primary_metric": "m",
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}') > 0 AS created;
SELECT expect_error($$SELECT * FROM ab_adjusted('plain')$$);
SELECT expect_error($$SELECT * FROM ab_adjusted('nope')$$);
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bad", "experiment_type": "prompt", "primary_metric": "m",
  "metrics": {"m": {"covariates": [{"attribute": "segment"}]}},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);

-- Cluster-randomized by branch: every user of a branch in the branch's variant.
SELECT ab_create_experiment('{"name": "branches", "experiment_type": "agent_config", "primary_metric": "handled",
  "salt": "branches-salt", "breakdowns": ["branch"], "randomization_unit": "branch",
  "metrics": {"handled": {}},
  "variants": [{"name": "control", "is_control": true, "traffic_allocation": 50}, {"name": "new", "traffic_allocation": 50}]}') AS b \gset
SELECT ab_start_experiment('branches');
CREATE TEMP TABLE branch_users AS
SELECT g % 40 AS branch, ab_get_variant('branches', 'b' || g, jsonb_build_object('branch', 'br' || g % 40)) ->> 'variant' AS variant
FROM generate_series(1, 800) g;
SELECT count(DISTINCT variant) AS variants, count(variant) AS users,
       (SELECT max(n) FROM (SELECT count(DISTINCT variant) AS n FROM branch_users GROUP BY branch) x) AS most_variants_in_a_branch
FROM branch_users;
SELECT ab_get_variant('branches', 'nobody', '{"region": "west"}') AS without_branch;
SELECT count(*) AS recorded FROM (
  SELECT ab_record_result('branches', 'handled', (g % 40) * 0.05 + (g * 29 % 13) / 6.0, 'b' || g)
  FROM generate_series(1, 800) g) s;
SELECT variant, users, clusters, round(diff::numeric, 4) AS diff, round(std_error::numeric, 4) AS std_error,
       round(srm_p_value::numeric, 4) AS srm
FROM ab_adjusted('branches');
SELECT expect_error($$SELECT ab_create_experiment('{"name": "bandit branches", "experiment_type": "prompt", "primary_metric": "m",
  "breakdowns": ["branch"], "randomization_unit": "branch", "allocation": {"mode": "bandit"},
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}')$$);

SELECT ab_stop_experiment('adjusted') ->> 'status' AS status, ab_stop_experiment('branches') ->> 'status' AS status;
SELECT ab_delete_experiment('adjusted'), ab_delete_experiment('branches'), ab_delete_experiment('plain');
