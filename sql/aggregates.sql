-- Mergeable moments as aggregates. The state is PostgreSQL's own Youngs-Cramer state
-- (float8_accum / float8_regr_accum: count, sums and centered sums of squares and products,
-- never a raw sum of squares), so partial states merge exactly with float8_combine and
-- float8_regr_combine: the planner can run them in parallel workers, and Citus on shards.

CREATE FUNCTION ab_moments_final(state float8[]) RETURNS float8[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN ARRAY[state[1],
             CASE WHEN state[1] > 0 THEN state[2] / state[1] END,
             state[3]];

CREATE AGGREGATE ab_moments(float8) (
    SFUNC = pg_catalog.float8_accum,
    STYPE = float8[],
    INITCOND = '{0,0,0}',
    COMBINEFUNC = pg_catalog.float8_combine,
    FINALFUNC = ab_moments_final,
    PARALLEL = SAFE
);

CREATE FUNCTION ab_comoments_final(state float8[]) RETURNS float8[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN ARRAY[state[1],
             CASE WHEN state[1] > 0 THEN state[4] / state[1] END,
             CASE WHEN state[1] > 0 THEN state[2] / state[1] END,
             state[5], state[3], state[6]];

CREATE AGGREGATE ab_comoments(y float8, x float8) (
    SFUNC = pg_catalog.float8_regr_accum,
    STYPE = float8[],
    INITCOND = '{0,0,0,0,0,0}',
    COMBINEFUNC = pg_catalog.float8_regr_combine,
    FINALFUNC = ab_comoments_final,
    PARALLEL = SAFE
);

COMMENT ON FUNCTION ab_moments_final(float8[]) IS 'Final function of ab_moments: {n, mean, M2} from the Youngs-Cramer state.';
COMMENT ON AGGREGATE ab_moments(float8) IS 'Mergeable moments {n, mean, M2 (centered sum of squares)} of the values; variance = M2 / (n - 1). Parallel safe.';
COMMENT ON FUNCTION ab_comoments_final(float8[]) IS 'Final function of ab_comoments: {n, mean_y, mean_x, M2_y, M2_x, C_xy} from the regression state.';
COMMENT ON AGGREGATE ab_comoments(float8, float8) IS 'Mergeable co-moments {n, mean_y, mean_x, M2_y, M2_x, C_xy} of (y, x), for CUPED. Parallel safe.';
