-- Checkweigher weights (issue 17), as ingest receives them on sqal/v1/{line}/{device}/weight:
-- one per tray, carrying the sample_id of the tray's ToF and spectral frames, so a weight joins
-- its frames and result on (line_id, device_id, sample_id). ts is when the tray was weighed.
-- Keyed like every frame table since 0006, so a redelivered weight inserts nothing and one with
-- the same key and another mass is a conflict. Fields beyond the v1 contract go to `extra`.
CREATE TABLE weights (
    ts          timestamptz      NOT NULL,
    line_id     text             NOT NULL,
    device_id   text             NOT NULL,
    sample_id   text             NOT NULL,
    seq         bigint           NOT NULL,
    v           smallint         NOT NULL,
    -- double precision: a checkweigher reads to 0.1 g or finer; a real would store 400.3 g as
    -- 400.29998779296875.
    mass_g      double precision NOT NULL CHECK (mass_g > 0),
    sigma_g     double precision CHECK (sigma_g > 0),
    extra       jsonb,
    received_at timestamptz      NOT NULL DEFAULT now()
);
SELECT create_hypertable('weights', by_range('ts', INTERVAL '1 day'));
CREATE UNIQUE INDEX weights_line_key ON weights (line_id, device_id, sample_id, ts);
CREATE INDEX weights_line_ts ON weights (line_id, ts DESC);

GRANT SELECT, INSERT ON weights TO sqal_ingest;
GRANT SELECT ON weights TO sqal_reader;

-- A config says whether a checkweigher weighs the device's trays, and with what uncertainty;
-- kept whole like the sensor settings (NULL: no checkweigher). Adding a nullable column rewrites
-- nothing: existing rows read NULL, which is what their configs said.
ALTER TABLE device_config ADD COLUMN checkweigher jsonb;
