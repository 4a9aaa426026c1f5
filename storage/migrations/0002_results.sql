-- Analysed samples and their per-minute roll-ups (DESIGN.md, "Database"; domain.md section 5).
-- A sensor section is NULL when its frame never came: every tof_* / spectral_* column is
-- nullable and tof_present / spectral_present say which sections the result had.

CREATE TABLE results (
    ts                       timestamptz NOT NULL,
    line_id                  text        NOT NULL,
    device_id                text        NOT NULL,
    sample_id                text        NOT NULL,
    v                        smallint    NOT NULL,
    profile                  text        NOT NULL,
    calibration_id           text,
    final_score              real,
    final_grade              text        NOT NULL CHECK (final_grade IN ('A', 'B', 'C', 'REJECT')),
    confidence               real        NOT NULL,
    defects                  text[]      NOT NULL,
    tof_present              boolean     NOT NULL,
    tof_volume_mm3           real,
    tof_mass_g               real,
    tof_avg_height_mm        real,
    tof_max_height_mm        real,
    tof_height_variation_mm  real,
    tof_surface_uniformity   real,
    tof_tilt_deg             real,
    tof_fill_ratio           real,
    tof_valid_zones          smallint,
    tof_quality_score        real,
    tof_grade                text,
    tof_defects              text[],
    spectral_present         boolean     NOT NULL,
    spectral_freshness_index real,
    spectral_fat_quality_index real,
    spectral_oxidation_index real,
    spectral_color_uniformity real,
    spectral_lab_l           real,
    spectral_lab_a           real,
    spectral_lab_b           real,
    spectral_quality_score   real,
    spectral_grade           text,
    spectral_defects         text[],
    analyzer_version         text        NOT NULL,
    processing_ms            real        NOT NULL,
    received_at              timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('results', by_range('ts', INTERVAL '1 day'));
CREATE UNIQUE INDEX results_key ON results (device_id, sample_id, ts);
CREATE INDEX results_line_ts ON results (line_id, ts DESC);

-- Per-minute roll-ups, maintained by ingest in the same transaction as the rows they count and
-- only from rows that were really inserted (INSERT ... ON CONFLICT DO NOTHING RETURNING), so
-- they stay exact under redelivery. Mean score = score_sum / score_count (final_score may be
-- NULL). These work on the Apache edition; no continuous aggregate is needed.
CREATE TABLE results_1m (
    bucket      timestamptz NOT NULL,
    line_id     text        NOT NULL,
    device_id   text        NOT NULL,
    n_total     bigint      NOT NULL DEFAULT 0,
    n_a         bigint      NOT NULL DEFAULT 0,
    n_b         bigint      NOT NULL DEFAULT 0,
    n_c         bigint      NOT NULL DEFAULT 0,
    n_reject    bigint      NOT NULL DEFAULT 0,
    score_sum   double precision NOT NULL DEFAULT 0,
    score_count bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (line_id, device_id, bucket)
);
SELECT create_hypertable('results_1m', by_range('bucket', INTERVAL '30 days'));

CREATE TABLE defects_1m (
    bucket    timestamptz NOT NULL,
    line_id   text        NOT NULL,
    device_id text        NOT NULL,
    defect    text        NOT NULL,
    n         bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (line_id, device_id, defect, bucket)
);
SELECT create_hypertable('defects_1m', by_range('bucket', INTERVAL '30 days'));

-- What Grafana reads: the mean next to the counts.
CREATE VIEW results_1m_view AS
SELECT bucket, line_id, device_id, n_total, n_a, n_b, n_c, n_reject,
       CASE WHEN score_count > 0 THEN score_sum / score_count END AS mean_score,
       CASE WHEN n_total > 0 THEN n_reject::double precision / n_total END AS reject_rate
FROM results_1m;
