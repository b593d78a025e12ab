-- A large snapshot is stored in parts, each written in a transaction of its own (see
-- src/store/parts.rs). A commit waits for the WAL to be flushed up to its own record: after a
-- snapshot of many megabytes logged in one transaction, every append behind it waited for all
-- of it to reach the disk.
CREATE TABLE snapshot_parts (
    doc_id  TEXT   NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    -- One compaction's parts share a generation, new for each compaction of the document; parts
    -- of any generation but the one `snapshots` names are left over and are dropped.
    gen     BIGINT NOT NULL,
    -- Position from 0; the state is the parts' bytes in this order.
    part    BIGINT NOT NULL,
    data    BYTEA  NOT NULL,
    PRIMARY KEY (doc_id, gen, part)
);

-- Rewritten at every compaction: kept out of line and uncompressed, as 0005 explains.
ALTER TABLE snapshot_parts ALTER COLUMN data SET STORAGE EXTERNAL;

-- gen NULL: the state is `snapshots.state` itself. Otherwise `state` is empty and the state is
-- the `parts` parts of this generation.
ALTER TABLE snapshots ADD COLUMN gen BIGINT, ADD COLUMN parts BIGINT NOT NULL DEFAULT 0;
