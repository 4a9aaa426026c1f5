-- Dead letters you can act on (issue #18 item 6): `sqal dead redrive` republishes a row's
-- original payload on its original topic and records it here, so a row is redriven once unless
-- asked again (--force). Additive: existing rows were never redriven.

ALTER TABLE dead_letters ADD COLUMN redriven_at timestamptz;
ALTER TABLE dead_letters ADD COLUMN redrive_count integer NOT NULL DEFAULT 0;

-- `sqal dead list --line L` and the Fleet board look rows up by line, newest first.
CREATE INDEX dead_letters_line ON dead_letters (line_id, received_at DESC);
