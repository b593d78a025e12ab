-- Snapshots are rewritten whole at every compaction, which on a busy document is many times a
-- second. Postgres compresses large values (pglz) by default; for these that costs more CPU on
-- the write path than the disk it saves is worth, and it delays every commit queued behind.
-- Store them out of line, uncompressed.
ALTER TABLE documents ALTER COLUMN snapshot SET STORAGE EXTERNAL;
