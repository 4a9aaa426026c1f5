"""Product profiles: every constant the simulator renders with and the analyzer scores with.

A profile is a YAML file under ``profiles/`` (docs/domain.md §6). ``extends: NAME`` deep-merges the
named profile under this one, so a variant lists only what differs; the merged result is
validated as a whole. Unknown keys and impossible values are one-line :class:`ConfigError`s
naming the key, e.g. ``profile pate_terrine_300g: tof.tilt_deg.good: ...``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sqal.errors import ConfigError
from sqal.wire.enums import Grade
from sqal.wire.models import SpectralAnchors, SpectralSettings

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
"""The repository's ``profiles/``; ``SQAL_PROFILES_DIR`` points elsewhere."""

Pos = Annotated[float, Field(gt=0)]
NonNeg = Annotated[float, Field(ge=0)]
Frac = Annotated[float, Field(ge=0, le=1)]


def tne_g(nominal_g: float) -> float:
    """Tolerable negative error of Directive 76/211/EEC Annex I for a nominal quantity (g).

    One definition for the analyzer (underfill), the simulator (its truth) and the dashboards.

    The table is continuous at its bounds (50 g: 9 % = 4.5 g, ...), so bound inclusion does not
    matter.
    """
    q = nominal_g
    if q <= 50:
        return 0.09 * q
    if q <= 100:
        return 4.5
    if q <= 200:
        return 0.045 * q
    if q <= 300:
        return 9.0
    if q <= 500:
        return 0.03 * q
    if q <= 1000:
        return 15.0
    if q <= 10_000:
        return 0.015 * q
    if q <= 15_000:
        return 150.0
    return 0.01 * q


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _ordered(name: str, lo: float, hi: float) -> None:
    if not lo < hi:
        raise ValueError(f"{name}: {lo} must be below {hi}")


class MassModel(_Strict):
    a_g: float = 0.0
    b_g_per_cm3: Pos
    sigma_frac: Frac


class Product(_Strict):
    kind: Literal["free_form", "fills_tray"]
    nominal_mass_g: Pos
    mass_range_g: tuple[Pos, Pos]
    density_g_cm3: Pos
    mass_model: MassModel

    @model_validator(mode="after")
    def _range(self) -> Product:
        _ordered("mass_range_g", *self.mass_range_g)
        return self


class Tray(_Strict):
    inner_length_mm: Pos
    inner_width_mm: Pos
    corner_radius_mm: NonNeg
    depth_mm: Pos
    seal_limit_mm: Pos

    @model_validator(mode="after")
    def _fits(self) -> Tray:
        if 2 * self.corner_radius_mm > min(self.inner_length_mm, self.inner_width_mm):
            raise ValueError("corner_radius_mm: wider than half the tray")
        if self.seal_limit_mm > self.depth_mm:
            raise ValueError("seal_limit_mm: above the tray's depth")
        return self

    @property
    def area_mm2(self) -> float:
        """Inner area of the rounded rectangle: L·W − (4 − π)r²."""
        import math

        r = self.corner_radius_mm
        return self.inner_length_mm * self.inner_width_mm - (4 - math.pi) * r * r


class Roi(_Strict):
    min_inside: Annotated[float, Field(gt=0, le=1)] = 0.8
    offset_mm: tuple[float, float] = (0.0, 0.0)
    zone_mask: list[list[bool]] | None = None


class MaxHeight(_Strict):
    target_mm: Pos
    tol_mm: tuple[NonNeg, Pos]

    @model_validator(mode="after")
    def _tol(self) -> MaxHeight:
        _ordered("tol_mm", *self.tol_mm)
        return self


class Roughness(_Strict):
    minor: Pos
    critical: Pos | None = None


class TiltLimits(_Strict):
    good: NonNeg
    bad: Pos
    minor: Pos
    critical: Pos

    @model_validator(mode="after")
    def _order(self) -> TiltLimits:
        _ordered("good/bad", self.good, self.bad)
        _ordered("minor/critical", self.minor, self.critical)
        return self


class ValidShare(_Strict):
    minor: Frac
    critical: Frac

    @model_validator(mode="after")
    def _order(self) -> ValidShare:
        _ordered("critical/minor", self.critical, self.minor)
        return self


class TofWeights(_Strict):
    fill: NonNeg
    height: NonNeg
    uniformity: NonNeg
    tilt: NonNeg


