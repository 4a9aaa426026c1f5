"""Pydantic models of every SQAL payload (docs/contract.md).

Frames keep unknown fields (``extra="allow"``): raw storage keeps them, the analyzer ignores
them. Results, configs and dead letters are produced by SQAL itself and forbid unknown fields.

Matrices are ``layout × layout`` nested lists, row-major as the VL53L8CH ULD driver reports its
zones; their shape is checked against ``layout``.

Strict (#15): one codec decides for both services, so what it accepts the database stores
(``sqal.wire.codec`` validates JSON with ``strict=True``). No coercion (``"240"`` is not 240,
``true`` is not 1, ``"8"`` is not layout 8, a number is not a time), finite numbers only (no
NaN, Infinity or 1e400), every number within the column that holds it (smallint, bigint,
real), no NUL character in any string and no NUL or non-finite number in an unknown field
(PostgreSQL's text and jsonb cannot hold them), and ``ts`` an RFC 3339 date-time with its
offset.
"""

from __future__ import annotations

import math
import operator
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from sqal.wire.enums import (
    Channel,
    DeadReason,
    Decision,
    DefectCode,
    DeviceState,
    Grade,
    Kind,
    Mode,
    RecheckAnswer,
)
from sqal.wire.topics import ID_PATTERN

SCHEMA_VERSION = 1
"""The newest payload version this build reads and writes."""

FLOAT4_MAX = 3.4028234663852886e38
"""The largest finite ``real`` (float4): a larger number is refused, not stored as Infinity."""
Real = Annotated[float, Field(ge=-FLOAT4_MAX, le=FLOAT4_MAX)]
"""A number stored in a ``real`` column."""
Int2 = Annotated[int, Field(ge=-(2**15), le=2**15 - 1)]
Int4 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
INT8_MAX = 2**63 - 1

_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")


def _rfc3339(value: object) -> object:
    """An RFC 3339 string parsed here (so strict validation sees a datetime), or a datetime."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339.match(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("must be an RFC 3339 date-time such as 2026-12-05T08:00:00Z")


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
"""An aware time, from an RFC 3339 string on the wire (never a number, nor digits in a string)."""
Text = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00]*$")]
"""Free text that a ``text`` column holds (no NUL)."""


def _storable(value: Any) -> None:
    """Raise unless ``value`` (an unknown field, stored as jsonb) holds no NUL character in any
    string or key and no non-finite number (JSON, and so jsonb, has neither)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("NUL character in an unknown field")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("non-finite number in an unknown field")
    elif isinstance(value, dict):
        for k, v in value.items():
            _storable(k)
            _storable(v)
    elif isinstance(value, list):
        for v in value:
            _storable(v)


class _Strict(BaseModel):
    """Every model's validation rules (see the module's docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _extra_storable(self) -> Any:
        extra = self.__pydantic_extra__
        if extra:
            _storable(extra)
        return self


DeviceId = Annotated[str, StringConstraints(pattern=rf"^{ID_PATTERN}$")]
SampleId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
Score = Annotated[float, Field(ge=0.0, le=1.0)]

AS7341_GAINS: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
"""Nominal AS7341 gains, enum 0-10 (datasheet DS000718, AGAIN register)."""

TOF_LAYOUTS = (4, 8)


def _as7341_gain(value: float) -> float:
    if value not in AS7341_GAINS:
        raise ValueError(f"gain must be one of {AS7341_GAINS}")
    return value


Gain = Annotated[float, AfterValidator(_as7341_gain)]
"""A nominal AS7341 gain (AGAIN register values 0-10)."""


def _check_timing(atime: int, astep: int) -> None:
    if atime == 0 and astep == 0:
        raise ValueError("atime and astep must not both be 0 (AS7341 datasheet)")


class _Payload(_Strict):
    """Fields every payload carries."""

    v: Annotated[int, Field(ge=1, le=2**15 - 1)] = SCHEMA_VERSION
    device_id: DeviceId


class _Frame(_Payload):
    """A per-tray message: a raw sensor frame (one half of a sample) or the tray's weight."""

    model_config = ConfigDict(frozen=True, extra="allow")

    sample_id: SampleId
    seq: Annotated[int, Field(ge=0, le=INT8_MAX)]
    ts: Timestamp


