-- Creating, starting, stopping and deleting experiments.

-- The original REST API's create body, verbatim.
SELECT ab_create_experiment('{"name": "Lead Qualification Prompt Test", "description": "Testing new prompt with examples",
 "experiment_type": "prompt", "primary_metric": "resolution_rate",
 "variants": [
   {"name": "Control", "is_control": true, "traffic_allocation": 50.0, "config": {"system_prompt": "Current prompt..."}},
   {"name": "Treatment", "is_control": false, "traffic_allocation": 50.0, "config": {"system_prompt": "New prompt with examples..."}}],
 "min_sample_size": 100}') AS id \gset
SELECT ab_get_experiment('Lead Qualification Prompt Test') - 'created_at' - 'salt' AS experiment;
SELECT ab_get_experiment(:id) = ab_get_experiment('Lead Qualification Prompt Test') AS same_by_id;
SELECT length(ab_get_experiment(:id) ->> 'salt') > 0 AS has_salt;

-- A draft assigns nobody and records nothing.
SELECT ab_get_variant('Lead Qualification Prompt Test', 'user-1');
SELECT ab_record_result('Lead Qualification Prompt Test', 'resolution_rate', 1, 'user-1');
SELECT expect_error($$SELECT ab_stop_experiment('Lead Qualification Prompt Test')$$);

SELECT ab_start_experiment('Lead Qualification Prompt Test');
SELECT status, started_at IS NOT NULL AS started FROM ab_experiments;
SELECT expect_error($$SELECT ab_start_experiment('Lead Qualification Prompt Test')$$);
SELECT expect_error($$SELECT ab_delete_experiment('Lead Qualification Prompt Test')$$);
SELECT ab_get_variant('Lead Qualification Prompt Test', 'user-1') ->> 'variant' IN ('Control', 'Treatment') AS assigned;

SELECT ab_stop_experiment(:id);
SELECT status, stopped_at IS NOT NULL AS stopped, winner_variant FROM ab_experiments;
SELECT ab_get_variant('Lead Qualification Prompt Test', 'user-1') AS after_stop;
SELECT ab_record_result('Lead Qualification Prompt Test', 'resolution_rate', 1, 'user-1') AS recorded_after_stop;
SELECT expect_error($$SELECT ab_start_experiment('Lead Qualification Prompt Test')$$);
SELECT expect_error($$SELECT ab_stop_experiment('Lead Qualification Prompt Test', true)$$);

SELECT name, status, users_assigned, results_recorded FROM ab_experiment_overview;

-- Deleting removes every row of the experiment, and only of that experiment.
SELECT ab_create_experiment('{"name": "other", "experiment_type": "model", "primary_metric": "accuracy",
  "variants": [{"name": "gpt", "is_control": true, "traffic_allocation": 50}, {"name": "claude", "traffic_allocation": 50}]}') AS other \gset
SELECT ab_start_experiment(:other);
SELECT ab_get_variant('other', 'user-1') IS NOT NULL AS other_assigned;
SELECT ab_delete_experiment('Lead Qualification Prompt Test');
SELECT (SELECT count(*) FROM ab_experiments) AS experiments, (SELECT count(*) FROM ab_variants) AS variants,
       (SELECT count(*) FROM ab_assignments) AS assignments;
SELECT expect_error($$SELECT ab_get_experiment('Lead Qualification Prompt Test')$$);
SELECT expect_error(format('SELECT ab_get_experiment(%s)', :id));
SELECT expect_error($$SELECT ab_delete_experiment('Lead Qualification Prompt Test')$$);
SELECT expect_error($$SELECT ab_start_experiment(999999)$$);
SELECT ab_stop_experiment('other');
SELECT ab_delete_experiment(:other);
SELECT count(*) AS experiments_left FROM ab_experiments;
