-- Tables of the ab_testing extension.
--
-- No foreign keys link these tables: Citus cannot turn extension-owned tables linked by
-- foreign keys into reference tables. The extension's functions are the only writers and
-- keep the links intact; CHECK and UNIQUE constraints hold every invariant they can.
-- Every PRIMARY KEY and UNIQUE constraint of the per-user tables includes user_id,
-- the column they are distributed by. User ids compare bytewise (COLLATE "C"): they are
-- identifiers, not words, and the hot path's index probe is then a memcmp.

-- Names, ids and attributes are Unicode throughout: the extension works only in a UTF8
-- database (in another encoding, non-ASCII text would fail inside the library).
DO $$
BEGIN
    IF pg_catalog.getdatabaseencoding() OPERATOR(pg_catalog.<>) 'UTF8' THEN
        RAISE EXCEPTION 'ab_testing needs a UTF8 database, and database "%" is %',
            pg_catalog.current_database(), pg_catalog.getdatabaseencoding()
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'create the database with ENCODING ''UTF8'' (CREATE DATABASE ... ENCODING ''UTF8'' TEMPLATE template0) and install the extension there';
    END IF;
END
$$;

-- The extension's SECURITY DEFINER functions name its objects by schema: a role that owns
-- that schema could rename it and put objects of its own under those names. Only a
-- superuser may own it (for public, owned by pg_database_owner: the database's owner). Nor
-- may another role create objects there: this script runs with the schema on its search_path,
-- and an operator or function of theirs that matches an expression here better than
-- pg_catalog's would run as the role installing the extension (and be bound into its views
-- and constraints). Every comparison below names pg_catalog's operators.
DO $$
DECLARE
    owner oid := (SELECT CASE WHEN n.nspowner OPERATOR(pg_catalog.=) 'pg_database_owner'::pg_catalog.regrole::pg_catalog.oid
                              THEN d.datdba ELSE n.nspowner END
                  FROM pg_catalog.pg_namespace n, pg_catalog.pg_database d
                  WHERE n.oid OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid
                    AND d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database());
    creators text;
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) owner) THEN
        RAISE EXCEPTION 'ab_testing must be installed in a schema owned by a superuser, and schema "%" is owned by role "%"',
            '@extschema@', pg_catalog.pg_get_userbyid(owner)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'that role could put its own objects in place of the extension''s: create a schema owned by a superuser (CREATE SCHEMA ab_testing AUTHORIZATION postgres) and install the extension there (CREATE EXTENSION ab_testing SCHEMA ab_testing)';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname::pg_catalog.text), ', ' ORDER BY r.rolname)
      INTO creators
      FROM pg_catalog.pg_roles r
     WHERE NOT r.rolsuper AND NOT r.rolname::pg_catalog.text OPERATOR(pg_catalog.^@) 'pg_'::pg_catalog.text
       AND pg_catalog.has_schema_privilege(r.oid, '@extschema@'::pg_catalog.regnamespace::pg_catalog.oid, 'CREATE'::pg_catalog.text);
    IF creators IS NOT NULL THEN
        RAISE EXCEPTION 'ab_testing must be installed in a schema where only superusers may create objects, and in schema "%" so may: %',
            '@extschema@', creators
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'an operator or function they create there could run as the role installing the extension: create a schema of its own (CREATE SCHEMA ab_testing AUTHORIZATION postgres) and install the extension there (CREATE EXTENSION ab_testing SCHEMA ab_testing), or REVOKE CREATE ON SCHEMA from them';
    END IF;
END
$$;