_MATRICES = (
    "distance_mm",
    "target_status",
    "signal_per_spad",
    "ambient_per_spad",
    "range_sigma_mm",
    "reflectance_pct",
)


class TofHistogram(_Strict):
    """VL53L8CH compact normalised histogram (CNH), stored but not scored in v1
    (docs/domain.md §1)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    start_bin: Annotated[int, Field(ge=0, le=2**31 - 1)]
    sub_sample: Annotated[int, Field(ge=1, le=2**31 - 1)]
    bin_width_mm: Annotated[float, Field(gt=0, le=FLOAT4_MAX)]
    agg_map: list[Int4]
    bins: list[list[Real]]
    ambient: list[Real]


class TofFrame(_Frame):
    """One VL53L8CH ranging frame (per-zone fields of the ULD ``ResultsData``,
    docs/domain.md §1)."""

    layout: Literal[4, 8]
    distance_mm: list[list[Int2]]
    target_status: list[list[Annotated[int, Field(ge=0, le=255)]]]
    signal_per_spad: list[list[Real]]
    ambient_per_spad: list[list[Real]]
    range_sigma_mm: list[list[Real]]
    reflectance_pct: list[list[Real]]
    histogram: TofHistogram | None = None
    ranging_hz: Annotated[float, Field(gt=0, le=60)] | None = None
    integration_ms: Annotated[float, Field(ge=2, le=1000)] | None = None
    sensor_temp_c: Real | None = None

    @model_validator(mode="after")
    def _shapes(self) -> TofFrame:
        # Plain loops over __dict__: this runs for every frame and generator expressions over
        # attributes cost a quarter of the whole decode (bench/codec.py).
        n = self.layout
        fields = self.__dict__
        for name in _MATRICES:
            rows = fields[name]
            if len(rows) != n:
                raise ValueError(f"{name} must be {n}x{n} (layout {n})")
            for row in rows:
                if len(row) != n:
                    raise ValueError(f"{name} must be {n}x{n} (layout {n})")
        return self


class SpectralChannels(_Strict):
    """Raw ADC counts of the AS7341's channels (16-bit registers)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    F1_415nm: Annotated[int, Field(ge=0, le=65535)]
    F2_445nm: Annotated[int, Field(ge=0, le=65535)]
    F3_480nm: Annotated[int, Field(ge=0, le=65535)]
    F4_515nm: Annotated[int, Field(ge=0, le=65535)]
    F5_555nm: Annotated[int, Field(ge=0, le=65535)]
    F6_590nm: Annotated[int, Field(ge=0, le=65535)]
    F7_630nm: Annotated[int, Field(ge=0, le=65535)]
    F8_680nm: Annotated[int, Field(ge=0, le=65535)]
    Clear: Annotated[int, Field(ge=0, le=65535)]
    NIR_910nm: Annotated[int, Field(ge=0, le=65535)]
    Flicker: Annotated[int, Field(ge=0, le=65535)]

    def as_tuple(self) -> tuple[int, ...]:
        """Counts in :data:`~sqal.wire.enums.CHANNELS` order."""
        # One attrgetter built once: an Enum's .value per channel per frame cost ~40 µs.
        counts: tuple[int, ...] = _CHANNEL_COUNTS(self)
        return counts


_CHANNEL_COUNTS = operator.attrgetter(*(c.value for c in Channel))


class SpectralFrame(_Frame):
    """One AS7341 reading of a tray under the node's LED (docs/domain.md §3)."""

    channels: SpectralChannels
    gain: Gain
    atime: Annotated[int, Field(ge=0, le=255)]
    astep: Annotated[int, Field(ge=0, le=65534)]
    integration_ms: Annotated[float, Field(gt=0, le=FLOAT4_MAX)]
    led_ma: Annotated[int, Field(ge=0, le=258)]
    saturated: list[Channel] = Field(default_factory=list)
    flicker_hz: Literal[100, 120] | None = None

    @model_validator(mode="after")
    def _timing(self) -> SpectralFrame:
        _check_timing(self.atime, self.astep)
        return self


