-- Profiles and everything keyed to them. Mirrors migrations/postgres/0002 (no trigram index:
-- SQLite scans search_text, which stays well inside the target at 100k profiles per store).

CREATE TABLE profiles (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    email TEXT,
    email_key TEXT,
    verified INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    -- Lower-cased email and text taxonomy values, one per line: what `query` searches.
    search_text TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (store_id, id),
    CONSTRAINT profiles_email_unique UNIQUE (store_id, email_key)
) STRICT;
CREATE INDEX profiles_by_created ON profiles (store_id, created_at, id);
CREATE INDEX profiles_by_updated ON profiles (store_id, updated_at, id);
CREATE INDEX profiles_by_email ON profiles (store_id, COALESCE(email_key, ''), id);

CREATE TABLE taxonomies (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    key TEXT NOT NULL,
    parent_id BLOB,
    schema TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (store_id, id),
    CONSTRAINT taxonomies_key_unique UNIQUE (store_id, key)
) STRICT;

-- One row per value of a profile's taxonomy field (a text field with three values has three rows),
-- typed into columns so that filters are indexable.
CREATE TABLE profile_taxonomy_values (
    store_id BLOB NOT NULL,
    profile_id BLOB NOT NULL,
    taxonomy_id BLOB NOT NULL,
    field_key TEXT NOT NULL,
    value_pos INTEGER NOT NULL,
    field_pos INTEGER NOT NULL,
    field_type TEXT NOT NULL,
    text_value TEXT,
    num_value REAL,
    bool_value INTEGER,
    lat REAL,
    lon REAL,
    label TEXT,
    PRIMARY KEY (store_id, profile_id, taxonomy_id, field_key, value_pos),
    FOREIGN KEY (store_id, profile_id) REFERENCES profiles (store_id, id) ON DELETE CASCADE,
    FOREIGN KEY (store_id, taxonomy_id) REFERENCES taxonomies (store_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX ptv_text ON profile_taxonomy_values (store_id, taxonomy_id, field_key, text_value, profile_id);
CREATE INDEX ptv_number ON profile_taxonomy_values (store_id, taxonomy_id, field_key, num_value, profile_id);
CREATE INDEX ptv_bool ON profile_taxonomy_values (store_id, taxonomy_id, field_key, bool_value, profile_id);
CREATE INDEX ptv_geo ON profile_taxonomy_values (store_id, taxonomy_id, field_key, lat, lon, profile_id);

CREATE TABLE profile_promo_usage (
    store_id BLOB NOT NULL,
    profile_id BLOB NOT NULL,
    promo_code_id TEXT NOT NULL,
    uses INTEGER NOT NULL,
    PRIMARY KEY (store_id, profile_id, promo_code_id),
    FOREIGN KEY (store_id, profile_id) REFERENCES profiles (store_id, id) ON DELETE CASCADE
) STRICT;

-- Orders live in the commerce system; the CRM keeps the link so merge and export can follow it.
CREATE TABLE profile_orders (
    store_id BLOB NOT NULL,
    order_id TEXT NOT NULL,
    profile_id BLOB NOT NULL,
    total INTEGER,
    currency TEXT,
    status TEXT,
    placed_at INTEGER,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (store_id, order_id),
    FOREIGN KEY (store_id, profile_id) REFERENCES profiles (store_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX profile_orders_by_profile ON profile_orders (store_id, profile_id, created_at, order_id);

CREATE TABLE profile_sessions (
    store_id BLOB NOT NULL,
    id BLOB NOT NULL,
    profile_id BLOB NOT NULL,
    verified INTEGER NOT NULL,
    user_agent TEXT,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    refresh_expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    PRIMARY KEY (store_id, id),
    FOREIGN KEY (store_id, profile_id) REFERENCES profiles (store_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX profile_sessions_by_profile ON profile_sessions (store_id, profile_id);

CREATE TABLE profile_refresh_tokens (
    store_id BLOB NOT NULL,
    token_hash BLOB NOT NULL,
    session_id BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    rotated_at INTEGER,
    PRIMARY KEY (store_id, token_hash),
    FOREIGN KEY (store_id, session_id) REFERENCES profile_sessions (store_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX profile_refresh_tokens_by_session ON profile_refresh_tokens (store_id, session_id);

-- Magic codes are keyed by email: a code can be asked for an address no profile has yet.
CREATE TABLE magic_codes (
    store_id BLOB NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    email_key TEXT NOT NULL,
    code_hash BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    voided_at INTEGER,
    PRIMARY KEY (store_id, id)
) STRICT;
CREATE INDEX magic_codes_by_email ON magic_codes (store_id, email_key, created_at);
