-- Loss made visible (issue 9): the broker's own counters, as ingest reads them from $SYS.
-- Mosquitto 2.0 publishes them every sys_interval (10 s): $SYS/broker/publish/messages/dropped
-- (QoS 1/2 messages it dropped because a client's queue or inflight window was full),
-- .../received, .../sent and $SYS/broker/store/messages/count. They are cumulative since the
-- broker started; a restart resets them, so read them with increase()-like SQL per run.
CREATE TABLE broker_stats (
    ts      timestamptz      NOT NULL,
    counter text             NOT NULL,
    value   double precision NOT NULL
);
SELECT create_hypertable('broker_stats', by_range('ts', INTERVAL '7 days'));
CREATE UNIQUE INDEX broker_stats_key ON broker_stats (counter, ts);

GRANT SELECT, INSERT ON broker_stats TO sqal_ingest;
GRANT SELECT ON broker_stats TO sqal_reader;