MAX_MASS_G = 100_000.0
"""The heaviest tray a weight may report (100 kg): a checkweigher on a food line weighs grams to
a few kilograms, so anything beyond is a unit or parsing error, not a tray."""
Grams = Annotated[float, Field(gt=0, le=MAX_MASS_G)]
"""A positive, finite mass or mass uncertainty in g, at most :data:`MAX_MASS_G`."""


class Weight(_Frame):
    """One tray's net mass from the line's checkweigher (docs/contract.md, "Weight").

    Published by the checkweigher, or by the node that relays it, with the ``sample_id`` and
    ``seq`` of the tray's ToF and spectral frames; ``ts`` is when the tray was weighed, on the
    publisher's clock (upstream of the node, so a little before the frames' ``ts``).
    """

    mass_g: Grams
    sigma_g: Grams | None = None
    """The instrument's standard uncertainty (1 σ); ``None``: unknown."""


class DeviceStatus(_Payload):
    """A device's retained presence and health; the last will carries only ``state``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    state: DeviceState
    ts: Timestamp | None = None
    firmware: Text | None = None
    temperature_c: Real | None = None
    humidity_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    uptime_s: Annotated[float, Field(ge=0, le=FLOAT4_MAX)] | None = None


class TofSettings(_Strict):
    """VL53L8CH settings a device applies (docs/domain.md §1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layout: Literal[4, 8] = 8
    ranging_hz: Annotated[float, Field(ge=1, le=60)] = 15
    integration_ms: Annotated[float, Field(ge=2, le=1000)] = 20

    @model_validator(mode="after")
    def _limits(self) -> TofSettings:
        if self.layout == 8 and self.ranging_hz > 15:
            raise ValueError("ranging_hz must be at most 15 at 8x8 (VL53L8CH datasheet)")
        if self.integration_ms >= 1000.0 / self.ranging_hz:
            raise ValueError("integration_ms must be shorter than the ranging period")
        return self


class SpectralSettings(_Strict):
    """AS7341 settings a device applies (docs/domain.md §3)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gain: Gain = 16
    atime: Annotated[int, Field(ge=0, le=255)] = 29
    astep: Annotated[int, Field(ge=0, le=65534)] = 199
    led_ma: Annotated[int, Field(ge=4, le=258)] = 24

    @model_validator(mode="after")
    def _timing(self) -> SpectralSettings:
        _check_timing(self.atime, self.astep)
        return self


class SpectralAnchors(_Strict):
    """Index anchors measured on a node with a fresh and a degraded reference
    (docs/domain.md §4)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    MI_fresh: Annotated[float, Field(gt=0)]
    MI_met: Annotated[float, Field(gt=0)]
    BR_fresh: Annotated[float, Field(gt=0)]
    BR_ox: Annotated[float, Field(gt=0)]
    NR_ref: Annotated[float, Field(gt=0)]


class WeighedMassModel(_Strict):
    """A line's own mass model, fitted on weighed trays by ``sqal calibrate --weights``
    (docs/domain.md §2, docs/calibration.md).

    ``m̂ = a_g + b_g_per_cm3·V + c_g_per_cm2·V^⅔`` with V the analyzer's volume in cm³;
    ``sigma_g`` is the fit's leave-one-out residual σ, ``n`` the trays it was fitted on. The
    bounds only keep out what no food line produces; the fit refuses much more.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    a_g: Annotated[float, Field(ge=-5000, le=5000)]
    b_g_per_cm3: Annotated[float, Field(gt=0, le=5)]
    c_g_per_cm2: Annotated[float, Field(ge=-100, le=100)] = 0.0
    sigma_g: Annotated[float, Field(gt=0, le=1000)]
    n: Annotated[int, Field(ge=30, le=2**31 - 1)]


Distance = Annotated[float, Field(gt=0, le=4000)]
"""A calibrated distance in mm, within the VL53L8CH's 4 m."""
Counts = Annotated[float, Field(ge=0, le=65535)]
"""AS7341 basic counts: a 16-bit ADC reading over gain and integration, never negative."""
Reflectance = Annotated[float, Field(gt=0, le=1)]
"""A reference tile's reflectance per channel: in (0, 1]."""


class IndexPrior(_Strict):
    """One variable's population on the line's good product: mean and true spread."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: Real
    sd: Annotated[float, Field(gt=0, le=1e4, allow_inf_nan=False)]


class ProductPrior(_Strict):
    """What a reference batch of the line's good product looks like (``sqal calibrate
    --reference``): per variable, the mean of the estimates and their spread with the
    estimates' own noise taken out; the verdict's prior for that variable (docs/domain.md §5)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: Annotated[int, Field(ge=30)]
    oxidation_index: IndexPrior | None = None
    delta_b: IndexPrior | None = None
    delta_e: IndexPrior | None = None
    tilt_deg: IndexPrior | None = None
    roughness_mm: IndexPrior | None = None
    max_height_mm: IndexPrior | None = None


