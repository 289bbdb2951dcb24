-- The outbox of downstream submissions: one row per processed message and
-- configured endpoint, written in the transaction that records the
-- processing result, so a result is never processed without being queued
-- for delivery. Re-processing a message queues its new result again.
CREATE TABLE submissions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_at       INTEGER NOT NULL,
    lease_token  TEXT,
    lease_until  INTEGER,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    last_status  INTEGER,
    last_error   TEXT,
    UNIQUE (message_id, endpoint)
);
CREATE INDEX submissions_runnable_idx ON submissions (state, run_at);
