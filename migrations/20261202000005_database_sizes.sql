-- The database's size once a day (the first `serve` refresh of each UTC day writes it), so
-- `inspect health` can tell how fast it grows and when the volume will be full. Only the
-- last 40 days are kept. Dumped with the rest, so an upgraded or restored database keeps its
-- history.
CREATE TABLE database_sizes (
    day      date        PRIMARY KEY,
    taken_at timestamptz NOT NULL DEFAULT now(),
    bytes    bigint      NOT NULL CHECK (bytes >= 0)
);
