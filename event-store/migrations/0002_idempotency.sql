-- Idempotency of commands: the first answer to a key is kept, and a repeat gets it back.
--
-- An accepted command's row is written by a trigger on `events`, in the transaction that
-- appends its events, from the event metadata (`idempotency_key`, `request_hash`,
-- `causation_id`): a crash can never leave events without their idempotency row. A second
-- execution racing under the same key fails with unique_violation (which postgres-es reports
-- as an optimistic-lock conflict); the command bus retries, finds the row, and answers with it.
-- A rejected command's row is written by the bus itself, since it appends no events.
CREATE TABLE idempotency
(
    key            text PRIMARY KEY,
    request_hash   text        NOT NULL,
    command_id     text        NOT NULL,
    aggregate_type text,
    aggregate_id   text,
    first_sequence bigint,
    last_sequence  bigint,
    -- For a rejected command: {"reason": ..., "message": ...}.
    rejection      jsonb,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION events_record_idempotency() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    idem_key text := NEW.metadata ->> 'idempotency_key';
    updated  int;
BEGIN
    IF idem_key IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO idempotency (key, request_hash, command_id, aggregate_type, aggregate_id,
                             first_sequence, last_sequence)
    VALUES (idem_key, NEW.metadata ->> 'request_hash', NEW.metadata ->> 'causation_id',
            NEW.aggregate_type, NEW.aggregate_id, NEW.sequence, NEW.sequence)
    ON CONFLICT (key) DO UPDATE SET last_sequence = EXCLUDED.last_sequence
    WHERE idempotency.command_id = EXCLUDED.command_id
      AND idempotency.aggregate_id = EXCLUDED.aggregate_id;
    GET DIAGNOSTICS updated = ROW_COUNT;
    IF updated = 0 THEN
        RAISE EXCEPTION 'idempotency key % was used by another command', idem_key
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_record_idempotency
    AFTER INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION events_record_idempotency();
