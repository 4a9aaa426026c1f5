-- Device configurations as ingest receives them on sqal/v1/{line}/{device}/config (issue 10),
-- so every result row can be traced to the calibration in force: results.calibration_id =
-- device_config.calibration_id. Settings and the calibration block are kept whole (jsonb: they
-- are read by audits, not aggregated). ts is the config's own time (set by `sqal config set`,
-- `sqal calibrate` and the simulator), or its arrival time when it has none; sample_id is the
-- constant 'config', so a retained config delivered again inserts nothing.
CREATE TABLE device_config (
    ts             timestamptz NOT NULL,
    line_id        text        NOT NULL,
    device_id      text        NOT NULL,
    sample_id      text        NOT NULL DEFAULT 'config',
    v              smallint    NOT NULL,
    profile        text        NOT NULL,
    calibration_id text,
    calibration_ts timestamptz,
    tof            jsonb       NOT NULL,
    spectral       jsonb       NOT NULL,
    calibration    jsonb,
    received_at    timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('device_config', by_range('ts', INTERVAL '30 days'));
CREATE UNIQUE INDEX device_config_key ON device_config (device_id, sample_id, ts);
CREATE INDEX device_config_calibration ON device_config (calibration_id);

GRANT SELECT, INSERT ON device_config TO sqal_ingest;
GRANT SELECT ON device_config TO sqal_reader;
