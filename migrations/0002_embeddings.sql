-- Schema 2: embeddings. SQLite holds every vector (the truth, little-endian f32
-- blobs as sqlite-vec reads them); the pool file beside the database is a
-- derived copy, caught up from embedding_changes or rebuilt from these rows.

-- An embedding space: one model at one dimension. A store may hold several.
CREATE TABLE spaces (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    dim INTEGER NOT NULL CHECK (dim BETWEEN 1 AND 16384),
    metric TEXT NOT NULL CHECK (metric IN ('cosine', 'dot', 'l2')),
    next_slot INTEGER NOT NULL DEFAULT 0,   -- slots below this have been handed out
    pruned_through INTEGER NOT NULL DEFAULT 0, -- embedding_changes rows up to here are gone
    UNIQUE (name, dim)
) STRICT;

-- slot is the row of the pool file holding this vector; SQLite assigns it, so
-- the pool is a pure function of these rows.
CREATE TABLE embeddings (
    space_id INTEGER NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    node_id INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    slot INTEGER NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (space_id, node_id)
) STRICT;
CREATE UNIQUE INDEX embeddings_by_slot ON embeddings (space_id, slot);

-- Slots freed by deletes, reused before the pool grows.
CREATE TABLE free_slots (
    space_id INTEGER NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    slot INTEGER NOT NULL,
    PRIMARY KEY (space_id, slot)
) STRICT, WITHOUT ROWID;

-- Every change to embeddings, in commit order: a pool file that has applied
-- changes up to seq N catches up by replaying the rows after N.
CREATE TABLE embedding_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    space_id INTEGER NOT NULL,
    slot INTEGER NOT NULL
);

CREATE TRIGGER embeddings_inserted AFTER INSERT ON embeddings BEGIN
    INSERT INTO embedding_changes (space_id, slot) VALUES (new.space_id, new.slot);
END;
CREATE TRIGGER embeddings_updated AFTER UPDATE OF vec, slot ON embeddings BEGIN
    INSERT INTO embedding_changes (space_id, slot) VALUES (new.space_id, new.slot);
    INSERT INTO embedding_changes (space_id, slot)
        SELECT old.space_id, old.slot WHERE old.slot != new.slot;
END;
-- Deletes (including those cascading from nodes) free the slot.
CREATE TRIGGER embeddings_deleted AFTER DELETE ON embeddings BEGIN
    INSERT INTO embedding_changes (space_id, slot) VALUES (old.space_id, old.slot);
    INSERT OR IGNORE INTO free_slots (space_id, slot) VALUES (old.space_id, old.slot);
END;

-- Identifies this database to its pool files: a pool made for another file is rebuilt.
INSERT INTO store_meta (key, value) VALUES ('store_uuid', lower(hex(randomblob(16))));

CREATE VIEW embeddings_view AS
SELECT s.name AS space, s.dim, e.node_id, n.qualname, e.vec
FROM embeddings AS e
JOIN spaces AS s ON s.id = e.space_id
JOIN nodes AS n ON n.id = e.node_id;
