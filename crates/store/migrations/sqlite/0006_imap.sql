-- Where each IMAP account's mailbox was read up to: its UIDVALIDITY and
-- the highest UID ingested. A different UIDVALIDITY means the server
-- renumbered the mailbox: it is read again from the start (content
-- hashes keep already stored messages from being stored twice).
CREATE TABLE imap_state (
    account      TEXT PRIMARY KEY NOT NULL,
    uid_validity INTEGER NOT NULL,
    last_uid     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
