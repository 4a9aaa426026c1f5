-- TimescaleDB must be available to the server (shared_preload_libraries = timescaledb).
CREATE EXTENSION IF NOT EXISTS timescaledb;

-- Raw frames, device status and dead letters (DESIGN.md, "Database").
-- Hypertables on the capture time ts; one unique index on (device_id, sample_id, ts) per
-- hypertable makes every write idempotent: a redelivered message inserts nothing.
-- Matrices are flattened row-major (zone i = r*layout + c, domain.md section 1) into typed
-- arrays, never JSON text. Fields a frame carries beyond the v1 contract go to `extra`.

CREATE TABLE tof_frames (
    ts                timestamptz NOT NULL,
    line_id           text        NOT NULL,
    device_id         text        NOT NULL,
    sample_id         text        NOT NULL,
    seq               bigint      NOT NULL,
    v                 smallint    NOT NULL,
    layout            smallint    NOT NULL CHECK (layout IN (4, 8)),
    distance_mm       smallint[]  NOT NULL,
    target_status     smallint[]  NOT NULL,
    signal_per_spad   real[]      NOT NULL,
    ambient_per_spad  real[]      NOT NULL,
    range_sigma_mm    real[]      NOT NULL,
    reflectance_pct   real[]      NOT NULL,
    ranging_hz        real,
    integration_ms    real,
    sensor_temp_c     real,
    -- VL53L8CH compact normalised histogram (CNH), when the node sends it (domain.md section 1):
    -- hist_bins is (zones x bins) flattened row-major, hist_bin_count bins per zone.
    hist_start_bin    integer,
    hist_sub_sample   integer,
    hist_bin_width_mm real,
    hist_agg_map      integer[],
    hist_bin_count    integer,
    hist_bins         real[],
    hist_ambient      real[],
    extra             jsonb,
    received_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(distance_mm) = layout * layout)
);
SELECT create_hypertable('tof_frames', by_range('ts', INTERVAL '1 day'));
CREATE UNIQUE INDEX tof_frames_key ON tof_frames (device_id, sample_id, ts);
CREATE INDEX tof_frames_line_ts ON tof_frames (line_id, ts DESC);

-- AS7341 channels as one integer column each (raw 16-bit counts, domain.md section 3).
CREATE TABLE spectral_frames (
    ts             timestamptz NOT NULL,
    line_id        text        NOT NULL,
    device_id      text        NOT NULL,
    sample_id      text        NOT NULL,
    seq            bigint      NOT NULL,
    v              smallint    NOT NULL,
    f1_415nm       integer     NOT NULL,
    f2_445nm       integer     NOT NULL,
    f3_480nm       integer     NOT NULL,
    f4_515nm       integer     NOT NULL,
    f5_555nm       integer     NOT NULL,
    f6_590nm       integer     NOT NULL,
    f7_630nm       integer     NOT NULL,
    f8_680nm       integer     NOT NULL,
    clear          integer     NOT NULL,
    nir_910nm      integer     NOT NULL,
    flicker        integer     NOT NULL,
    gain           real        NOT NULL,
    atime          smallint    NOT NULL,
    astep          integer     NOT NULL,
    integration_ms real        NOT NULL,
    led_ma         smallint    NOT NULL,
    saturated      text[]      NOT NULL,
    flicker_hz     smallint,
    extra          jsonb,
    received_at    timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('spectral_frames', by_range('ts', INTERVAL '1 day'));
CREATE UNIQUE INDEX spectral_frames_key ON spectral_frames (device_id, sample_id, ts);
CREATE INDEX spectral_frames_line_ts ON spectral_frames (line_id, ts DESC);

-- A status message has no sample; sample_id is the constant 'status' so the same unique key
-- (device_id, sample_id, ts) dedups redeliveries. ts is the device's clock, or the arrival
-- time for a last will (which carries only `state`).
CREATE TABLE device_status (
    ts            timestamptz NOT NULL,
    line_id       text        NOT NULL,
    device_id     text        NOT NULL,
    sample_id     text        NOT NULL DEFAULT 'status',
    v             smallint    NOT NULL,
    state         text        NOT NULL CHECK (state IN ('online', 'offline')),
    firmware      text,
    temperature_c real,
    humidity_pct  real,
    uptime_s      double precision,
    extra         jsonb,
    received_at   timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('device_status', by_range('ts', INTERVAL '7 days'));
CREATE UNIQUE INDEX device_status_key ON device_status (device_id, sample_id, ts);

-- Messages no stage could use: kept with their bytes so they can be inspected or replayed.
CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    stage       text        NOT NULL,
    topic       text        NOT NULL,
    line_id     text,
    device_id   text,
    reason      text        NOT NULL,
    detail      text        NOT NULL,
    payload     bytea       NOT NULL
);
CREATE INDEX dead_letters_received ON dead_letters (received_at DESC);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at DESC);
