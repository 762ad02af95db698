-- Schema 1 of a codegraph_store file.
-- Kinds are stored as stable integer codes; the *_kinds tables and the *_view
-- views give them names for anyone reading the file with the sqlite3 shell.

PRAGMA application_id = 1128744002;  -- 0x43474442, "CGDB": marks the file as ours

CREATE TABLE node_kinds (
    code INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
) STRICT;
INSERT INTO node_kinds (code, name) VALUES
    (1, 'module'), (2, 'class'), (3, 'function'), (4, 'method'),
    (5, 'variable'), (6, 'import'), (7, 'attribute'), (8, 'parameter');

CREATE TABLE edge_kinds (
    code INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
) STRICT;
INSERT INTO edge_kinds (code, name) VALUES
    (1, 'contains'), (2, 'calls'), (3, 'imports'), (4, 'inherits'), (5, 'references');

-- One row per source file; path is relative to the indexed root, '/'-separated.
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    language TEXT,
    module TEXT,                 -- dotted module name, for languages that have one
    content_hash TEXT,           -- blake2b hex of the bytes last indexed
    size INTEGER NOT NULL DEFAULT 0,
    parse_error TEXT             -- why the file yielded no nodes, or NULL
) STRICT;

-- id is a stable 63-bit hash of (file, qualname): re-indexing keeps it.
-- metadata is a codec record: 'J' + JSON, or 'Z' + zstd frame of JSON.
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL REFERENCES node_kinds (code),
    name TEXT NOT NULL,
    qualname TEXT NOT NULL,
    file_id INTEGER REFERENCES files (id) ON DELETE CASCADE,
    start_line INTEGER NOT NULL,
    start_col INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    end_col INTEGER NOT NULL,
    metadata BLOB
) STRICT;
CREATE INDEX nodes_by_name ON nodes (name);
CREATE INDEX nodes_by_qualname ON nodes (qualname);
CREATE INDEX nodes_by_file_line ON nodes (file_id, start_line);

-- Edges are unique per (src, kind, dst). The endpoint checks are deferred to
-- commit so a transaction may add edges before their nodes.
CREATE TABLE edges (
    src INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    kind INTEGER NOT NULL REFERENCES edge_kinds (code),
    dst INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    metadata BLOB,
    PRIMARY KEY (src, kind, dst)
) STRICT, WITHOUT ROWID;
CREATE INDEX edges_by_dst ON edges (dst, kind, src);

-- References by name, kept by the indexer so that a target defined later (or in
-- a file indexed later) resolves without re-parsing the referring file.
-- dst is the node the target resolved to, or NULL while unresolved.
CREATE TABLE refs (
    src INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    kind INTEGER NOT NULL REFERENCES edge_kinds (code),
    target TEXT NOT NULL,
    dst INTEGER REFERENCES nodes (id) ON DELETE SET NULL,
    ordinal INTEGER NOT NULL DEFAULT 0,  -- order of appearance in the source (base order)
    PRIMARY KEY (src, kind, target)
) STRICT, WITHOUT ROWID;
CREATE INDEX refs_by_target ON refs (target);
CREATE INDEX refs_by_dst ON refs (dst) WHERE dst IS NOT NULL;

-- Names a ref's resolution passed through when following import aliases
-- (json.JSONDecoder -> json.decoder.JSONDecoder): a change to a file defining
-- one of these names re-resolves the ref.
CREATE TABLE ref_hops (
    src INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    target TEXT NOT NULL,
    hop TEXT NOT NULL,
    PRIMARY KEY (src, kind, target, hop),
    FOREIGN KEY (src, kind, target) REFERENCES refs (src, kind, target) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
CREATE INDEX ref_hops_by_hop ON ref_hops (hop);

-- What an import node binds: the fully qualified name it stands for.
CREATE TABLE aliases (
    node_id INTEGER PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    target TEXT NOT NULL
) STRICT;

-- Small facts about the store itself (who created it, counters).
CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value ANY
) STRICT;

CREATE VIEW nodes_view AS
SELECT n.id, k.name AS kind, n.name, n.qualname, f.path AS file,
       n.start_line, n.start_col, n.end_line, n.end_col
FROM nodes AS n
JOIN node_kinds AS k ON k.code = n.kind
LEFT JOIN files AS f ON f.id = n.file_id;

CREATE VIEW edges_view AS
SELECT e.src, s.qualname AS src_qualname, k.name AS kind, e.dst, d.qualname AS dst_qualname
FROM edges AS e
JOIN edge_kinds AS k ON k.code = e.kind
JOIN nodes AS s ON s.id = e.src
JOIN nodes AS d ON d.id = e.dst;
