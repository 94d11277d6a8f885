-- 0.12.0 -> 0.13.0.
-- tests/client/test_operations.py checks that an upgraded database matches a fresh install
-- object by object.
\echo Use "ALTER EXTENSION ab_testing UPDATE TO '0.13.0'" to load this file. \quit

-- Recording at pool scale: room on ab_user_metrics' pages for its rows' updates to be HOT
-- (no new index entry). Only pages written from now on keep it: existing pages are
-- rewritten by VACUUM FULL or CLUSTER (see docs/performance.md), not by this update.
ALTER TABLE @extschema@.ab_user_metrics SET (fillfactor = 90);
