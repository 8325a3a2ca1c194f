-- What each migration asks of the binaries that serve on it. During a deploy the release
-- before serves on the new schema; its `/readyz` reads this table to tell whether it still can:
-- a database with migrations a binary does not know is fine only while every one of them names
-- an oldest compatible schema at or below the binary's own. Every migration from now on adds
-- its row here (a test checks that each one has).
SET LOCAL lock_timeout = '5s';

CREATE TABLE schema_compatibility (
    -- A migration's version.
    version bigint PRIMARY KEY,
    -- The oldest schema a binary may know and still serve correctly on this migration.
    oldest_compatible bigint NOT NULL
);

INSERT INTO schema_compatibility (version, oldest_compatible) VALUES
    -- 6 replaced `backups` and `store_backup`: only binaries that know it serve on it.
    (20261202000006, 20261202000006),
    -- 7, 8 and 9 only add (a function under a new name, the reserve, this table).
    (20261206000007, 20261202000006),
    (20261206000008, 20261202000006),
    (20261206000009, 20261202000006);
