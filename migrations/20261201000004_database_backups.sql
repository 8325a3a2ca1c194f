-- Each completed backup of the database itself, recorded by `backup-db` in a short
-- transaction of its own once the dump is complete (in a bucket: once its manifest is
-- written), so `serve` can export when the last one succeeded and an alert can fire when
-- backups stop. The identity column's sequence is the one sequence our dumps carry.
CREATE TABLE database_backups (
    id          bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    finished_at timestamptz      NOT NULL DEFAULT now(),
    location    text             NOT NULL,
    bytes       bigint           NOT NULL CHECK (bytes >= 0),
    seconds     double precision NOT NULL CHECK (seconds >= 0)
);

CREATE INDEX database_backups_finished_at ON database_backups (finished_at);
