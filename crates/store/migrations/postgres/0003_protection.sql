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
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    replaced_by  TEXT,
    created_by   TEXT
);
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);
CREATE INDEX api_keys_name_idx ON api_keys (name);

-- The audit log: append-only, enforced by the database itself.
CREATE TABLE audit_log (
    id       BIGSERIAL PRIMARY KEY,
    at       BIGINT NOT NULL,
    action   TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    actor    TEXT,
    ip       TEXT,
    target   TEXT,
    details  TEXT
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Small named facts the server keeps between starts (bootstrap marker,
-- fingerprint of the last configuration).
CREATE TABLE server_state (
    name       TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Encryption at rest: a sealed record names the data key that sealed it
-- (NULL: stored in the clear, before encryption was configured).
ALTER TABLE message_raw ADD COLUMN key_id TEXT;
ALTER TABLE messages ADD COLUMN sealed_view BYTEA;
ALTER TABLE messages ADD COLUMN sealed_key_id TEXT;
