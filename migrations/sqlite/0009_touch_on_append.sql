-- A log row marks its document as changed (creating its row if it is missing) in the same
-- statement: an append to documents known to exist is then one INSERT, its own transaction.
-- The time is Unix epoch milliseconds, as everywhere else.
CREATE TRIGGER updates_touch_document AFTER INSERT ON updates
BEGIN
    INSERT INTO documents (id, created_at, updated_at)
    VALUES (
        NEW.doc_id,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    )
    ON CONFLICT (id) DO UPDATE SET updated_at = max(updated_at, excluded.updated_at);
END;
