-- Whatever deletes backups (retention, the DELETE route, prune), the chunks no other backup of
-- their user names go in the same statement: the trigger `backups_free_chunks` (migration
-- 20261202000006) runs this after each DELETE on `backups`, with the deleted rows as `gone`.
-- The users' rows are locked first, as an upload locks its user: a chunk an upload in flight has
-- found stored is never freed under it. Callers that delete several users' backups lock those
-- users first, in id order, so that they and an upload's retention cannot wait on each other.
--
-- Installed by `migrate` from this file (src/db/functions.rs), with the text migration
-- 20261202000006 first created it with. A change gets a new name, and a migration points the
-- trigger at it.
CREATE OR REPLACE FUNCTION free_unreferenced_chunks() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM FROM users WHERE id IN (SELECT DISTINCT user_id FROM gone) ORDER BY id FOR UPDATE;
    DELETE FROM chunks WHERE id IN (
        SELECT unnest(g.chunk_ids) FROM gone g
        EXCEPT
        SELECT unnest(b.chunk_ids) FROM backups b WHERE b.user_id IN (SELECT DISTINCT user_id FROM gone)
    );
    RETURN NULL;
END
$$;
