-- Snapshots move out of `documents` into a table of their own. Every commit of appends touches
-- its documents' rows (`updated_at`); a compaction then writes no row that appends write.
CREATE TABLE snapshots (
    -- A snapshot never outlives its document, even if a compaction races a delete.
    doc_id  TEXT    PRIMARY KEY NOT NULL
            REFERENCES documents (id) ON DELETE CASCADE,
    -- Full Yjs v1 state as of the compaction that wrote it.
    state   BLOB    NOT NULL,
    -- Every log row of this document with id <= this value is contained in `state`.
    log_id  INTEGER NOT NULL
);

INSERT INTO snapshots (doc_id, state, log_id)
    SELECT id, snapshot, snapshot_log_id FROM documents WHERE snapshot IS NOT NULL;

ALTER TABLE documents DROP COLUMN snapshot;
ALTER TABLE documents DROP COLUMN snapshot_log_id;
