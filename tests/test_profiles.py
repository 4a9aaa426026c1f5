"""Product profiles: extends deep-merges, and every bad key is a one-line error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sqal.errors import ConfigError
from sqal.profiles import deep_merge, load_profile, profile_names


def test_shipped_profiles_load() -> None:
    assert {"foie_gras_lobe_400g", "pate_terrine_300g"} <= set(profile_names())
    foie = load_profile("foie_gras_lobe_400g")
    assert foie.tof.mount_distance_mm == 260
    assert foie.tof.volume_method == "integrate"


def test_extends_deep_merges_and_keeps_the_parents_other_keys() -> None:
    pate = load_profile("pate_terrine_300g")
    assert pate.product.kind == "fills_tray"
    assert pate.tof.tilt_deg.critical == 10
    assert pate.tof.max_sigma_mm == 8  # from the parent
    assert pate.spectral.de.critical == 12  # from the parent
    assert pate.spectral.anchors.MI_fresh == 1.0
    assert pate.fusion.tof == 0.6


def test_deep_merge_replaces_lists() -> None:
    assert deep_merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}}


def write(folder: Path, name: str, doc: dict[str, object]) -> None:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"tof": {"tilt_deg": {"good": 99}}}, "tof.tilt_deg"),
        ({"tof": {"layout": 6}}, "tof.layout"),
        ({"tof": {"colour": 1}}, "tof.colour"),
        ({"tray": {"seal_limit_mm": 80}}, "tray"),
        ({"spectral": {"settings": {"gain": 3}}}, "spectral.settings.gain"),
        ({"grading": {"A": 0.5}}, "grading"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, override: dict[str, object], key: str) -> None:
    src = Path(__file__).resolve().parent.parent / "profiles" / "foie_gras_lobe_400g.yaml"
    (tmp_path / "base.yaml").write_text(src.read_text())
    write(tmp_path, "bad", {"name": "bad", "extends": "base", **override})
    with pytest.raises(ConfigError) as info:
        load_profile("bad", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"profile bad: {key}")


def test_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "only", {"name": "only"})
    with pytest.raises(ConfigError, match=r"unknown profile 'nope' \(known: only\)"):
        load_profile("nope", tmp_path)


def test_extends_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a", {"extends": "b"})
    write(tmp_path, "b", {"extends": "a"})
    with pytest.raises(ConfigError, match="extends itself"):
        load_profile("a", tmp_path)


@pytest.mark.parametrize(
    ("qn_g", "tne"),
    [(40, 3.6), (50, 4.5), (80, 4.5), (150, 6.75), (300, 9.0), (400, 12.0), (800, 15.0)],
)
def test_tne_follows_directive_76_211(qn_g: float, tne: float) -> None:
    from sqal.profiles import tne_g

    assert tne_g(qn_g) == pytest.approx(tne)
