-- The layered case: an experiment owning all of a layer, like 'bench' otherwise.
\set ON_ERROR_STOP on
SELECT ab_create_layer('bench layer');
SELECT ab_create_experiment('{"name": "bench layered", "experiment_type": "prompt", "primary_metric": "resolution_rate",
  "salt": "bench", "layer": {"name": "bench layer", "percentage": 100}, "variants": [
    {"name": "Control", "is_control": true, "traffic_allocation": 50, "config": {"system_prompt": "Current prompt..."}},
    {"name": "Treatment", "traffic_allocation": 50, "config": {"system_prompt": "New prompt with examples..."}}]}');
SELECT ab_start_experiment('bench layered');
