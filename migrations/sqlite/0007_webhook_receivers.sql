-- Each receiver is delivered to on its own, so the queue is read per URL: its due deliveries,
-- and how many it has. The index on the due time alone served one queue shared by every
-- receiver, which is gone.
CREATE INDEX webhook_deliveries_url_due ON webhook_deliveries (url, next_attempt_at);
DROP INDEX webhook_deliveries_due;
