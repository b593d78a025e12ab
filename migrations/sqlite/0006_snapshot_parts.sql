-- A large snapshot is stored in parts, each written in a transaction of its own. SQLite has one
-- writer at a time: a snapshot of many megabytes written in one transaction holds up every
-- append queued behind it for as long as it takes to write and sync.
CREATE TABLE snapshot_parts (
    doc_id  TEXT    NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    -- One compaction's parts share a generation, new for each compaction of the document; parts
    -- of any generation but the one `snapshots` names are left over and are dropped.
    gen     INTEGER NOT NULL,
    -- Position from 0; the state is the parts' bytes in this order.
    part    INTEGER NOT NULL,
    data    BLOB    NOT NULL,
    PRIMARY KEY (doc_id, gen, part)
);

-- NULL: the state is `snapshots.state` itself. Otherwise `state` is empty and the state is the
-- `parts` parts of this generation.
ALTER TABLE snapshots ADD COLUMN gen INTEGER;
ALTER TABLE snapshots ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;
