-- A receiver's backlog is bounded: queueing an event beyond the bound drops that receiver's
-- oldest deliveries, found newest first from here.
CREATE INDEX webhook_deliveries_url_order ON webhook_deliveries (url, id);
