-- Import jobs (issue 16): one row per import started through the API, updated after every batch
-- so a dashboard can show progress; the row errors beside it.
CREATE TABLE imports (
    store_id UUID NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id UUID NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    format TEXT NOT NULL,
    dry_run BOOLEAN NOT NULL,
    on_existing TEXT NOT NULL,
    bytes_total BIGINT NOT NULL,
    bytes_read BIGINT NOT NULL DEFAULT 0,
    rows_read BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL DEFAULT 0,
    updated BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    subscribed BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    created_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    finished_at BIGINT,
    PRIMARY KEY (store_id, id)
);

CREATE TABLE import_errors (
    store_id UUID NOT NULL,
    import_id UUID NOT NULL,
    row_number BIGINT NOT NULL,
    column_name TEXT,
    error TEXT NOT NULL,
    PRIMARY KEY (store_id, import_id, row_number, error),
    FOREIGN KEY (store_id, import_id) REFERENCES imports (store_id, id) ON DELETE CASCADE
);
