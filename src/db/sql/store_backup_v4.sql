-- An upload, in one call and its caller's transaction: the rules that must hold however many
-- machines race on one user. Rust decides the policy (src/backups/) and passes it in; this
-- function only applies it.
--
-- 1. The user's row is locked: one upload, retention or delete of a user at a time. No row:
--    no result (the account was deleted while the upload was on its way).
-- 2. A known `p_key` answers its first outcome again ('replayed'), or 'conflict' for another
--    document. Keys expire in Rust's sweep (src/backups/idempotency.rs), not here.
-- 3. Chunks sent whose stored bytes differ under the same hash are damaged: healed from the
--    bytes sent (`healed` counts them).
-- 4. A document equal to the latest backup, which reads back as it, is deduplicated onto it.
-- 5. Otherwise every chunk named must be stored (and hash to its name) or sent; else 'missing',
--    nothing written, and the caller sends them all.
-- 6. The backup is inserted, and the user's backups beyond the newest `p_keep` deleted (the
--    trigger running free_unreferenced_chunks frees the chunks only they named).
-- 7. `p_key` is remembered with the outcome.
--
-- Installed by `migrate` from this file (src/db/functions.rs). A changed function is a new file
-- under a new name; the release before keeps calling the old one during the deploy.
CREATE OR REPLACE FUNCTION store_backup_v4(
    p_user_id uuid,
    p_id uuid,
    p_size_bytes integer,
    p_sha256 bytea,
    p_chunks bytea[],
    p_new_sha256 bytea[],
    p_new_data text[],
    p_keep integer,
    p_key text
) RETURNS TABLE (
    outcome text,
    id uuid,
    created_at timestamptz,
    size_bytes integer,
    sha256 bytea,
    deduplicated boolean,
    healed integer
)
LANGUAGE plpgsql VOLATILE
-- Plan each statement once per connection: the custom plans PostgreSQL otherwise makes on
-- every call cost more than the insert itself. Every statement reaches its rows through the
-- user's index (or the primary key) whatever the parameters, so the generic plan is the one a
-- custom plan would be.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_healed integer;
    v_latest_sha256 bytea;
    v_latest_chunk_ids bigint[];
    v_latest_reads_back boolean := false;
    v_chunk_ids bigint[];
BEGIN
    PERFORM FROM users WHERE users.id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF p_key IS NOT NULL THEN
        RETURN QUERY
            SELECT CASE WHEN k.request_sha256 = p_sha256 THEN 'replayed' ELSE 'conflict' END,
                   k.backup_id, k.backup_created_at, k.size_bytes, k.sha256, k.deduplicated, 0
            FROM idempotency_keys k
            WHERE k.user_id = p_user_id AND k.key = p_key;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    UPDATE chunks c SET data = n.data
        FROM unnest(p_new_sha256, p_new_data) AS n(sha256, data)
        WHERE c.user_id = p_user_id AND c.sha256 = n.sha256 AND c.data IS DISTINCT FROM n.data;
    GET DIAGNOSTICS v_healed = ROW_COUNT;

    SELECT b.sha256, b.chunk_ids INTO v_latest_sha256, v_latest_chunk_ids FROM backups b
        WHERE b.user_id = p_user_id ORDER BY b.created_at DESC, b.id DESC LIMIT 1;
    -- Equal to the latest, which reads back as it: nothing new is stored, and v_chunk_ids stays
    -- NULL. (A chunk the latest names that is gone drops out of the join, so it cannot match.)
    IF v_latest_sha256 = p_sha256 THEN
        SELECT sha256(convert_to(coalesce(string_agg(c.data, '' ORDER BY part.n), ''), 'UTF8')) = p_sha256
            INTO v_latest_reads_back
            FROM unnest(v_latest_chunk_ids) WITH ORDINALITY AS part(id, n)
            JOIN chunks c ON c.id = part.id AND c.user_id = p_user_id;
    END IF;
    IF NOT v_latest_reads_back THEN
        IF EXISTS (
            SELECT 1 FROM unnest(p_chunks) AS named(sha256)
            WHERE named.sha256 <> ALL (p_new_sha256)
              AND NOT EXISTS (
                  SELECT 1 FROM chunks c
                  WHERE c.user_id = p_user_id AND c.sha256 = named.sha256
                    AND sha256(convert_to(c.data, 'UTF8')) = c.sha256)
        ) THEN
            RETURN QUERY SELECT 'missing', NULL::uuid, NULL::timestamptz, NULL::integer, NULL::bytea, NULL::boolean,
                                v_healed;
            RETURN;
        END IF;

        INSERT INTO chunks (user_id, sha256, data)
            SELECT p_user_id, n.sha256, n.data FROM unnest(p_new_sha256, p_new_data) AS n(sha256, data)
            ON CONFLICT (user_id, sha256) DO NOTHING;

        SELECT coalesce(array_agg(c.id ORDER BY named.n), '{}') INTO v_chunk_ids
            FROM unnest(p_chunks) WITH ORDINALITY AS named(sha256, n)
            JOIN chunks c ON c.user_id = p_user_id AND c.sha256 = named.sha256;
    END IF;

    -- Data-modifying CTEs all see the table as it was before the statement, so `pruned` keeps
    -- keep - 1 of the existing backups: the new one is the keep-th. The trigger then frees the
    -- chunks only the pruned backups named.
    RETURN QUERY
        WITH latest AS (
            SELECT b.id, b.created_at, b.size_bytes, b.sha256 FROM backups b
            WHERE b.user_id = p_user_id ORDER BY b.created_at DESC, b.id DESC LIMIT 1
        ), inserted AS (
            INSERT INTO backups AS b (id, user_id, size_bytes, sha256, chunk_ids)
            SELECT p_id, p_user_id, p_size_bytes, p_sha256, v_chunk_ids
            WHERE v_chunk_ids IS NOT NULL
            RETURNING b.id, b.created_at, b.size_bytes, b.sha256
        ), pruned AS (
            -- `= ANY (ARRAY(...))`, not `IN (...)`: the ids are found through the user's index
            -- and deleted through the primary key whatever the statistics say; as a join, the
            -- generic plan turned into a scan of the whole table once users had many rows.
            DELETE FROM backups WHERE EXISTS (SELECT 1 FROM inserted) AND backups.id = ANY (ARRAY(
                SELECT b.id FROM backups b WHERE b.user_id = p_user_id
                ORDER BY b.created_at DESC, b.id DESC OFFSET p_keep - 1))
        ), stored AS (
            SELECT i.id, i.created_at, i.size_bytes, i.sha256, false AS deduplicated FROM inserted i
            UNION ALL
            SELECT l.id, l.created_at, l.size_bytes, l.sha256, true FROM latest l WHERE v_chunk_ids IS NULL
        ), remembered AS (
            INSERT INTO idempotency_keys
                (user_id, key, request_sha256, backup_id, backup_created_at, size_bytes, sha256, deduplicated)
            SELECT p_user_id, p_key, p_sha256, s.id, s.created_at, s.size_bytes, s.sha256, s.deduplicated
            FROM stored s WHERE p_key IS NOT NULL
        )
        SELECT 'stored', s.id, s.created_at, s.size_bytes, s.sha256, s.deduplicated, v_healed FROM stored s;
END
$$;
