"""SPC charts against hand-computed values and known series (views/spc.py, issue #19 item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from views.spc import Subgroups, c4, capability, p_chart, western_electric, xbar_s_limits


def test_c4_matches_the_tabulated_values() -> None:
    # ASTM E2587 / Montgomery Appendix VI: c4(2) = 0.7979, c4(5) = 0.9400, c4(10) = 0.9727.
    assert c4(np.array([2, 5, 10])) == pytest.approx([0.7979, 0.9400, 0.9727], abs=1e-4)


def test_equal_subgroups_give_the_tabulated_a3_b3_b4_limits() -> None:
    """n = 5: A3 = 1.427, B3 = 0, B4 = 2.089 (Montgomery Appendix VI)."""
    groups = [
        [400.0, 402.0, 398.0, 401.0, 399.0],
        [403.0, 405.0, 401.0, 404.0, 402.0],
        [397.0, 399.0, 396.0, 400.0, 398.0],
    ]
    sub = Subgroups.of([np.array(g) for g in groups])
    lim = xbar_s_limits(sub, sub)
    s_bar = float(np.mean([np.std(g, ddof=1) for g in groups]))
    grand = float(np.mean(groups))
    assert lim.grand_mean == pytest.approx(grand)
    assert lim.s_bar == pytest.approx(s_bar)
    assert lim.x_ucl == pytest.approx(np.full(3, grand + 1.427 * s_bar), rel=1e-3)
    assert lim.x_lcl == pytest.approx(np.full(3, grand - 1.427 * s_bar), rel=1e-3)
    assert lim.s_ucl == pytest.approx(np.full(3, 2.089 * s_bar), rel=1e-3)
    assert lim.s_lcl == pytest.approx(np.zeros(3), abs=1e-12)


def test_limits_come_from_the_baseline_not_from_the_charted_period() -> None:
    rng = np.random.default_rng(4)
    baseline = Subgroups.consecutive(rng.normal(402.0, 4.0, 500), 5)
    drifting = Subgroups.consecutive(rng.normal(410.0, 12.0, 100), 5)
    lim = xbar_s_limits(baseline, drifting)
    assert lim.sigma == pytest.approx(4.0, rel=0.1)
    assert lim.x_ucl[0] == pytest.approx(402.0 + 3 * 4.0 / np.sqrt(5), abs=1.0)
    assert (drifting.mean > lim.x_ucl).mean() > 0.3  # the drift is out of the baseline's limits


def test_consecutive_drops_the_short_tail() -> None:
    sub = Subgroups.consecutive(np.arange(12.0), 5)
    assert sub.n.tolist() == [5, 5]
    assert sub.mean.tolist() == [2.0, 7.0]


def test_with_no_baseline_subgroup_the_limits_refuse() -> None:
    with pytest.raises(ValueError, match="baseline has no subgroup"):
        xbar_s_limits(Subgroups.of([np.array([1.0])]), Subgroups.of([]))


@pytest.mark.parametrize(
    ("z", "rule", "at"),
    [
        ([0.0, 0.5, 3.2], 1, 2),
        ([0.0, -0.5, -3.2], 1, 2),
        ([2.5, 0.0, 2.4], 2, 2),
        ([-2.1, -2.6, 0.0], 2, 1),
        ([1.5, 1.2, 0.0, 1.8, 1.1], 3, 4),
        ([-1.5, -1.2, -1.3, 0.5, -1.1], 3, 4),
        ([0.4] * 8, 4, 7),
        ([-0.2] * 8, 4, 7),
    ],
)
def test_western_electric_rules_flag_the_point_that_completes_the_pattern(
    z: list[float], rule: int, at: int
) -> None:
    flags = western_electric(np.array(z) * 2.0 + 400.0, 400.0, np.full(len(z), 2.0))
    assert flags[at, rule - 1]
    assert not flags[:at, rule - 1].any()


def test_a_process_in_control_breaks_no_rule_on_a_quiet_series() -> None:
    z = np.array([0.3, -0.4, 0.8, -1.2, 0.1, 0.5, -0.6, 1.1, -0.2, 0.4])
    assert not western_electric(z, 0.0, np.ones(z.size)).any()


def test_capability_against_t1_and_the_giveaway_limit_by_hand() -> None:
    """Foie gras 400 g: T1 = 388 g, giveaway limit 420 g; μ = 402, σ_within = 4:
    Cp = 32/24 = 1.333, Cpk = min(18, 14)/12 = 1.167."""
    values = np.array([398.0, 402.0, 406.0, 402.0])  # mean 402, sd 3.266
    cap = capability(values, 4.0, 388.0, 420.0)
    assert (cap.cp, cap.cpk) == pytest.approx((32 / 24, 14 / 12))
    sd = float(np.std(values, ddof=1))
    assert (cap.pp, cap.ppk) == pytest.approx((32 / (6 * sd), 14 / (3 * sd)))


def test_capability_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError, match="at least 2 trays"):
        capability(np.array([400.0]), 4.0, 388.0, 420.0)
    with pytest.raises(ValueError, match="σ > 0"):
        capability(np.array([400.0, 401.0]), 0.0, 388.0, 420.0)
    with pytest.raises(ValueError, match="USL above LSL"):
        capability(np.array([400.0, 401.0]), 4.0, 420.0, 388.0)


def test_p_chart_limits_by_hand() -> None:
    """p̄ = 2 %, n = 100: 3·√(0.02·0.98/100) = 0.042 → [0, 0.062]; n = 400 → [0, 0.041]."""
    chart = p_chart(np.array([1, 7, 3]), np.array([100, 100, 400]), 0.02)
    assert chart.ucl == pytest.approx([0.062, 0.062, 0.041], abs=5e-4)
    assert chart.lcl.tolist() == [0.0, 0.0, 0.0]
    assert chart.out.tolist() == [False, True, False]
