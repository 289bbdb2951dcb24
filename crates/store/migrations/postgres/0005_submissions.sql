-- The outbox of downstream submissions: one row per processed message and
-- configured endpoint, written in the transaction that records the
-- processing result, so a result is never processed without being queued
-- for delivery. Re-processing a message queues its new result again.
CREATE TABLE submissions (
    id           BIGSERIAL PRIMARY KEY,
    message_id   TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    run_at       BIGINT NOT NULL,
    lease_token  TEXT,
    lease_until  BIGINT,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    last_status  BIGINT,
    last_error   TEXT,
    UNIQUE (message_id, endpoint)
);
CREATE INDEX submissions_runnable_idx ON submissions (state, run_at);
