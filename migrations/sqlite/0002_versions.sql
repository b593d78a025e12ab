-- Named or automatic snapshots of a document's whole state, kept until deleted or pruned.
CREATE TABLE versions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id      TEXT    NOT NULL,
    name        TEXT,
    -- 'manual' (asked for through the API) or 'auto' (taken after a quiet spell in editing).
    kind        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    -- Full Yjs v1 state of the document when the version was taken.
    state       BLOB    NOT NULL
);

CREATE INDEX versions_doc_id ON versions (doc_id, id);
