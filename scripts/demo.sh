#!/usr/bin/env bash
# `make demo`: bring up the embedded broker and database under .sqal/, show that they work,
# and stop them again. (Grows into `sqal demo`, the whole pipeline, as its parts land.)
set -euo pipefail
cd "$(dirname "$0")/.."
SQAL=.venv/bin/sqal
DATA_DIR=${SQAL_DATA_DIR:-.sqal}
MQTT_PORT=${DEMO_MQTT_PORT:-1883}
PG_PORT=${DEMO_PG_PORT:-5432}

$SQAL version
$SQAL services up --data-dir "$DATA_DIR" --mqtt-port "$MQTT_PORT" --pg-port "$PG_PORT"
trap '$SQAL services down --data-dir "$DATA_DIR"' EXIT

echo "--- a ToF frame through the broker"
frame=$(.venv/bin/python - <<'PY'
from bench.codec import sample_tof
import numpy as np
from sqal.wire import encode
print(encode(sample_tof(np.random.default_rng(1))).decode())
PY
)
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t 'sqal/v1/+/+/tof' -C 1 -W 10 -q 1 > /tmp/sqal-demo-frame.json &
sub=$!
sleep 0.5
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -t sqal/v1/L1/dev-01/tof -q 1 -m "$frame"
wait "$sub"
.venv/bin/python -c "
import sys; from sqal.wire import decode
f = decode('sqal/v1/L1/dev-01/tof', open('/tmp/sqal-demo-frame.json','rb').read().strip())
print(f'decoded {type(f).__name__} {f.sample_id}: layout {f.layout}, centre {f.distance_mm[3][3]} mm')"

echo "--- TimescaleDB"
psql "postgresql://sqal@127.0.0.1:$PG_PORT/sqal" -Atc \
    "SELECT 'timescaledb ' || extversion || ', edition ' || current_setting('timescaledb.license') FROM pg_extension WHERE extname = 'timescaledb'"
