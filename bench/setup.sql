-- Benchmark database: one running experiment with 100k users already assigned, tables of
-- the same shape for the bare-SQL baselines, and the PL/pgSQL peer an application team
-- would otherwise write (md5 bucketing, a lookup, an insert).
\set ON_ERROR_STOP on
CREATE EXTENSION ab_testing;
SELECT ab_create_experiment('{"name": "bench", "experiment_type": "prompt", "primary_metric": "resolution_rate",
  "salt": "bench", "variants": [
    {"name": "Control", "is_control": true, "traffic_allocation": 50, "config": {"system_prompt": "Current prompt..."}},
    {"name": "Treatment", "traffic_allocation": 50, "config": {"system_prompt": "New prompt with examples..."}}]}');
SELECT ab_start_experiment('bench');
SELECT count(ab_get_variant('bench', 'user-' || g)) FROM generate_series(1, 100000) g;

CREATE TABLE bare_assignments (LIKE ab_assignments INCLUDING ALL);
CREATE TABLE bare_results (LIKE ab_results INCLUDING ALL);

CREATE TABLE plpg_experiments (id bigint PRIMARY KEY, name text UNIQUE, salt text, status text);
CREATE TABLE plpg_variants (id bigint PRIMARY KEY, experiment_id bigint, position int, name text,
                            width int, is_control boolean, config jsonb);
CREATE TABLE plpg_assignments (LIKE ab_assignments INCLUDING ALL);
CREATE TABLE plpg_results (LIKE ab_results INCLUDING ALL);
INSERT INTO plpg_experiments VALUES (1, 'bench', 'bench', 'running');
INSERT INTO plpg_variants VALUES (1, 1, 0, 'Control', 5000, true, '{"system_prompt": "Current prompt..."}'),
                                 (2, 1, 1, 'Treatment', 5000, false, '{"system_prompt": "New prompt with examples..."}');

CREATE FUNCTION plpg_get_variant(p_experiment text, p_user text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    e plpg_experiments;
    v_id bigint;
    pt int;
    result jsonb;
BEGIN
    SELECT * INTO e FROM plpg_experiments WHERE name = p_experiment;
    IF NOT FOUND OR e.status <> 'running' THEN
        RETURN NULL;
    END IF;
    SELECT variant_id INTO v_id FROM plpg_assignments WHERE experiment_id = e.id AND user_id = p_user;
    IF NOT FOUND THEN
        pt := ('x' || substr(md5(e.salt || p_user), 1, 8))::bit(32)::bigint % 10000;
        SELECT id INTO v_id FROM (
            SELECT id, sum(width) OVER (ORDER BY position) AS upto FROM plpg_variants WHERE experiment_id = e.id) s
        WHERE pt < upto ORDER BY upto LIMIT 1;
        IF v_id IS NULL THEN
            RETURN NULL;
        END IF;
        INSERT INTO plpg_assignments (experiment_id, user_id, variant_id) VALUES (e.id, p_user, v_id)
        ON CONFLICT DO NOTHING;
    END IF;
    SELECT jsonb_build_object('variant', name, 'is_control', is_control, 'config', config) INTO result
    FROM plpg_variants WHERE id = v_id;
    RETURN result;
END;
$$;

CREATE FUNCTION plpg_record_result(p_experiment text, p_metric text, p_value float8, p_user text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    e plpg_experiments;
    v_id bigint;
BEGIN
    SELECT * INTO e FROM plpg_experiments WHERE name = p_experiment;
    IF NOT FOUND OR e.status <> 'running' THEN
        RETURN false;
    END IF;
    SELECT variant_id INTO v_id FROM plpg_assignments WHERE experiment_id = e.id AND user_id = p_user;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO plpg_results (experiment_id, variant_id, user_id, metric_name, metric_value)
    VALUES (e.id, v_id, p_user, p_metric, p_value);
    RETURN true;
END;
$$;
SELECT count(plpg_get_variant('bench', 'user-' || g)) FROM generate_series(1, 100000) g;
VACUUM ANALYZE;
