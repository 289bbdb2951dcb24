-- Messages: one row per distinct raw message (deduplicated by content hash).
CREATE TABLE messages (
    id            TEXT PRIMARY KEY NOT NULL,
    content_hash  TEXT NOT NULL UNIQUE,
    header_message_id TEXT,
    source        TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    status        TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    processed_at  BIGINT,
    processing_ms DOUBLE PRECISION,
    from_addr     TEXT,
    subject       TEXT,
    date_unix     BIGINT,
    text_body     TEXT,
    view_json     TEXT
);
CREATE INDEX messages_status_idx ON messages (status, id);
CREATE INDEX messages_processed_at_idx ON messages (processed_at);

-- Raw bytes live apart from the row most reads touch.
CREATE TABLE message_raw (
    message_id TEXT PRIMARY KEY NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    raw        BYTEA NOT NULL
);

-- The durable job queue. Finished jobs are deleted; dead ones stay visible.
CREATE TABLE jobs (
    id          BIGSERIAL PRIMARY KEY,
    message_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    state       TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    run_at      BIGINT NOT NULL,
    lease_until BIGINT,
    lease_token TEXT,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX jobs_ready_idx ON jobs (state, run_at);
CREATE INDEX jobs_lease_idx ON jobs (state, lease_until);
CREATE INDEX jobs_message_idx ON jobs (message_id);

-- Per-message processing history: one row per stage per attempt.
CREATE TABLE processing_steps (
    id          BIGSERIAL PRIMARY KEY,
    message_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    stage       TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    error       TEXT
);
CREATE INDEX processing_steps_message_idx ON processing_steps (message_id, id);
CREATE INDEX processing_steps_started_idx ON processing_steps (started_at, outcome);
