-- Which node appended a log row: a random number each Tandem process draws at start. A node
-- reading what other nodes appended to a document it holds tells its own rows (relayed already,
-- once its commit returned) from theirs. NULL for rows written before this migration, which
-- count as no node's.
ALTER TABLE updates ADD COLUMN node BIGINT;
