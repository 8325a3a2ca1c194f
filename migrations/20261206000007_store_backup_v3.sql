-- store_backup_v3: an upload as store_backup (20261202000006), but a 201 now means the backup
-- reads back. Damage to one stored chunk (a bad sector, a botched manual fix) used to poison
-- every later backup of its user: a chunk counted as stored when its hash row existed, so the
-- good bytes an upload sent under that hash were dropped, and an identical re-upload was
-- deduplicated onto the damaged backup.
--
-- - A stored chunk whose bytes differ from the bytes sent under its hash is damaged (the caller
--   hashed what it sends): it is healed from them. `healed` counts them.
-- - A chunk the caller relies on without sending it must hash to its name; one that does not
--   is treated as missing ('missing': nothing is written, and the caller sends every chunk,
--   which heals it).
-- - A document equal to the latest backup is deduplicated onto it only if the latest reads
--   back as that document; otherwise it is stored as a new backup.
--
-- A new name, so the release before this one keeps calling store_backup unchanged while this
-- migration is deployed; store_backup goes in a later release.
-- A migration runs while the release before serves: it waits at most this long for a lock
-- (and fails, to be retried, rather than stall every upload queued behind it).
SET LOCAL lock_timeout = '5s';

CREATE FUNCTION store_backup_v3(
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
-- See the first version of this function (20261129000002): generic plans, planned once.
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
            -- `= ANY (ARRAY(...))`, not `IN (...)`: see the first version of this function.
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
        ), expired AS (
            DELETE FROM idempotency_keys
            WHERE idempotency_keys.user_id = p_user_id
              AND idempotency_keys.created_at < now() - interval '24 hours'
              AND idempotency_keys.key IS DISTINCT FROM p_key
        )
        SELECT 'stored', s.id, s.created_at, s.size_bytes, s.sha256, s.deduplicated, v_healed FROM stored s;
END
$$;
