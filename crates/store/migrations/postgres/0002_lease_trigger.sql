-- Leasing a job marks its message as processing inside the same statement,
-- so a lease is one autocommit UPDATE (no transaction round trips).
CREATE FUNCTION mark_message_processing() RETURNS trigger AS $$
BEGIN
    UPDATE messages SET status = 'processing' WHERE id = NEW.message_id;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_leased AFTER UPDATE OF lease_token ON jobs
FOR EACH ROW WHEN (NEW.state = 'leased')
EXECUTE FUNCTION mark_message_processing();