class Calibration(_Strict):
    """The references a device's verdicts are computed with (docs/domain.md §2, §3, §4).

    ``d0_mm``: empty-tray distance (ROI median of ≥ 20 empty-tray frames); ``d0_map_mm``: per
    zone, the mean of the same frames' valid readings within 3 robust σ of their median
    (layout × layout, row-major; a median of whole-mm readings keeps ±0.5 mm of quantisation),
    which also removes each zone's fixed range offset (docs/domain.md §1: N(0, 1 mm) per zone).
    ``dark_bc`` and ``white_bc``: basic counts of channels F1-F8, Clear, NIR (wire order, Flicker
    left out) on the dark trap and on the white tile of reflectance ``rho_white`` at ``z_cal_mm``.
    ``color_matrix``: the 3x9 M of ``XYZ = M·[R_F1..R_F8, 1]``. ``anchors`` and ``lab_ref``
    replace the profile's placeholders once measured on the node. ``mass_model``: the line's mass
    model fitted on weighed trays. Every field the analyzer lacks falls back to the profile.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: SampleId
    ts: Timestamp
    d0_mm: Annotated[float, Field(gt=0, le=4000)] | None = None
    d0_map_mm: list[list[Distance]] | None = None
    signal0_map_kcps: list[list[Annotated[float, Field(ge=0, le=1e6)]]] | None = None
    """Per zone, the same empty-tray frames' mean ``signal_per_spad`` (layout × layout): the
    floor's return, which lets the analyzer split a zone that sees product and floor at once
    into the two (docs/domain.md §2 "mixed zones"). Without it mixed zones are read as is."""
    dark_bc: list[Counts] | None = Field(default=None, min_length=10, max_length=10)
    white_bc: list[Counts] | None = Field(default=None, min_length=10, max_length=10)
    rho_white: list[Reflectance] | None = Field(default=None, min_length=10, max_length=10)
    z_cal_mm: Annotated[float, Field(gt=0, le=4000)] | None = None
    range_scale: Annotated[float, Field(ge=0.9, le=1.1)] | None = None
    """Measured height per true height: the ToF range's slope between the empty tray (d0) and a
    white tile of known height (docs/domain.md §1 "range bias"); heights are divided by it."""
    color_matrix: list[list[float]] | None = None
    color_delta_e: Annotated[float, Field(ge=0)] | None = None
    anchors: SpectralAnchors | None = None
    lab_ref: tuple[float, float, float] | None = None
    count_noise_k: Annotated[float, Field(ge=0, le=1000)] | None = None
    """The white tile's frame-to-frame variance of a raw count per count (shot noise,
    var = k·raw; one conversion gain for every channel), the part common to all removed."""
    common_noise_frac: Annotated[float, Field(ge=0, le=0.5)] | None = None
    """The white tile's frame-to-frame scatter common to every channel (LED drift), relative."""
    product_prior: ProductPrior | None = None
    mass_model: WeighedMassModel | None = None

    @model_validator(mode="after")
    def _matrix(self) -> Calibration:
        m = self.color_matrix
        if m is not None and (len(m) != 3 or any(len(r) != 9 for r in m)):
            raise ValueError("color_matrix must be 3x9")
        d = self.d0_map_mm
        if d is not None and (len(d) not in (4, 8) or any(len(r) != len(d) for r in d)):
            raise ValueError("d0_map_mm must be 4x4 or 8x8")
        g = self.signal0_map_kcps
        if g is not None and (len(g) not in (4, 8) or any(len(r) != len(g) for r in g)):
            raise ValueError("signal0_map_kcps must be 4x4 or 8x8")
        dark, white = self.dark_bc, self.white_bc
        if (
            dark is not None
            and white is not None
            and any(w <= k for k, w in zip(dark, white, strict=True))
        ):
            raise ValueError("white_bc must exceed dark_bc on every channel")
        return self


