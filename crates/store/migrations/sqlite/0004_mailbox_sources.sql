-- Named roles that exactly one process holds at a time (the Microsoft
-- Graph subscription owner). Taken and renewed by one conditional upsert:
-- a holder keeps it by renewing before expires_at, anyone may take it
-- after. Works the same on both engines.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    acquired_at INTEGER NOT NULL
);

-- One Graph subscription per configured mailbox (its Inbox messages).
-- Only a SHA-256 of clientState is kept: it is compared, never re-sent.
CREATE TABLE graph_subscriptions (
    mailbox           TEXT PRIMARY KEY NOT NULL,
    subscription_id   TEXT NOT NULL UNIQUE,
    resource          TEXT NOT NULL,
    client_state_hash TEXT NOT NULL,
    expires_at        INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    renewed_at        INTEGER,
    last_error        TEXT,
    updated_at        INTEGER NOT NULL
);

-- Per-folder delta links: where the next catch-up starts.
CREATE TABLE graph_delta (
    mailbox    TEXT NOT NULL,
    folder     TEXT NOT NULL,
    delta_link TEXT,
    synced_at  INTEGER,
    PRIMARY KEY (mailbox, folder)
);

-- Messages Graph told us about (webhook or delta), queued durably before
-- the webhook answers. The unique key collapses duplicates (the same
-- message notified twice, by two subscriptions, or also seen by delta);
-- finished rows stay as that record.
CREATE TABLE graph_notifications (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox          TEXT NOT NULL,
    graph_message_id TEXT NOT NULL,
    origin           TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    lease_token      TEXT,
    lease_until      INTEGER,
    received_at      INTEGER NOT NULL,
    finished_at      INTEGER,
    message_id       TEXT,
    last_error       TEXT,
    UNIQUE (mailbox, graph_message_id)
);
CREATE INDEX graph_notifications_runnable_idx ON graph_notifications (state, run_at);

-- Lifecycle notifications (reauthorizationRequired, subscriptionRemoved,
-- missed) as any replica received them, for the subscription owner to act
-- on; handled_at is set once it has.
CREATE TABLE graph_lifecycle_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL,
    event           TEXT NOT NULL,
    received_at     INTEGER NOT NULL,
    handled_at      INTEGER
);
CREATE INDEX graph_lifecycle_events_pending_idx ON graph_lifecycle_events (handled_at, id);
