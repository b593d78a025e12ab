-- Several nodes deliver from one queue. A node claims a receiver's due deliveries before it
-- makes them (until this time, epoch ms), and no node claims a receiver's deliveries while any
-- of them is claimed: each event goes out once, and a receiver's events in order. A node that
-- dies while it delivers leaves its claim to expire; another node then delivers (at least once).
ALTER TABLE webhook_deliveries ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;
