-- Documents are TOAST-compressed with lz4 instead of pglz where the server has lz4 (PostgreSQL
-- 14 and later built with it, as Debian's packages and the official images are). pglz was a
-- third of PostgreSQL's CPU per upload and 43% of a restore's; with lz4 the same restore took
-- 9 s instead of 23 s, for about 18% more space (bench/README.md). Documents already stored
-- keep pglz until rewritten; both read back byte for byte. Without lz4, nothing changes.
DO $$
BEGIN
    ALTER TABLE backups ALTER COLUMN document SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4; documents stay compressed with pglz';
END
$$;
