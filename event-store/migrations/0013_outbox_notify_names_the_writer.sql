-- The outbox NOTIFY names the session that committed (its application_name, which every pool
-- of the services sets apart), so a relay passes over the commits of its own pool: the command
-- bus in the same process has woken it already, and the second wake-up found nothing to do.
-- A commit of another replica (another name) still wakes the leader. Notifications with the
-- same payload are still folded into one per transaction.
CREATE OR REPLACE FUNCTION events_enqueue_outbox() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = public, pg_temp AS
$$
BEGIN
    INSERT INTO outbox (aggregate_type, aggregate_id, sequence)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);
    PERFORM pg_notify('outbox', coalesce(current_setting('application_name', true), ''));
    RETURN NULL;
END;
$$;
