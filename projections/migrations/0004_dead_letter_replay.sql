-- Dead letters that an operator can replay in order. An aggregate whose event is dead-lettered
-- is held: its later events are dead-lettered behind it rather than applied out of order, so
-- a replay applies the whole run in sequence and the read model ends as a rebuild would make it.
ALTER TABLE projection_positions
    ADD COLUMN held boolean NOT NULL DEFAULT false;

ALTER TABLE dead_letters
    ADD COLUMN aggregate_type text,
    ADD COLUMN aggregate_id   text,
    ADD COLUMN sequence       bigint;

CREATE INDEX dead_letters_aggregate ON dead_letters (projection, aggregate_type, aggregate_id, sequence);
