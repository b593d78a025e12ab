-- A log row's id becomes its position in its document's log: 1, 2, 3, … with no gaps, handed
-- out under the document's row lock by the statement that appends it (documents.log_seq is the
-- last one). Positions then grow in commit order, which a global BIGSERIAL does not: of two
-- concurrent transactions the one that took the lower id may commit second. A node that has
-- applied a document's log up to position n, and sees n + 2, knows that it misses n + 1.
ALTER TABLE documents ADD COLUMN log_seq BIGINT NOT NULL DEFAULT 0;

-- Rows a snapshot covers are folded into it already: drop them, so that the renumbered rows
-- start after a snapshot that covers position 0.
DELETE FROM updates u USING snapshots s WHERE u.doc_id = s.doc_id AND u.id <= s.log_id;
UPDATE snapshots SET log_id = 0;

ALTER TABLE updates DROP CONSTRAINT updates_pkey;
ALTER TABLE updates ALTER COLUMN id DROP DEFAULT;
DROP SEQUENCE IF EXISTS updates_id_seq;
DROP INDEX updates_doc_id;

UPDATE updates u SET id = r.position
    FROM (SELECT ctid AS row_at, ROW_NUMBER() OVER (PARTITION BY doc_id ORDER BY id) AS position
          FROM updates) r
    WHERE u.ctid = r.row_at;
UPDATE documents d SET log_seq = c.n
    FROM (SELECT doc_id, COUNT(*) AS n FROM updates GROUP BY doc_id) c
    WHERE d.id = c.doc_id;

ALTER TABLE updates ADD PRIMARY KEY (doc_id, id);
