-- The service this database belongs to, drawn once: every node on the database reads the same
-- id, and names the bus channel it shares with the others after it, so that two services on one
-- Redis never hear each other.
CREATE TABLE service (
    id TEXT PRIMARY KEY NOT NULL
);
INSERT INTO service (id) SELECT gen_random_uuid()::text;