CREATE TABLE ab_experiments (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL UNIQUE
                     CHECK (btrim(name) <> '' AND char_length(name) <= 200),
    description      text NOT NULL DEFAULT '',
    experiment_type  text NOT NULL
                     CHECK (experiment_type IN ('prompt', 'model', 'agent_config', 'feature', 'ui', 'workflow')),
    status           text NOT NULL DEFAULT 'draft'
                     CHECK (status IN ('draft', 'running', 'stopped')),
    primary_metric   text NOT NULL CHECK (btrim(primary_metric) <> ''),
    metrics          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metrics) = 'object'),
    target_segments  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(target_segments) = 'object'),
    min_sample_size  bigint NOT NULL DEFAULT 100 CHECK (min_sample_size >= 2),
    alpha            float8 NOT NULL DEFAULT 0.05 CHECK (alpha > 0 AND alpha < 1),
    sequential_tuning float8 CHECK (sequential_tuning >= 1),
    correction       text NOT NULL DEFAULT 'holm' CHECK (correction IN ('holm', 'bh')),
    power            float8 NOT NULL DEFAULT 0.8 CHECK (power > 0 AND power < 1),
    salt             text NOT NULL DEFAULT pg_catalog.gen_random_uuid()::text,
    winner_variant   text,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at       timestamptz,
    stopped_at       timestamptz,
    strict_metrics   boolean NOT NULL DEFAULT false,
    allocation       jsonb CHECK (jsonb_typeof(allocation) = 'object'),
    breakdowns       text[] NOT NULL DEFAULT '{}' CHECK (cardinality(breakdowns) <= 5),
    randomization_unit text CONSTRAINT ab_experiments_randomization_unit_check
                     CHECK (randomization_unit IS NULL OR randomization_unit = ANY (breakdowns)),
    CHECK (status = 'draft' OR started_at IS NOT NULL),
    CHECK (status <> 'stopped' OR stopped_at IS NOT NULL),
    CHECK (winner_variant IS NULL OR status = 'stopped')
);

CREATE TABLE ab_variants (
    id                  bigserial PRIMARY KEY,
    experiment_id       bigint NOT NULL,
    name                text NOT NULL CHECK (btrim(name) <> '' AND char_length(name) <= 200),
    position            integer NOT NULL CHECK (position >= 0),
    is_control          boolean NOT NULL DEFAULT false,
    traffic_allocation  float8 NOT NULL
                        CHECK (traffic_allocation >= 0 AND traffic_allocation <= 100
                               AND abs(traffic_allocation * 100 - round(traffic_allocation * 100)) < 1e-6),
    config              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    UNIQUE (experiment_id, name),
    UNIQUE (experiment_id, position)
);
CREATE UNIQUE INDEX ab_variants_one_control ON ab_variants (experiment_id) WHERE is_control;

-- Exactly one control per experiment and allocations summing to at most 100, checked at
-- commit so that a transaction may rearrange variants in several statements.
CREATE FUNCTION ab_check_variants() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    experiment bigint := CASE WHEN TG_OP = 'DELETE' THEN OLD.experiment_id ELSE NEW.experiment_id END;
    variants bigint;
    controls bigint;
    total_bp numeric;
BEGIN
    SELECT count(*), count(*) FILTER (WHERE is_control), coalesce(sum(round((traffic_allocation * 100)::numeric)), 0)
      INTO variants, controls, total_bp
      FROM @extschema@.ab_variants WHERE experiment_id = experiment;
    IF variants > 0 AND controls <> 1 THEN
        RAISE EXCEPTION 'experiment with id % has % control variants, must have exactly one', experiment, controls
            USING ERRCODE = 'check_violation';
    END IF;
    IF total_bp > 10000 THEN
        RAISE EXCEPTION 'traffic allocations of experiment with id % sum to %, must be at most 100', experiment, round(total_bp / 100, 2)
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER ab_variants_check
    AFTER INSERT OR UPDATE OR DELETE ON ab_variants
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ab_check_variants();

CREATE TABLE ab_assignments (
    experiment_id  bigint NOT NULL,
    user_id        text COLLATE "C" NOT NULL CHECK (user_id <> ''),
    variant_id     bigint NOT NULL,
    session_id     text,
    assigned_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    period         integer NOT NULL DEFAULT 0 CHECK (period >= 0),
    attributes     jsonb CHECK (jsonb_typeof(attributes) = 'object'),
    PRIMARY KEY (experiment_id, user_id)
);
CREATE INDEX ab_assignments_variant ON ab_assignments (experiment_id, variant_id);

CREATE TABLE ab_results (
    id             bigserial,
    experiment_id  bigint NOT NULL,
    variant_id     bigint NOT NULL,
    user_id        text COLLATE "C" NOT NULL CHECK (user_id <> ''),
    metric_name    text NOT NULL CHECK (btrim(metric_name) <> '' AND char_length(metric_name) <= 200),
    metric_value   float8 NOT NULL CHECK (metric_value >= -1e15 AND metric_value <= 1e15),
    session_id     text,
    recorded_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (user_id, id)
);
CREATE INDEX ab_results_experiment ON ab_results (experiment_id, metric_name);