class CheckweigherSettings(_Strict):
    """The line's checkweigher, as the device's config announces it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sigma_g: Grams
    """The instrument's standard uncertainty (1 σ) in g, what its ``weight`` messages carry."""


ProfileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
LotId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
"""A lot id: 1 to 64 of ``A-Z a-z 0-9 _ . : -`` (no MQTT wildcard, safe in a file name)."""


class DeviceConfig(_Payload):
    """A device's retained configuration: product profile, sensor settings, calibration,
    whether a checkweigher weighs its trays (``None``: no weight is expected), and what its
    trays are for (``mode``: only ``production`` trays count as product; configs published
    before it existed read as production)."""

    profile: ProfileName
    ts: Timestamp | None = None
    tof: TofSettings = Field(default_factory=TofSettings)
    spectral: SpectralSettings = Field(default_factory=SpectralSettings)
    calibration: Calibration | None = None
    checkweigher: CheckweigherSettings | None = None
    mode: Mode = Mode.PRODUCTION


class Lab(_Strict):
    """CIE L*a*b* (D65/2°)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    L: float
    a: float
    b: float


class TofResult(_Strict):
    """The ToF section of a result (docs/domain.md §2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    volume_mm3: float | None
    mass_g: float | None
    avg_height_mm: float | None
    max_height_mm: float | None
    height_variation_mm: float | None
    surface_uniformity: Score | None
    tilt_deg: float | None
    fill_ratio: float | None
    valid_zones: Annotated[int, Field(ge=0)]
    quality_score: Score | None
    grade: Grade
    defects: list[DefectCode]
    sigma_mass_g: Annotated[float, Field(ge=0)] | None = None
    """The standard uncertainty (1 σ) of ``mass_g``, g: the volume's error through the mass
    model and the model's own σ (docs/domain.md §2); absent in results of earlier analyzers."""


class SpectralResult(_Strict):
    """The spectral section of a result (docs/domain.md §4)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    freshness_index: Score | None
    fat_quality_index: Score | None
    oxidation_index: Score | None
    color_uniformity: Score | None
    lab: Lab | None
    quality_score: Score | None
    grade: Grade
    defects: list[DefectCode]


class Fusion(_Strict):
    """The fused verdict the reject gate acts on (docs/domain.md §5).

    ``decision`` is what the gate does (PASS, HOLD for the re-check lane, REJECT);
    ``confidence`` the probability that ``final_grade`` is the tray's true grade;
    ``data_quality`` how much of the sensors' weight spoke (what ``confidence`` meant before
    2026-12); ``p_reject`` P(grade REJECT); ``p_defects`` P(at least minor) of each defect
    code at 0.01 or more, so a HOLD shows its reasons. The four are optional so that results of
    earlier analyzers still decode (the contract stays v 1: docs/contract.md).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    final_score: Score | None
    final_grade: Grade
    confidence: Score
    defects: list[DefectCode]
    decision: Decision | None = None
    data_quality: Score | None = None
    p_reject: Score | None = None
    p_defects: dict[DefectCode, Score] = Field(default_factory=dict)


