-- Installing the extension: objects, documentation, pg_dump registration, no foreign keys.
CREATE EXTENSION ab_testing;

-- Runs a statement and reports its error as SQLSTATE: message (used by every test file).
CREATE FUNCTION expect_error(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END;
$$;

SELECT p.oid::regprocedure::text AS function
FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ab_testing') AND d.classid = 'pg_proc'::regclass
ORDER BY 1;

SELECT c.relname, c.relkind
FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ab_testing') AND d.classid = 'pg_class'::regclass
ORDER BY 1;

-- Every table, column, view and function a user sees is documented.
SELECT c.relname AS undocumented_relation
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v') AND c.relname LIKE 'ab\_%'
  AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT c.relname, a.attname AS undocumented_column
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname LIKE 'ab\_%'
  AND col_description(c.oid, a.attnum) IS NULL AND a.attname <> 'id';
SELECT p.oid::regprocedure AS undocumented_function
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'ab\_%'
  AND obj_description(p.oid, 'pg_proc') IS NULL;

-- pg_dump keeps every table and sequence.
SELECT unnest(extconfig)::regclass::text AS dumped FROM pg_extension WHERE extname = 'ab_testing' ORDER BY 1;

-- No foreign keys among the tables (Citus reference tables need that).
SELECT count(*) AS foreign_keys FROM pg_constraint
WHERE contype = 'f' AND connamespace = 'public'::regnamespace;

-- Primary and unique keys of the distributed tables include user_id.
SELECT conrelid::regclass::text AS rel, conname, pg_get_constraintdef(oid)
FROM pg_constraint
WHERE conrelid IN ('ab_assignments'::regclass, 'ab_results'::regclass) AND contype IN ('p', 'u')
ORDER BY 1, 2;

-- Installing into a named schema works too, and the functions find their tables there.
CREATE SCHEMA abx;
DROP EXTENSION ab_testing;
CREATE EXTENSION ab_testing SCHEMA abx;
SELECT abx.ab_create_experiment('{"name": "schema test", "experiment_type": "ui", "primary_metric": "m",
  "variants": [{"name": "a", "is_control": true, "traffic_allocation": 50}, {"name": "b", "traffic_allocation": 50}]}');
SELECT abx.ab_start_experiment('schema test');
SELECT abx.ab_get_variant('schema test', 'user-1') IS NOT NULL AS assigned;
SELECT abx.ab_record_result('schema test', 'm', 1, 'user-1');
SELECT count(*) FROM abx.ab_results;
DROP EXTENSION ab_testing;
DROP SCHEMA abx;
CREATE EXTENSION ab_testing;
