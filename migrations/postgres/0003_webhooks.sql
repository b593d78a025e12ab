-- Webhook deliveries waiting to be made; a row is deleted once its receiver accepted it.
CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    url             TEXT   NOT NULL,
    event           TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at);
