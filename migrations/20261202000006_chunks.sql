-- Documents are stored as content-defined chunks (src/chunking.rs), each kept once per user:
-- consecutive backups of a growing workout log share all their chunks but the last one or two,
-- so a user's 30 backups take little more than the space of one (bench/README.md). Chunks are
-- never shared between users: no account can learn what another stored, and deleting an
-- account stays one cascade.
-- The release before keeps serving while this runs (Fly's release_command comes before the
-- machines are replaced), and its uploads write `backups` in their own transactions. One that
-- committed after the conversion below had read `backups` was copied without its chunks, or
-- dropped with the old table: acknowledged, then lost. So writers wait until this commits (and
-- then fail on the new table, unacknowledged, for the app to retry); readers go on. The wait
-- for the lock itself is bounded: behind a long transaction the deploy fails and is retried.
-- (Corrected in place before any release carrying this migration was deployed: issue #24.)
SET LOCAL lock_timeout = '5s';
LOCK TABLE backups IN EXCLUSIVE MODE;

CREATE TABLE chunks (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the chunk's UTF-8 bytes: how an upload finds the chunks already stored.
    sha256  bytea  NOT NULL CHECK (length(sha256) = 32),
    -- Text, like the documents before them: a dump carries it as itself, not doubled into hex.
    data    text   NOT NULL,
    UNIQUE (user_id, sha256)
);

DO $$
BEGIN
    ALTER TABLE chunks ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4; chunks are compressed with pglz';
END
$$;

-- The documents already stored become pieces of about 8 KiB (the chunker's average), cut
-- between UTF-8 characters, equal pieces of one user kept once: an append-only log shares all
-- its pieces but the last with the backup before it. The next upload of each user is cut by
-- content. The cutting works on the document's bytes, so each document is read once whatever
-- its length (substr by characters would scan it from the start for every piece).
CREATE FUNCTION pg_temp.pieces(document text) RETURNS TABLE (n bigint, data text)
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    bytes bytea := convert_to(document, 'UTF8');
    total integer := length(bytes);
    piece_start integer := 0;
    piece_end integer;
BEGIN
    n := 0;
    WHILE piece_start < total LOOP
        piece_end := least(piece_start + 8192, total);
        -- Forward past continuation bytes (10xxxxxx) to the next character's first byte.
        WHILE piece_end < total LOOP
            EXIT WHEN get_byte(bytes, piece_end) NOT BETWEEN 128 AND 191;
            piece_end := piece_end + 1;
        END LOOP;
        n := n + 1;
        data := convert_from(substring(bytes FROM piece_start + 1 FOR piece_end - piece_start), 'UTF8');
        RETURN NEXT;
        piece_start := piece_end;
    END LOOP;
END
$$;

-- No temporary table and no sort: on a nearly full volume the conversion needs room only for
-- the chunks.
INSERT INTO chunks (user_id, sha256, data)
    SELECT b.user_id, sha256(convert_to(p.data, 'UTF8')), p.data
    FROM backups b CROSS JOIN LATERAL pg_temp.pieces(b.document) p
    ON CONFLICT (user_id, sha256) DO NOTHING;

-- A new table rather than a new column: dropping the old table gives its space back at once,
-- where a dropped column's TOAST would stay until a VACUUM FULL the volume may have no room for.
CREATE TABLE backups_chunked (
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    size_bytes  integer     NOT NULL CHECK (size_bytes >= 0),
    sha256      bytea       NOT NULL CHECK (length(sha256) = 32),
    -- The document's chunks in order (ids in `chunks`, all of this user's); empty for an
    -- empty document. Together they are the document byte for byte.
    chunk_ids   bigint[]    NOT NULL
);

INSERT INTO backups_chunked (id, user_id, created_at, size_bytes, sha256, chunk_ids)
    SELECT b.id, b.user_id, b.created_at, b.size_bytes, b.sha256,
           ARRAY(SELECT c.id FROM pg_temp.pieces(b.document) p
                 JOIN chunks c ON c.user_id = b.user_id AND c.sha256 = sha256(convert_to(p.data, 'UTF8'))
                 ORDER BY p.n)
    FROM backups b;

DROP TABLE backups;
DROP FUNCTION pg_temp.pieces(text);
ALTER TABLE backups_chunked RENAME TO backups;
ALTER TABLE backups RENAME CONSTRAINT backups_chunked_pkey TO backups_pkey;
ALTER TABLE backups RENAME CONSTRAINT backups_chunked_user_id_fkey TO backups_user_id_fkey;
ALTER TABLE backups RENAME CONSTRAINT backups_chunked_size_bytes_check TO backups_size_bytes_check;
ALTER TABLE backups RENAME CONSTRAINT backups_chunked_sha256_check TO backups_sha256_check;
CREATE INDEX backups_user_newest ON backups (user_id, created_at DESC, id DESC);
CREATE INDEX backups_created_at ON backups (created_at);

-- Whatever deletes backups (retention, the DELETE route, prune), the chunks no other backup of
-- their user names go in the same statement. The users' rows are locked first, as an upload
-- locks its user: a chunk an upload in flight has found stored is never freed under it.
-- Callers that delete several users' backups lock those users first, in id order, so that
-- they and an upload's retention cannot wait on each other.
CREATE FUNCTION free_unreferenced_chunks() RETURNS trigger
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

CREATE TRIGGER backups_free_chunks AFTER DELETE ON backups
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION free_unreferenced_chunks();

-- An upload as before (lock the user, replay a key, dedupe against the latest, retention,
-- remember the key), now of a document named by its chunks' SHA-256 in order, with the data of
-- only those the caller did not find stored. Outcome 'missing' when a named chunk is neither
-- stored nor sent (freed since the caller looked): nothing is written, and the caller sends
-- them all.
DROP FUNCTION store_backup(uuid, uuid, integer, bytea, text, integer, text);

CREATE FUNCTION store_backup(
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
    deduplicated boolean
)
LANGUAGE plpgsql VOLATILE
-- See the first version of this function (20261129000002): generic plans, planned once.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_latest_sha256 bytea;
    v_chunk_ids bigint[];
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

    -- Equal to the latest: nothing new is stored (the chunks are the latest's), and
    -- v_chunk_ids stays NULL.
    SELECT b.sha256 INTO v_latest_sha256 FROM backups b
        WHERE b.user_id = p_user_id ORDER BY b.created_at DESC, b.id DESC LIMIT 1;
    IF v_latest_sha256 IS DISTINCT FROM p_sha256 THEN
        IF EXISTS (
            SELECT 1 FROM unnest(p_chunks) AS named(sha256)
            WHERE named.sha256 <> ALL (p_new_sha256)
              AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.user_id = p_user_id AND c.sha256 = named.sha256)
        ) THEN
            RETURN QUERY SELECT 'missing', NULL::uuid, NULL::timestamptz, NULL::integer, NULL::bytea, NULL::boolean;
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
        SELECT 'stored', s.id, s.created_at, s.size_bytes, s.sha256, s.deduplicated FROM stored s;
END
$$;
