-- Accounts are anonymous: an id and the SHA-256 of the bearer token (never the token).
CREATE TABLE users (
    id          uuid        PRIMARY KEY,
    token_hash  bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The document is kept as the exact text uploaded (decoded, checked to be UTF-8), so a restore
-- is byte-for-byte the same; jsonb would reorder keys and cost a parse on every write. text
-- rather than bytea: dumps carry it as itself instead of doubled into hex.
CREATE TABLE backups (
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    size_bytes  integer     NOT NULL CHECK (size_bytes >= 0),
    sha256      bytea       NOT NULL CHECK (length(sha256) = 32),
    document    text        NOT NULL
);

-- A user's backups newest first: latest, dedupe against the latest, retention beyond the
-- newest N, and keyset pagination on (created_at, id).
CREATE INDEX backups_user_newest ON backups (user_id, created_at DESC, id DESC);
-- Operator views and pruning by age across all users.
CREATE INDEX backups_created_at ON backups (created_at);

-- Idempotency-Key replay: the first answer is stored whole, so a retry gets it again even
-- after retention has removed the backup it names.
CREATE TABLE idempotency_keys (
    user_id           uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key               text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_sha256    bytea       NOT NULL CHECK (length(request_sha256) = 32),
    backup_id         uuid        NOT NULL,
    backup_created_at timestamptz NOT NULL,
    size_bytes        integer     NOT NULL,
    sha256            bytea       NOT NULL,
    deduplicated      boolean     NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- Expiry of old keys.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
