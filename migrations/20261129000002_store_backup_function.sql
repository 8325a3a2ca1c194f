-- An upload in one round trip: lock the user, answer a repeated Idempotency-Key, or store with
-- dedupe, retention and the key remembered. It replaces a transaction of four statements
-- (BEGIN, lock + key lookup, store, COMMIT), each a round trip and a wake-up of this backend.
--
-- Called outside an explicit transaction, the call is its own transaction. The function is
-- VOLATILE, so under READ COMMITTED each statement takes a fresh snapshot: once the user's row
-- is locked, the statements after it see every upload that committed before the lock was won.
--
-- Returns no row when the user no longer exists; otherwise one row whose outcome is 'stored'
-- (new or deduplicated), 'replayed' (the key's earlier answer) or 'conflict' (the key was used
-- with another body; the row describes that earlier upload).
CREATE FUNCTION store_backup(
    p_user_id uuid,
    p_id uuid,
    p_size_bytes integer,
    p_sha256 bytea,
    p_document text,
    p_keep integer,
    p_key text
) RETURNS TABLE (
    outcome text,
    id uuid,
    created_at timestamptz,
    size_bytes integer,
    sha256 bytea,
    deduplicated boolean
)
LANGUAGE plpgsql VOLATILE
-- Plan each statement once per connection: the custom plans PostgreSQL otherwise makes on
-- every call cost more than the insert itself. Every statement reaches its rows through the
-- user's index (or the primary key) whatever the parameters, so the generic plan is the one a
-- custom plan would be.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    PERFORM FROM users WHERE users.id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF p_key IS NOT NULL THEN
        RETURN QUERY
            SELECT CASE WHEN k.request_sha256 = p_sha256 THEN 'replayed' ELSE 'conflict' END,
                   k.backup_id, k.backup_created_at, k.size_bytes, k.sha256, k.deduplicated
            FROM idempotency_keys k
            WHERE k.user_id = p_user_id AND k.key = p_key;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    -- Data-modifying CTEs all see the table as it was before the statement, so `pruned` keeps
    -- keep - 1 of the existing backups: the new one is the keep-th.
    RETURN QUERY
        WITH latest AS (
            SELECT b.id, b.created_at, b.size_bytes, b.sha256 FROM backups b
            WHERE b.user_id = p_user_id ORDER BY b.created_at DESC, b.id DESC LIMIT 1
        ), inserted AS (
            INSERT INTO backups AS b (id, user_id, size_bytes, sha256, document)
            SELECT p_id, p_user_id, p_size_bytes, p_sha256, p_document
            WHERE NOT EXISTS (SELECT 1 FROM latest WHERE latest.sha256 = p_sha256)
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
            SELECT l.id, l.created_at, l.size_bytes, l.sha256, true FROM latest l WHERE l.sha256 = p_sha256
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
        SELECT 'stored', s.id, s.created_at, s.size_bytes, s.sha256, s.deduplicated FROM stored s;
END
$$;
