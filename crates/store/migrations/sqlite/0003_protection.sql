-- API keys. Only the SHA-256 of a key is stored; `prefix` is its public
-- start (mr_ + 8 characters), shown in listings and used to find the hash.
-- A rotated key keeps its row until its overlap ends (`expires_at`) and
-- names its successor in `replaced_by`.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    replaced_by  TEXT,
    created_by   TEXT
);
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);
CREATE INDEX api_keys_name_idx ON api_keys (name);

-- The audit log: append-only, enforced by the database itself.
CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    action   TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    actor    TEXT,
    ip       TEXT,
    target   TEXT,
    details  TEXT
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Small named facts the server keeps between starts (bootstrap marker,
-- fingerprint of the last configuration).
CREATE TABLE server_state (
    name       TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Encryption at rest: a sealed record names the data key that sealed it
-- (NULL: stored in the clear, before encryption was configured).
ALTER TABLE message_raw ADD COLUMN key_id TEXT;
ALTER TABLE messages ADD COLUMN sealed_view BLOB;
ALTER TABLE messages ADD COLUMN sealed_key_id TEXT;
