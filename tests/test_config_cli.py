"""sqal config set/show against a real broker: validated before publishing, retained after."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from app.cli import main
from embedded import Mosquitto
from sqal import devices
from sqal.wire import Calibration, DeviceConfig


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_set_then_show_round_trips(broker: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["config", "set", "cfg1/d1", "--profile", "pate_terrine_300g",
                        "--set", "spectral.gain=32", "--set", "tof.ranging_hz=10",
                        "--broker", broker.url], capsys)  # fmt: skip
    assert code == 0, err
    code, out, _ = run(["config", "show", "cfg1/d1", "--broker", broker.url, "--json"], capsys)
    doc = json.loads(out)["sqal/v1/cfg1/d1/config"]
    assert code == 0
    assert doc["profile"] == "pate_terrine_300g"
    assert doc["spectral"]["gain"] == 32
    assert doc["tof"]["ranging_hz"] == 10
    assert doc["tof"]["layout"] == 8  # untouched settings keep their defaults


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "nope"], "unknown profile 'nope'"),
        (["--profile", "pate_terrine_300g", "--set", "spectral.gain=3"], "spectral.gain"),
        (["--profile", "pate_terrine_300g", "--set", "tof.ranging_hz=30"], "at most 15"),
        (["--profile", "pate_terrine_300g", "--set", "tof.colour=1"], "tof.colour"),
        (["--profile", "pate_terrine_300g", "--set", "calibration.d0_mm=3"], "only tof.*"),
        (["--profile", "pate_terrine_300g", "--set", "gain"], "SECTION.KEY=VALUE"),
        (["--profile", "foie_gras_lobe_400g", "--set", "tof.layout=4"], "differs from profile"),
    ],
)
def test_bad_settings_are_refused_before_publishing(
    broker: Mosquitto, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run(["config", "set", "cfg2/d1", *args, "--broker", broker.url], capsys)
    assert code == 1
    assert err.startswith("Error: ")
    assert message in err
    assert err.count("\n") == 1
    code, _, err = run(["config", "show", "cfg2/d1", "--broker", broker.url], capsys)
    assert code == 1
    assert "no config is retained" in err


def test_changed_settings_drop_the_calibration(
    broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    target = devices.Target.parse("cfg3/d1")
    now = datetime(2026, 11, 27, tzinfo=UTC)
    calibrated = DeviceConfig(device_id="d1", profile="pate_terrine_300g", ts=now,
                              calibration=Calibration(id="cal-1", ts=now, d0_mm=200.5))  # fmt: skip
    asyncio.run(devices.publish_config(broker.url, target, calibrated))

    code, _, err = run(["config", "set", "cfg3/d1", "--profile", "pate_terrine_300g",
                        "--broker", broker.url], capsys)  # fmt: skip
    assert code == 0
    assert err == ""
    code, out, _ = run(["config", "show", "cfg3/d1", "--broker", broker.url, "--json"], capsys)
    assert json.loads(out)["sqal/v1/cfg3/d1/config"]["calibration"]["id"] == "cal-1"

    code, _, err = run(["config", "set", "cfg3/d1", "--profile", "pate_terrine_300g",
                        "--set", "spectral.led_ma=30", "--broker", broker.url], capsys)  # fmt: skip
    assert code == 0
    assert "calibration cal-1 dropped" in err
    code, out, _ = run(["config", "show", "cfg3/d1", "--broker", broker.url, "--json"], capsys)
    assert "calibration" not in json.loads(out)["sqal/v1/cfg3/d1/config"]


def test_the_checkweigher_block_survives_a_product_change(
    broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """The line's checkweigher (#17) is hardware: a new product or setting keeps it."""
    target = devices.Target.parse("cfg4/d1")
    now = datetime(2026, 11, 27, tzinfo=UTC)
    weighed = DeviceConfig(device_id="d1", profile="pate_terrine_300g", ts=now,
                           checkweigher={"sigma_g": 0.3})  # fmt: skip
    asyncio.run(devices.publish_config(broker.url, target, weighed))
    code, _, err = run(["config", "set", "cfg4/d1", "--profile", "foie_gras_lobe_400g",
                        "--set", "spectral.led_ma=30", "--broker", broker.url], capsys)  # fmt: skip
    assert code == 0, err
    code, out, _ = run(["config", "show", "cfg4/d1", "--broker", broker.url, "--json"], capsys)
    doc = json.loads(out)["sqal/v1/cfg4/d1/config"]
    assert (doc["profile"], doc["checkweigher"]) == ("foie_gras_lobe_400g", {"sigma_g": 0.3})


def test_a_line_announces_its_checkweigher_and_takes_it_away(
    broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """--checkweigher SIGMA_G sets the block (the analyzer then waits for each tray's weight),
    0 removes it; a negative σ is a one-line error and nothing is published."""
    show = ["config", "show", "cfg5/d1", "--broker", broker.url, "--json"]
    base = ["config", "set", "cfg5/d1", "--profile", "pate_terrine_300g", "--broker", broker.url]
    code, _, err = run([*base, "--checkweigher", "0.5"], capsys)
    assert code == 0, err
    code, out, _ = run(show, capsys)
    assert json.loads(out)["sqal/v1/cfg5/d1/config"]["checkweigher"] == {"sigma_g": 0.5}
    code, _, err = run([*base, "--checkweigher", "-1"], capsys)
    assert code == 1
    assert err.startswith("Error: --checkweigher -1")
    code, _, err = run([*base, "--checkweigher", "0"], capsys)
    assert code == 0, err
    code, out, _ = run(show, capsys)
    assert "checkweigher" not in json.loads(out)["sqal/v1/cfg5/d1/config"]


def test_bad_target_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["config", "show", "L1-d1", "--broker", "mqtt://127.0.0.1:1"], capsys)
    assert code == 1
    assert "expected LINE/DEVICE" in err


def test_delete_clears_the_retained_config_and_a_second_delete_changes_nothing(
    broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["config", "set", "cfg9/d1", "--profile", "pate_terrine_300g",
                        "--broker", broker.url], capsys)  # fmt: skip
    assert code == 0, err
    code, out, err = run(["config", "delete", "cfg9/d1", "--broker", broker.url], capsys)
    assert code == 0, err
    assert out == "deleted sqal/v1/cfg9/d1/config (was profile pate_terrine_300g)\n"
    code, _, err = run(["config", "show", "cfg9/d1", "--broker", broker.url], capsys)
    assert code == 1
    assert "no config is retained for cfg9/d1" in err
    assert asyncio.run(devices.fetch_configs(broker.url, "sqal/v1/cfg9/+/config")) == {}
    code, out, _ = run(["config", "delete", "cfg9/d1", "--broker", broker.url, "--json"], capsys)
    assert code == 0
    assert json.loads(out) == {"topic": "sqal/v1/cfg9/d1/config", "deleted": False}
