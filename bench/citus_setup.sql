-- Citus benchmark database (the coordinator's postgres database, laid out by ab_distribute()):
-- one running experiment with 100k users assigned through the coordinator, and distributed
-- tables of the same shape, colocated, for the bare routed baselines.
\set ON_ERROR_STOP on
SELECT ab_create_experiment('{"name": "bench", "experiment_type": "prompt", "primary_metric": "resolution_rate",
  "salt": "bench", "variants": [
    {"name": "Control", "is_control": true, "traffic_allocation": 50, "config": {"system_prompt": "Current prompt..."}},
    {"name": "Treatment", "traffic_allocation": 50, "config": {"system_prompt": "New prompt with examples..."}}]}');
SELECT ab_start_experiment('bench');
-- Written directly (what ab_get_variant would store), in one distributed INSERT.
INSERT INTO ab_assignments (experiment_id, user_id, variant_id)
SELECT e.id, 'user-' || g, (SELECT v.id FROM ab_variants v WHERE v.experiment_id = e.id
                            ORDER BY v.position LIMIT 1 OFFSET (g % 2))
FROM ab_experiments e, generate_series(1, 100000) g WHERE e.name = 'bench';

CREATE TABLE bare_assignments (LIKE ab_assignments INCLUDING ALL);
CREATE TABLE bare_results (id bigserial, experiment_id bigint NOT NULL, variant_id bigint NOT NULL,
                           user_id text COLLATE "C" NOT NULL, metric_name text NOT NULL,
                           metric_value float8 NOT NULL, session_id text,
                           recorded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (user_id, id));
SELECT create_distributed_table('bare_assignments', 'user_id', colocate_with => 'ab_assignments');
SELECT create_distributed_table('bare_results', 'user_id', colocate_with => 'ab_assignments');
INSERT INTO bare_assignments SELECT * FROM ab_assignments;