class TofProfile(_Strict):
    layout: Literal[4, 8] = 8
    mount_distance_mm: Annotated[float, Field(gt=20, le=4000)]
    roi: Roi = Field(default_factory=Roi)
    valid_status: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        default_factory=lambda: [5, 6, 9]
    )
    max_sigma_mm: Pos
    min_signal_kcps: NonNeg
    product_min_height_mm: NonNeg
    volume_method: Literal["integrate", "mean_height_x_area"]
    fill_tol: tuple[NonNeg, Pos]
    max_height: MaxHeight
    surface_r0_mm: Pos
    roughness_mm: Roughness
    tilt_deg: TiltLimits
    underfill_z: NonNeg
    overfill_minor: Pos
    valid_share: ValidShare
    weights: TofWeights

    @model_validator(mode="after")
    def _checks(self) -> TofProfile:
        _ordered("fill_tol", *self.fill_tol)
        m = self.roi.zone_mask
        if m is not None and (len(m) != self.layout or any(len(r) != self.layout for r in m)):
            raise ValueError(f"roi.zone_mask: must be {self.layout}x{self.layout}")
        return self


class Thresholds(_Strict):
    ok: NonNeg
    bad: Pos
    minor: Pos
    critical: Pos

    @model_validator(mode="after")
    def _order(self) -> Thresholds:
        _ordered("ok/bad", self.ok, self.bad)
        _ordered("minor/critical", self.minor, self.critical)
        return self


class OxidationLimits(_Strict):
    minor: Frac
    critical: Frac

    @model_validator(mode="after")
    def _order(self) -> OxidationLimits:
        _ordered("minor/critical", self.minor, self.critical)
        return self


class SpectralWeights(_Strict):
    freshness: NonNeg
    fat_quality: NonNeg
    oxidation: NonNeg
    color_uniformity: NonNeg


class SpectralProfile(_Strict):
    settings: SpectralSettings = Field(default_factory=SpectralSettings)
    raw_min: NonNeg = 30
    saturation_frac: Annotated[float, Field(gt=0, le=1)] = 0.98
    distance_correction: bool = True
    lab_ref: tuple[float, float, float]
    de: Thresholds
    db: Thresholds
    w_heme: Frac
    w_m: Frac
    anchors: SpectralAnchors
    nr_tol: tuple[NonNeg, Pos]
    cv_tol: tuple[NonNeg, Pos]
    u_minor: Frac
    oxidation: OxidationLimits
    weights: SpectralWeights

    @model_validator(mode="after")
    def _checks(self) -> SpectralProfile:
        _ordered("nr_tol", *self.nr_tol)
        _ordered("cv_tol", *self.cv_tol)
        return self


class Grading(_Strict):
    A: Frac
    B: Frac
    C: Frac
    minor_defect_cap: Grade = Grade.B
    missing_sensor_cap: Grade = Grade.B
    min_confidence: Frac = 0.5

    @model_validator(mode="after")
    def _order(self) -> Grading:
        if not self.A > self.B > self.C:
            raise ValueError("thresholds must fall A > B > C")
        return self


class FusionWeights(_Strict):
    tof: NonNeg
    spectral: NonNeg

    @model_validator(mode="after")
    def _some(self) -> FusionWeights:
        if self.tof + self.spectral <= 0:
            raise ValueError("tof + spectral must be positive")
        return self


class Prior(_Strict):
    """What the line declares about its product before any tray is measured (docs/domain.md §5).

    ``fill_mean`` and ``fill_sd``: the filler's setting, mass as a multiple of Qn and its
    relative spread (a plant knows both from its checkweigher's statistics: WELMEC 6.4 sets
    them); ``defect_rate``: the share of trays whose fill lies anywhere in ``mass_range_g``
    (short or heavy fills) rather than around the setting.
    """

    fill_mean: Annotated[float, Field(gt=0.5, lt=1.5)]
    fill_sd: Annotated[float, Field(gt=0.0, le=0.2)]
    defect_rate: Annotated[float, Field(gt=0.0, lt=1.0)]


class Decision(_Strict):
    """How probabilities become PASS/HOLD/REJECT (docs/domain.md §5, revised 2026-12).

    REJECT when P(grade REJECT) ≥ ``p_reject``, HOLD (the re-check lane) when ≥ ``p_hold``,
    else PASS: the two costs of a plant, a shipped defect against a good tray held or binned.
    """

    p_reject: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    p_hold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.02
    prior: Prior

    @model_validator(mode="after")
    def _order(self) -> Decision:
        _ordered("p_hold, p_reject", self.p_hold, self.p_reject)
        return self


