-- Revoked access: tokens of a document (of one user, or of everyone when user_name is '')
-- issued at or before revoked_at (Unix epoch milliseconds) are refused.
CREATE TABLE revocations (
    doc_id     TEXT   NOT NULL,
    user_name  TEXT   NOT NULL DEFAULT '',
    revoked_at BIGINT NOT NULL,
    PRIMARY KEY (doc_id, user_name)
);

CREATE INDEX revocations_recent ON revocations (revoked_at);