class WeighedResult(_Strict):
    """The checkweigher's reading a result decided fill on (issue #17)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mass_g: float
    sigma_g: float | None


class AnalyzerInfo(_Strict):
    """Who scored a sample, and how long it took."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    processing_ms: Annotated[float, Field(ge=0)]


class Result(_Payload):
    """An analysed sample: per-sensor sections (``null`` when a frame never came) and fusion."""

    sample_id: SampleId
    ts: Timestamp
    profile: str
    calibration_id: str | None = None
    tof: TofResult | None
    spectral: SpectralResult | None
    fusion: Fusion
    analyzer: AnalyzerInfo
    weight: WeighedResult | None = None
    """The checkweigher's reading fill was decided on; absent without one (docs/contract.md)."""
    mode: Mode = Mode.PRODUCTION
    """The device's mode when the tray was scored; only ``production`` trays are product."""
    lot: LotId | None = None
    """The line's open lot when the tray was scored (``sqal lot start``); ``None``: none open."""


class Lot(_Strict):
    """A line's lot, retained on ``sqal/v1/{line}/lot`` (docs/contract.md, "Lot").

    Set by the operator (``sqal lot start``, ``sqal lot end``); the analyzer stamps every result
    of the line with the open lot's id and ingest stores each lot once in ``lots``. A lot stays
    retained once ended (``ended`` set), so a late subscriber still learns that no lot is open.
    ``qn_g`` is the nominal quantity printed on the packs and ``tne_g`` its tolerable negative
    error (Directive 76/211/EEC Annex I): the packers' rules of the lot use both.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Annotated[int, Field(ge=1, le=2**15 - 1)] = SCHEMA_VERSION
    lot: LotId
    product: ProfileName
    qn_g: Grams
    tne_g: Grams
    started: Timestamp
    ended: Timestamp | None = None
    note: Text | None = None

    @model_validator(mode="after")
    def _order(self) -> Lot:
        if self.tne_g >= self.qn_g:
            raise ValueError("tne_g must be below qn_g")
        if self.ended is not None and self.ended < self.started:
            raise ValueError("ended must not be before started")
        return self

    @property
    def is_open(self) -> bool:
        return self.ended is None


class DeadLetter(_Strict):
    """A message that could not be used, published on ``sqal/v1/_dead/{stage}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Annotated[int, Field(ge=1)] = SCHEMA_VERSION
    stage: str
    topic: str
    reason: DeadReason
    detail: str
    payload_b64: str
    payload_bytes: Annotated[int, Field(ge=0)] | None = None
    """Size of the refused message; more than the decoded ``payload_b64`` when it was cut."""
    received_at: AwareDatetime


UserName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
"""A station user's name: what a re-check records as who answered."""


class Recheck(_Payload):
    """An operator's answer for a HOLD tray (docs/contract.md, "Recheck"), from the station.

    ``sample_id`` and ``result_ts`` name the held result (its ``sample_id`` and ``ts``);
    ``ts`` is when the operator answered, so a tray re-checked twice (a correction) has two
    answers and the later one counts. ``mass_g`` is the tray's net mass if the operator
    weighed it (``sqal calibrate --weights --rechecks`` fits the mass model on these).
    """

    sample_id: SampleId
    ts: Timestamp
    result_ts: Timestamp
    answer: RecheckAnswer
    decision: Decision
    """The decision the re-checked result carried (HOLD, or what an operator overruled)."""
    mass_g: Grams | None = None
    note: Annotated[str, StringConstraints(max_length=1000, pattern=r"^[^\x00]*$")] | None = None
    user: UserName


Frame = TofFrame | SpectralFrame | Weight | DeviceStatus | DeviceConfig | Result | Recheck
"""Any payload that arrives on a device topic."""

MODEL_BY_KIND: dict[Kind, type[_Payload]] = {
    Kind.TOF: TofFrame,
    Kind.SPECTRAL: SpectralFrame,
    Kind.STATUS: DeviceStatus,
    Kind.CONFIG: DeviceConfig,
    Kind.RESULT: Result,
    Kind.WEIGHT: Weight,
    Kind.RECHECK: Recheck,
}
