-- 0.16.0 -> 0.17.0.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.
\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.17.0'" to load this file. \quit

-- ab_record_result pins search_path inside its code, as ab_get_variant does, instead of with
-- a SET clause, which cost every call on the hot path.
ALTER FUNCTION @extschema@.ab_record_result(pg_catalog.text, pg_catalog.text, pg_catalog.float8, pg_catalog.text, pg_catalog.text) RESET search_path;
ALTER FUNCTION @extschema@.ab_record_result(pg_catalog.int8, pg_catalog.text, pg_catalog.float8, pg_catalog.text, pg_catalog.text) RESET search_path;
