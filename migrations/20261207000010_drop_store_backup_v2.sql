-- The contract step of 20261206000007: `store_backup` (as 20261202000006 made it) has had no
-- caller since the release that brought store_backup_v3, and the oldest binary that may serve
-- on this schema (schema_compatibility) calls store_backup_v3 or store_backup_v4. The upload's
-- function now lives in src/db/sql/ and is installed by `migrate` after the migrations.
SET LOCAL lock_timeout = '5s';

-- The contract step squawk cannot know is safe: nothing that serves on this schema calls it.
-- squawk-ignore ban-drop-function
DROP FUNCTION store_backup(uuid, uuid, integer, bytea, bytea[], bytea[], text[], integer, text);

INSERT INTO schema_compatibility (version, oldest_compatible) VALUES (20261207000010, 20261206000007);
