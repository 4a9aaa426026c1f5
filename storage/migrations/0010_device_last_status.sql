-- Each device's latest status, one row per (line_id, device_id) (issue 18 item 5). The Fleet
-- board's line and device variables list the devices from here instead of scanning the whole
-- device_status history, which grows by one row per device every 30 s and forever.
-- Maintained by ingest in the transaction that inserts the status rows (storage/laststatus.py):
-- an upsert that keeps the row of largest ts, so a late or redelivered status never rolls it
-- back. `sqal db retention` deletes a row once its device_status row has been dropped.
-- Numbered 0010 while 0009 came from another branch; migrate applies whatever is not applied
-- yet, in version order, so either may land first.
CREATE TABLE device_last_status (
    line_id       text        NOT NULL,
    device_id     text        NOT NULL,
    ts            timestamptz NOT NULL,
    state         text        NOT NULL,
    firmware      text,
    temperature_c real,
    humidity_pct  real,
    uptime_s      double precision,
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (line_id, device_id)
);

-- The history so far. An ingest of an earlier build goes on writing device_status without
-- this table; its devices' rows catch up with their next status (every 30 s) once ingest is
-- restarted on this build, as after every migration.
INSERT INTO device_last_status
SELECT DISTINCT ON (line_id, device_id)
    line_id, device_id, ts, state, firmware, temperature_c, humidity_pct, uptime_s, received_at
FROM device_status
ORDER BY line_id, device_id, ts DESC;

GRANT SELECT, INSERT, UPDATE ON device_last_status TO sqal_ingest;
GRANT SELECT ON device_last_status TO sqal_reader;
