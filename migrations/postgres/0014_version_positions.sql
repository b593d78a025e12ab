-- Several nodes may hold one document and each would save its automatic version after the same
-- pause. A version records how far into the document's log it holds everything (NULL: taken
-- before this column, or on one node), so that a node whose copy holds exactly that much or
-- less saves none (see src/store/postgres/versions.rs).
ALTER TABLE versions ADD COLUMN log_position BIGINT;