class Population(_Strict):
    """How a simulated line fills and spoils trays (docs/domain.md §7 "Scenarios").

    The simulator's alone: the analyzer never reads it. ``fill_mean`` and ``fill_sd`` are the
    filler's mass as a multiple of Qn and its relative spread; ``defect_rate`` is the injection
    rate of each defect (``--defect-rate`` overrides it).
    """

    fill_mean: Annotated[float, Field(gt=0.5, lt=1.5)]
    fill_sd: Annotated[float, Field(ge=0.0, le=0.2)]
    defect_rate: Annotated[float, Field(ge=0.0, le=0.1)]
    dome_gamma: tuple[
        Annotated[float, Field(gt=0.0, le=2.0)], Annotated[float, Field(gt=0.0, le=2.0)]
    ] = (
        0.30,
        0.40,
    )
    """A free-form lobe's dome exponent γ ~ U(lo, hi) (docs/domain.md §7, ``h = H·(1 − ρ²)^γ``):
    the lower, the flatter its top and the lower its peak for the same volume."""

    @model_validator(mode="after")
    def _gamma(self) -> Population:
        _ordered("dome_gamma", *self.dome_gamma)
        return self


SCENARIOS = ("production", "stress")
"""``sqal sim --scenario``: a plant's line (the default), or the first simulator's population."""


class Scenarios(_Strict):
    production: Population
    stress: Population

    def get(self, name: str) -> Population:
        """The named scenario's population.

        Raises:
            ConfigError: not one of :data:`SCENARIOS`.
        """
        if name not in SCENARIOS:
            raise ConfigError(f"--scenario {name!r}: must be one of {', '.join(SCENARIOS)}")
        pop: Population = getattr(self, name)
        return pop


class Alerts(_Strict):
    """What the monitoring stack holds a line running this product to (prometheus/rules).

    ``reject_rate_max``: the share of REJECT decisions above which the line is alerted on; the
    analyzer exposes it as ``sqal_analyzer_reject_rate_max{line}``.
    """

    reject_rate_max: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05


class Profile(_Strict):
    """A complete, validated product profile (after ``extends`` was merged)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    product: Product
    tray: Tray
    tof: TofProfile
    spectral: SpectralProfile
    grading: Grading
    fusion: FusionWeights
    decision: Decision
    scenarios: Scenarios
    alerts: Alerts = Alerts()

    @model_validator(mode="after")
    def _depth(self) -> Profile:
        if self.tof.max_height.target_mm > self.tray.depth_mm + 20:
            raise ValueError("tof.max_height.target_mm: far above the tray")
        return self


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid onto ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def profiles_dir() -> Path:
    return Path(os.environ.get("SQAL_PROFILES_DIR", PROFILES_DIR))


def _read_raw(name: str, folder: Path, seen: tuple[str, ...]) -> dict[str, Any]:
    if name in seen:
        raise ConfigError(f"profile {name}: extends itself through {' -> '.join(seen)}")
    path = folder / f"{name}.yaml"
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise ConfigError(f"unknown profile {name!r} (known: {known})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile {name}: not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"profile {name}: top level must be a mapping")
    parent = doc.pop("extends", None)
    if parent is None:
        return doc
    return deep_merge(_read_raw(str(parent), folder, (*seen, name)), doc)


def parse_profile(doc: dict[str, Any], label: str = "profile") -> Profile:
    """Validate a merged profile document.

    Raises:
        ConfigError: one line naming the first bad key.
    """
    try:
        return Profile.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{label}: {key}: {msg}") from None


@functools.lru_cache(maxsize=64)
def _load_cached(name: str, folder: str) -> Profile:
    raw = _read_raw(name, Path(folder), ())
    raw.setdefault("name", name)
    return parse_profile(raw, f"profile {name}")


def load_profile(name: str, folder: Path | None = None) -> Profile:
    """Load, merge and validate ``profiles/{name}.yaml``.

    Raises:
        ConfigError: unknown profile, bad YAML, or a key that does not validate.
    """
    return _load_cached(name, str((folder or profiles_dir()).resolve()))


def profile_names(folder: Path | None = None) -> list[str]:
    """Names of the profiles in the folder."""
    return sorted(p.stem for p in (folder or profiles_dir()).glob("*.yaml"))