-- Per-user state of each metric, kept by ab_record_result in the same statement as the result
-- it records: the analysis reads one row per user and metric instead of every result. Exact
-- by construction (a result and its state change commit or roll back together);
-- ab_rebuild_user_metrics recomputes it from ab_results after a direct change to that table.
CREATE TABLE ab_user_metrics (
    experiment_id  bigint NOT NULL,
    metric_name    text NOT NULL,
    user_id        text COLLATE "C" NOT NULL,
    variant_id     bigint NOT NULL,
    n              bigint NOT NULL CHECK (n > 0),
    total          float8 NOT NULL,
    max            float8 NOT NULL,
    PRIMARY KEY (experiment_id, metric_name, user_id, variant_id)
-- Every result updates its user's row (n, total, max: in no index). Room left on each page
-- lets the new version stay on the old one's page: a HOT update, no new index entry.
) WITH (fillfactor = 90);

-- The weight periods of bandit experiments: period 0 holds the traffic allocations the
-- experiment started with, each ab_reweight that changes them adds the next. A user's
-- assignment records the period whose weights assigned them.
CREATE TABLE ab_allocations (
    experiment_id  bigint NOT NULL,
    period         integer NOT NULL CHECK (period >= 0),
    started_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    weights        jsonb NOT NULL CHECK (jsonb_typeof(weights) = 'object'),
    posterior      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(posterior) = 'object'),
    PRIMARY KEY (experiment_id, period)
);

CREATE TABLE ab_covariates (
    experiment_id  bigint NOT NULL,
    user_id        text COLLATE "C" NOT NULL CHECK (user_id <> ''),
    metric_name    text NOT NULL CHECK (btrim(metric_name) <> '' AND char_length(metric_name) <= 200),
    value          float8 NOT NULL CHECK (value >= -1e15 AND value <= 1e15),
    recorded_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (experiment_id, user_id, metric_name)
);

CREATE TABLE ab_insights (
    id              bigserial PRIMARY KEY,
    experiment_id   bigint NOT NULL,
    computed_at     timestamptz NOT NULL,
    metric_name     text NOT NULL,
    variant         text NOT NULL,
    is_control      boolean NOT NULL,
    users           bigint NOT NULL,
    mean            float8,
    std_dev         float8,
    diff            float8,
    ci_lower        float8,
    ci_upper        float8,
    relative_lift   float8,
    p_value         float8,
    significant     boolean,
    effect_size     float8,
    recommendation  text NOT NULL,
    confidence      float8,
    metric_type     text NOT NULL DEFAULT 'continuous',
    test            text,
    p_value_adjusted float8,
    chance_to_beat_control float8,
    expected_loss   float8,
    users_needed    bigint,
    srm_p_value     float8,
    cuped_diff      float8,
    cuped_ci_lower  float8,
    cuped_ci_upper  float8,
    cuped_p_value   float8,
    cuped_variance_reduction float8,
    relative_lift_ci_lower float8,
    relative_lift_ci_upper float8,
    relative_lift_p_value float8,
    margin          float8,
    non_inferiority_p_value float8,
    non_inferior    boolean,
    source_reads    jsonb,
    computed_by     name
);
CREATE INDEX ab_insights_experiment ON ab_insights (experiment_id, computed_at);

