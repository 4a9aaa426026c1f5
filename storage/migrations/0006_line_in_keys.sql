-- A device id is unique within its line only (docs/contract.md): every keyed table's unique
-- index becomes (line_id, device_id, sample_id, ts). Before, a frame of L2/b01 sharing a sample
-- id and ts with one of L1/b01 was taken for its duplicate and silently dropped.
--
-- Safe on a populated database: the new index is built first (rows unique on the old key are
-- unique on the wider one, so it cannot fail), then the old one is dropped, in this file's one
-- transaction. Writers keep working throughout: their INSERT … ON CONFLICT DO NOTHING names no
-- index. Building the index locks each table against writes while it runs; ingest waits and
-- the broker queues meanwhile (nothing is lost, docs/reliability.md).

CREATE UNIQUE INDEX tof_frames_line_key ON tof_frames (line_id, device_id, sample_id, ts);
DROP INDEX tof_frames_key;

CREATE UNIQUE INDEX spectral_frames_line_key ON spectral_frames (line_id, device_id, sample_id, ts);
DROP INDEX spectral_frames_key;

CREATE UNIQUE INDEX device_status_line_key ON device_status (line_id, device_id, sample_id, ts);
DROP INDEX device_status_key;

CREATE UNIQUE INDEX results_line_key ON results (line_id, device_id, sample_id, ts);
DROP INDEX results_key;

CREATE UNIQUE INDEX device_config_line_key ON device_config (line_id, device_id, sample_id, ts);
DROP INDEX device_config_key;
