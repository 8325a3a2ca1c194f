-- Space kept in reserve for the day the database's volume fills. On a full volume deleting
-- rows gives nothing back until VACUUM runs, and VACUUM itself needs room (it extends each
-- table's visibility map), so `prune` alone cannot recover. This table holds filler rows that
-- `reserve` writes; `reserve --release` empties it with TRUNCATE, which needs no room of its
-- own here because the table has no TOAST table and no index (fixed-width columns only), and
-- gives its whole file back at once. Nothing else reads or writes it; the dump leaves it out.
-- A migration runs while the release before serves: it waits at most this long for a lock
-- (and fails, to be retried, rather than stall every upload queued behind it).
SET LOCAL lock_timeout = '5s';

CREATE TABLE storage_reserve (
    a bigint NOT NULL,
    b bigint NOT NULL,
    c bigint NOT NULL,
    d bigint NOT NULL,
    e bigint NOT NULL,
    f bigint NOT NULL,
    g bigint NOT NULL,
    h bigint NOT NULL
);
