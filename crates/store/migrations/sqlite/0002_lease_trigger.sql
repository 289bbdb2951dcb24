-- Leasing a job marks its message as processing inside the same statement,
-- so a lease is one autocommit UPDATE (no transaction round trips).
CREATE TRIGGER jobs_leased AFTER UPDATE OF lease_token ON jobs
WHEN NEW.state = 'leased'
BEGIN
    UPDATE messages SET status = 'processing' WHERE id = NEW.message_id;
END;