-- Who created, started, stopped or deleted an experiment, and when: written by the lifecycle
-- functions (not a trigger, which would fire again while pg_restore reloads the tables).
-- Rows outlive the experiment they describe.
CREATE TABLE ab_audit (
    id               bigserial PRIMARY KEY,
    experiment_id    bigint NOT NULL,
    experiment_name  text NOT NULL,
    action           text NOT NULL CHECK (action IN ('created', 'started', 'stopped', 'deleted',
                                                 'stepped', 'rolled_back', 'resumed', 'shipped', 'completed')),
    detail           jsonb NOT NULL DEFAULT '{}',
    role_name        name NOT NULL DEFAULT current_user,
    session_role     name NOT NULL DEFAULT session_user,
    at               timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
CREATE INDEX ab_audit_experiment ON ab_audit (experiment_id, at);

-- Layers: the experiments of one layer never share a user. A user's layer point (the same
-- hash as an experiment's bucket, with the layer's salt) below the holdout keeps the user
-- out of every experiment of the layer; each experiment owns a range of the points above it.
CREATE TABLE ab_layers (
    id                  bigserial PRIMARY KEY,
    name                text NOT NULL UNIQUE CHECK (btrim(name) <> '' AND char_length(name) <= 200),
    description         text NOT NULL DEFAULT '',
    holdout_percentage  float8 NOT NULL DEFAULT 0
                        CHECK (holdout_percentage >= 0 AND holdout_percentage < 100
                               AND abs(holdout_percentage * 100 - round(holdout_percentage * 100)) < 1e-6),
    salt                text NOT NULL DEFAULT pg_catalog.gen_random_uuid()::text,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- The experiments of each layer and the layer points [range_start, range_end) each owns;
-- a holdout experiment (which measures the holdout against everyone else) owns no range.
CREATE TABLE ab_layer_experiments (
    experiment_id  bigint PRIMARY KEY,
    layer_id       bigint NOT NULL,
    range_start    integer,
    range_end      integer,
    CHECK ((range_start IS NULL) = (range_end IS NULL)),
    CHECK (range_start >= 0 AND range_start < range_end AND range_end <= 10000)
);
CREATE INDEX ab_layer_experiments_layer ON ab_layer_experiments (layer_id);

-- The ranges of a layer's draft and running experiments are disjoint and above its holdout,
-- for edits by hand too. A range whose layer is missing is let through: pg_restore loads
-- ab_layer_experiments before ab_layers.
CREATE FUNCTION ab_check_layer_ranges() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    holdout_bp integer;
    other text;
BEGIN
    IF NEW.range_start IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT round(holdout_percentage * 100)::integer INTO holdout_bp FROM @extschema@.ab_layers WHERE id = NEW.layer_id;
    IF FOUND AND NEW.range_start < holdout_bp THEN
        RAISE EXCEPTION 'layer range [%, %) of experiment with id % reaches into the layer''s holdout [0, %)',
            NEW.range_start, NEW.range_end, NEW.experiment_id, holdout_bp
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT e.name INTO other
      FROM @extschema@.ab_layer_experiments m JOIN @extschema@.ab_experiments e ON e.id = m.experiment_id
     WHERE m.layer_id = NEW.layer_id AND m.experiment_id <> NEW.experiment_id AND e.status <> 'stopped'
       AND m.range_start < NEW.range_end AND NEW.range_start < m.range_end
       AND EXISTS (SELECT 1 FROM @extschema@.ab_experiments s WHERE s.id = NEW.experiment_id AND s.status <> 'stopped')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'layer range [%, %) of experiment with id % overlaps the range of experiment "%"',
            NEW.range_start, NEW.range_end, NEW.experiment_id, other
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER ab_layer_experiments_disjoint
    AFTER INSERT OR UPDATE ON ab_layer_experiments
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ab_check_layer_ranges();

-- A layer's salt and holdout decide who is where: they cannot change under its experiments.
CREATE FUNCTION ab_check_layer_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (NEW.salt, NEW.holdout_percentage) IS DISTINCT FROM (OLD.salt, OLD.holdout_percentage)
       AND EXISTS (SELECT 1 FROM @extschema@.ab_layer_experiments WHERE layer_id = OLD.id) THEN
        RAISE EXCEPTION 'layer "%" has experiments, so its salt and holdout cannot change', OLD.name
            USING ERRCODE = 'object_in_use', HINT = 'create a new layer instead';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER ab_layers_check_update
    BEFORE UPDATE ON ab_layers
    FOR EACH ROW EXECUTE FUNCTION ab_check_layer_update();

-- Metric sources registered for any experiment to read (ab_create_metric_source): a
-- relation of the application's and its columns, by name, never SQL text.
CREATE TABLE ab_metric_sources (
    name        text PRIMARY KEY CHECK (btrim(name) <> '' AND char_length(name) <= 200),
    definition  jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    created_by  name NOT NULL DEFAULT current_user,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Keep the data in pg_dump: one call per statement (each updates pg_extension's row).
SELECT pg_catalog.pg_extension_config_dump('ab_experiments', '');
SELECT pg_catalog.pg_extension_config_dump('ab_experiments_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ab_variants', '');
SELECT pg_catalog.pg_extension_config_dump('ab_variants_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ab_assignments', '');
SELECT pg_catalog.pg_extension_config_dump('ab_results', '');
SELECT pg_catalog.pg_extension_config_dump('ab_results_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ab_covariates', '');
SELECT pg_catalog.pg_extension_config_dump('ab_allocations', '');
SELECT pg_catalog.pg_extension_config_dump('ab_user_metrics', '');
SELECT pg_catalog.pg_extension_config_dump('ab_insights', '');
SELECT pg_catalog.pg_extension_config_dump('ab_insights_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ab_audit', '');
SELECT pg_catalog.pg_extension_config_dump('ab_audit_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ab_layers', '');
SELECT pg_catalog.pg_extension_config_dump('ab_layers_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ab_layer_experiments', '');
SELECT pg_catalog.pg_extension_config_dump('ab_metric_sources', '');

CREATE VIEW ab_experiment_overview AS
SELECT e.id,
       e.name,
       e.experiment_type,
       e.status,
       e.primary_metric,
       (SELECT count(*) FROM ab_variants v WHERE v.experiment_id = e.id) AS variants,
       (SELECT count(*) FROM ab_assignments a WHERE a.experiment_id = e.id) AS users_assigned,
       (SELECT coalesce(sum(m.n), 0)::bigint FROM ab_user_metrics m WHERE m.experiment_id = e.id) AS results_recorded,
       e.winner_variant,
       e.created_at,
       e.started_at,
       e.stopped_at
FROM ab_experiments e;

COMMENT ON TABLE ab_experiments IS 'A/B experiments: definition, lifecycle status and the declared winner. Written only by the ab_* functions.';
COMMENT ON COLUMN ab_experiments.id IS 'Experiment id; every function that takes an experiment name also takes this id.';
COMMENT ON COLUMN ab_experiments.name IS 'Unique name, as passed to ab_get_variant and the other functions.';
COMMENT ON COLUMN ab_experiments.description IS 'Free text describing the hypothesis.';
COMMENT ON COLUMN ab_experiments.experiment_type IS 'What is tested: prompt, model, agent_config, feature, ui or workflow.';
COMMENT ON COLUMN ab_experiments.status IS 'draft (created), running (assigning users and recording results) or stopped.';
COMMENT ON COLUMN ab_experiments.primary_metric IS 'The metric that decides the winner.';
COMMENT ON COLUMN ab_experiments.metrics IS 'Per metric: {"type": continuous|binary|ratio|quantile, "aggregation": mean|sum|count|max per user, "direction": higher|lower is better, "mde", "margin" (a guardrail''s non-inferiority margin), "cap"; a ratio also "numerator" and "denominator"; a quantile "of", "quantile" and "level": user|event}.';
COMMENT ON COLUMN ab_experiments.target_segments IS 'Conditions on the attributes passed to ab_get_variant; all must hold for a user to be enrolled.';
COMMENT ON COLUMN ab_experiments.min_sample_size IS 'Users each variant needs before a winner may be declared.';
COMMENT ON COLUMN ab_experiments.alpha IS 'Significance level of the tests (default 0.05).';
COMMENT ON COLUMN ab_experiments.sequential_tuning IS 'N* of the always-valid confidence sequences in sequential mode; NULL for fixed-horizon tests.';
COMMENT ON COLUMN ab_experiments.correction IS 'Adjustment of p-values across treatments: holm (family-wise) or bh (false discovery rate).';
COMMENT ON COLUMN ab_experiments.power IS 'Power used for the users still needed to detect each metric''s mde (default 0.8).';
COMMENT ON COLUMN ab_experiments.salt IS 'Hashing salt fixed at creation: with the user id it decides the variant.';
COMMENT ON COLUMN ab_experiments.winner_variant IS 'Variant declared the winner by ab_stop_experiment, or NULL.';
COMMENT ON COLUMN ab_experiments.created_at IS 'When the experiment was created.';
COMMENT ON COLUMN ab_experiments.started_at IS 'When ab_start_experiment ran.';
COMMENT ON COLUMN ab_experiments.stopped_at IS 'When ab_stop_experiment ran.';
COMMENT ON COLUMN ab_experiments.allocation IS 'NULL for fixed traffic allocations; for a bandit {"mode": "bandit", "metric", "update_every", "min_share", "burn_in_users"}; for a rollout {"mode": "rollout", "steps", "step_every", "step", "state"} (state ramping, rolled_back or completed).';
COMMENT ON COLUMN ab_experiments.breakdowns IS 'Attributes of the users stored with each assignment, to break the analysis down by (ab_breakdown).';
COMMENT ON COLUMN ab_experiments.randomization_unit IS 'A cluster-randomized experiment''s unit: the attribute (one of breakdowns) whose value every user of a cluster shares; users are bucketed by it. NULL: users are randomized one by one.';
COMMENT ON COLUMN ab_experiments.strict_metrics IS 'When true, results and covariates are accepted only under the metric names declared in metrics (the default when a definition declares metrics).';

COMMENT ON TABLE ab_variants IS 'Variants of each experiment, in creation order; exactly one is the control.';
COMMENT ON COLUMN ab_variants.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_variants.name IS 'Variant name, unique within its experiment.';
COMMENT ON COLUMN ab_variants.position IS 'Creation order; variants take consecutive hash ranges in this order.';
COMMENT ON COLUMN ab_variants.is_control IS 'True for the baseline every other variant is compared with.';
COMMENT ON COLUMN ab_variants.traffic_allocation IS 'Percentage of users (two decimals) sent to this variant; the remainder of 100 is not enrolled.';
COMMENT ON COLUMN ab_variants.config IS 'What the application applies for this variant (prompt, model, settings), returned by ab_get_variant.';

COMMENT ON FUNCTION ab_check_variants() IS 'Constraint trigger: exactly one control per experiment, allocations summing to at most 100.';

COMMENT ON TABLE ab_user_metrics IS 'Per-user state of each metric (results count, sum and maximum), kept with every ab_record_result; what ab_analyze reads.';
COMMENT ON COLUMN ab_user_metrics.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_user_metrics.metric_name IS 'Metric name, as recorded in ab_results.';
COMMENT ON COLUMN ab_user_metrics.user_id IS 'The application''s user identifier.';
COMMENT ON COLUMN ab_user_metrics.variant_id IS 'ab_variants.id of the variant the results were recorded against.';
COMMENT ON COLUMN ab_user_metrics.n IS 'Number of the user''s results for the metric.';
COMMENT ON COLUMN ab_user_metrics.total IS 'Sum of the user''s values for the metric.';
COMMENT ON COLUMN ab_user_metrics.max IS 'Largest of the user''s values for the metric.';

COMMENT ON TABLE ab_assignments IS 'The sticky variant of each enrolled user: one row per experiment and user.';
COMMENT ON COLUMN ab_assignments.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_assignments.user_id IS 'The application''s user identifier.';
COMMENT ON COLUMN ab_assignments.variant_id IS 'ab_variants.id of the assigned variant.';
COMMENT ON COLUMN ab_assignments.session_id IS 'Session of the first ab_get_variant call, if given.';
COMMENT ON COLUMN ab_assignments.assigned_at IS 'When the user was first assigned.';
COMMENT ON COLUMN ab_assignments.period IS 'For a bandit experiment, the weight period (ab_allocations) whose weights assigned the user; 0 otherwise.';
COMMENT ON COLUMN ab_assignments.attributes IS 'The attributes listed in the experiment''s breakdowns that the user had at enrollment, as text; NULL when none.';

COMMENT ON TABLE ab_allocations IS 'Every weight period of each bandit experiment: when it began, the weights and the posterior that produced them.';
COMMENT ON COLUMN ab_allocations.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_allocations.period IS 'Period number: 0 for the starting allocations, then one more per change.';
COMMENT ON COLUMN ab_allocations.started_at IS 'When these weights took effect (the transaction time of the start or of ab_reweight).';
COMMENT ON COLUMN ab_allocations.weights IS 'Traffic allocation of each variant in percent, by variant name.';
COMMENT ON COLUMN ab_allocations.posterior IS 'Per variant, what the weights were computed from: users, posterior mean and sd of the metric, chance to be best; empty for period 0.';

COMMENT ON TABLE ab_results IS 'Metric observations recorded by ab_record_result against the user''s assigned variant.';
COMMENT ON COLUMN ab_results.id IS 'Result id (with user_id, the primary key).';
COMMENT ON COLUMN ab_results.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_results.variant_id IS 'ab_variants.id of the user''s variant when the result was recorded.';
COMMENT ON COLUMN ab_results.user_id IS 'The application''s user identifier.';
COMMENT ON COLUMN ab_results.metric_name IS 'Metric name, such as resolution_rate or response_time.';
COMMENT ON COLUMN ab_results.metric_value IS 'Observed value, between -1e15 and 1e15 (so that no analysis can overflow).';
COMMENT ON COLUMN ab_results.session_id IS 'Session the observation came from, if given.';
COMMENT ON COLUMN ab_results.recorded_at IS 'When the result was recorded.';

COMMENT ON TABLE ab_covariates IS 'Pre-experiment covariate per user and metric (CUPED), recorded by ab_record_covariate.';
COMMENT ON COLUMN ab_covariates.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_covariates.user_id IS 'The application''s user identifier.';
COMMENT ON COLUMN ab_covariates.metric_name IS 'Metric whose variance the covariate reduces.';
COMMENT ON COLUMN ab_covariates.value IS 'The user''s value before the experiment (for instance the same metric over the previous month), between -1e15 and 1e15.';
COMMENT ON COLUMN ab_covariates.recorded_at IS 'When the covariate was last recorded.';

COMMENT ON TABLE ab_insights IS 'Stored output of every ab_analyze run: one row per metric and variant.';
COMMENT ON COLUMN ab_insights.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_insights.computed_at IS 'Transaction time of the analysis; rows of one run share it.';
COMMENT ON COLUMN ab_insights.metric_name IS 'Metric analysed.';
COMMENT ON COLUMN ab_insights.variant IS 'Variant name.';
COMMENT ON COLUMN ab_insights.is_control IS 'True for the control row (its comparison columns are NULL).';
COMMENT ON COLUMN ab_insights.users IS 'Users in the analysis of this metric and variant.';
COMMENT ON COLUMN ab_insights.mean IS 'Mean of the per-user values.';
COMMENT ON COLUMN ab_insights.std_dev IS 'Sample standard deviation of the per-user values.';
COMMENT ON COLUMN ab_insights.diff IS 'Mean difference, variant minus control.';
COMMENT ON COLUMN ab_insights.ci_lower IS 'Lower bound of the confidence interval of diff (level 1 - alpha).';
COMMENT ON COLUMN ab_insights.ci_upper IS 'Upper bound of the confidence interval of diff.';
COMMENT ON COLUMN ab_insights.relative_lift IS 'diff / |control mean|; NULL when the control mean is 0.';
COMMENT ON COLUMN ab_insights.p_value IS 'Two-sided p-value against the control (Welch t-test, or z-test for binary metrics; always-valid in sequential mode).';
COMMENT ON COLUMN ab_insights.significant IS 'Adjusted p-value below alpha.';
COMMENT ON COLUMN ab_insights.effect_size IS 'Cohen''s d.';
COMMENT ON COLUMN ab_insights.recommendation IS 'What the row means, in words.';
COMMENT ON COLUMN ab_insights.confidence IS '1 - adjusted p-value; not a probability that the variant is better.';
COMMENT ON COLUMN ab_insights.metric_type IS 'continuous, binary, ratio or quantile.';
COMMENT ON COLUMN ab_insights.test IS 'welch, z, stratified (bandit experiments) or cluster (cluster-robust, in a cluster-randomized experiment), with -sequential in sequential mode.';
COMMENT ON COLUMN ab_insights.p_value_adjusted IS 'p-value adjusted across the metric''s treatments (Holm or Benjamini-Hochberg).';
COMMENT ON COLUMN ab_insights.chance_to_beat_control IS 'Posterior probability that the variant is better than the control (flat prior).';
COMMENT ON COLUMN ab_insights.expected_loss IS 'Expected loss of shipping the variant, in the metric''s units (flat prior).';
COMMENT ON COLUMN ab_insights.users_needed IS 'Users each variant still needs to detect the metric''s mde; NULL without an mde.';
COMMENT ON COLUMN ab_insights.srm_p_value IS 'Sample ratio mismatch chi-square p-value of the experiment''s assignments; below 0.001 no winner is declared.';
COMMENT ON COLUMN ab_insights.cuped_diff IS 'CUPED-adjusted difference, when covariates were recorded.';
COMMENT ON COLUMN ab_insights.cuped_ci_lower IS 'Lower bound of the CUPED-adjusted confidence interval.';
COMMENT ON COLUMN ab_insights.cuped_ci_upper IS 'Upper bound of the CUPED-adjusted confidence interval.';
COMMENT ON COLUMN ab_insights.cuped_p_value IS 'p-value of the CUPED-adjusted comparison.';
COMMENT ON COLUMN ab_insights.cuped_variance_reduction IS 'Share of the variance of the difference removed by CUPED.';
COMMENT ON COLUMN ab_insights.relative_lift_ci_lower IS 'Lower bound of the confidence interval of relative_lift (delta method).';
COMMENT ON COLUMN ab_insights.relative_lift_ci_upper IS 'Upper bound of the confidence interval of relative_lift (delta method).';
COMMENT ON COLUMN ab_insights.relative_lift_p_value IS 'Two-sided p-value of relative_lift against 0 (delta method).';
COMMENT ON COLUMN ab_insights.margin IS 'The metric''s non-inferiority margin (a guardrail), in its units; NULL without one.';
COMMENT ON COLUMN ab_insights.non_inferiority_p_value IS 'One-sided p-value of "the variant is worse than the control by the margin or more".';
COMMENT ON COLUMN ab_insights.source_reads IS 'For an analysis that read metric sources: the relations and columns it read, as [{"schema", "relation", "columns"}]; the views over ab_insights show the row only to roles that may read them all (or that hold the privileges of computed_by). NULL otherwise.';
COMMENT ON COLUMN ab_insights.computed_by IS 'The role that ran the analysis (the session''s, as SET ROLE left it).';
COMMENT ON COLUMN ab_insights.non_inferior IS 'Shown to be no worse than the control by the margin: the non-inferiority p-value, adjusted across the metric''s treatments, below alpha.';

COMMENT ON TABLE ab_metric_sources IS 'Metric sources any experiment may name in a metric''s "source": a table or view of the application''s, with its user, time, value columns and filter (ab_create_metric_source).';
COMMENT ON COLUMN ab_metric_sources.name IS 'What a metric''s "source" names (NFC).';
COMMENT ON COLUMN ab_metric_sources.created_by IS 'The role that registered the source.';
COMMENT ON COLUMN ab_metric_sources.created_at IS 'When it was registered.';
COMMENT ON COLUMN ab_metric_sources.definition IS 'relation (schema-qualified), user_column, time_column, value_column, filter: names checked against the catalog.';
COMMENT ON TABLE ab_audit IS 'Who created, started, stopped or deleted each experiment through the ab_* functions, and when; kept after the experiment is deleted.';
COMMENT ON COLUMN ab_audit.experiment_id IS 'ab_experiments.id of the experiment (which may no longer exist).';
COMMENT ON COLUMN ab_audit.experiment_name IS 'The experiment''s name at the time.';
COMMENT ON COLUMN ab_audit.action IS 'created, started, stopped or deleted.';
COMMENT ON COLUMN ab_audit.detail IS 'The declared winner of a stop; the type of a creation, and the layer and range an experiment was placed in.';
COMMENT ON COLUMN ab_audit.role_name IS 'The role that made the change (current_user).';
COMMENT ON COLUMN ab_audit.session_role IS 'The role that logged in (session_user).';
COMMENT ON COLUMN ab_audit.at IS 'When the change was made.';

COMMENT ON VIEW ab_experiment_overview IS 'Every experiment with its status, type, primary metric, users assigned, results recorded and dates.';

COMMENT ON TABLE ab_layers IS 'Layers of mutually exclusive experiments, each with a holdout kept out of all of them; made by ab_create_layer.';
COMMENT ON COLUMN ab_layers.name IS 'Unique name, as given in an experiment definition''s "layer".';
COMMENT ON COLUMN ab_layers.description IS 'Free text.';
COMMENT ON COLUMN ab_layers.holdout_percentage IS 'Percentage of users (two decimals) kept out of every experiment of the layer: those whose layer point is below holdout_percentage * 100.';
COMMENT ON COLUMN ab_layers.salt IS 'Hashing salt of the layer points: with the user id it decides where in the layer a user falls.';
COMMENT ON COLUMN ab_layers.created_at IS 'When the layer was created.';
COMMENT ON TABLE ab_layer_experiments IS 'The experiments of each layer and the range of layer points each owns.';
COMMENT ON COLUMN ab_layer_experiments.experiment_id IS 'ab_experiments.id of the experiment.';
COMMENT ON COLUMN ab_layer_experiments.layer_id IS 'ab_layers.id of the layer.';
COMMENT ON COLUMN ab_layer_experiments.range_start IS 'First layer point (of 0-9999) the experiment may enroll; NULL for a holdout experiment.';
COMMENT ON COLUMN ab_layer_experiments.range_end IS 'End (exclusive) of the experiment''s layer points; NULL for a holdout experiment.';
COMMENT ON FUNCTION ab_check_layer_ranges() IS 'Constraint trigger: the ranges of a layer''s draft and running experiments are disjoint and above its holdout.';
COMMENT ON FUNCTION ab_check_layer_update() IS 'Trigger: a layer''s salt and holdout cannot change once it has experiments.';
