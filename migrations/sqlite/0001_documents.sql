-- Documents, their latest snapshot, and the append-only update log.
-- Times are Unix epoch milliseconds (UTC) so both backends share one representation.
CREATE TABLE documents (
    id          TEXT    PRIMARY KEY NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    -- Full Yjs v1 state as of the compaction that wrote it; NULL until the first compaction.
    snapshot    BLOB,
    -- Every log row of this document with id <= this value is contained in `snapshot`.
    snapshot_log_id INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE updates (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id  TEXT    NOT NULL,
    data    BLOB    NOT NULL
);

CREATE INDEX updates_doc_id ON updates (doc_id, id);
