-- Mirrors migrations/postgres/0015. Import jobs (issue 16) and their row errors.
CREATE TABLE imports (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    format TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    on_existing TEXT NOT NULL,
    bytes_total INTEGER NOT NULL,
    bytes_read INTEGER NOT NULL DEFAULT 0,
    rows_read INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    subscribed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    finished_at INTEGER,
    PRIMARY KEY (store_id, id)
) STRICT;

CREATE TABLE import_errors (
    store_id BLOB NOT NULL,
    import_id BLOB NOT NULL,
    row_number INTEGER NOT NULL,
    column_name TEXT,
    error TEXT NOT NULL,
    PRIMARY KEY (store_id, import_id, row_number, error),
    FOREIGN KEY (store_id, import_id) REFERENCES imports (store_id, id) ON DELETE CASCADE
) STRICT;
