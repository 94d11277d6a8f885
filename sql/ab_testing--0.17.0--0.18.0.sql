-- 0.17.0 -> 0.18.0.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.
\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.18.0'" to load this file. \quit
