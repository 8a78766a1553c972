-- The creation time of the stream a projection's checkpoint counts in. A stream that was
-- deleted and made again starts its sequences over: a checkpoint of the old one would skip
-- the new one's first events, so the worker resets it when the times differ.
-- NULL for checkpoints written before this column: taken as the current stream.
ALTER TABLE projection_checkpoints ADD COLUMN stream_created timestamptz;
