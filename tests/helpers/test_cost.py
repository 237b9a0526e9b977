"""The cost model: checkpoint intervals, wall time, lost work, prices as data, the budget guard."""

from __future__ import annotations

import math

import pytest

from kubecourse.cost import (
    BudgetExceeded,
    GpuOffer,
    RunPlan,
    budget_guard,
    checkpoint_seconds,
    cost_curve,
    daly_interval,
    estimate,
    expected_lost_work,
    expected_wall_time,
    load_prices,
    young_interval,
)

OFFER = GpuOffer(
    "test", "X", on_demand_per_gpu_hour=4.0, spot_per_gpu_hour=1.0, spot_preemptions_per_hour=0.5
)


@pytest.mark.parametrize(
    "checkpoint_s, mtbf_s, young, daly",
    [
        (1.0, 50.0, 10.0, 10 * (1 + 0.1 / 3 + 0.01 / 9) - 1),  # C/2M = 0.01
        (60.0, 86400.0, math.sqrt(2 * 60 * 86400), None),
        (18.0, 3600.0, 360.0, 360 * (1 + math.sqrt(0.0025) / 3 + 0.0025 / 9) - 18),
        (100.0, 40.0, math.sqrt(8000), 40.0),  # C >= 2M: Daly says checkpoint every M
    ],
)
def test_optimal_intervals_match_known_values(checkpoint_s, mtbf_s, young, daly):
    assert young_interval(checkpoint_s, mtbf_s) == pytest.approx(young)
    if daly is not None:
        assert daly_interval(checkpoint_s, mtbf_s) == pytest.approx(daly)
    else:  # C << M: Daly's correction is small and lowers the interval
        assert 0.98 * young < daly_interval(checkpoint_s, mtbf_s) < young


@pytest.mark.parametrize(
    "work, interval, checkpoint, restart, mtbf, expected",
    [
        (1.0, 1.0, 0.0, 0.0, 1.0, math.e - 1),  # Daly eq. 12 by hand
        (3600.0, 600.0, 0.0, 0.0, 1e12, 3600.0),  # no failures, free checkpoints: wall = work
        (3600.0, 600.0, 60.0, 0.0, 1e12, 3960.0),  # no failures: one checkpoint per interval
        (1.0, 1.0, 1.0, 1.0, 1.0, math.e * (math.e**2 - 1)),
    ],
)
def test_expected_wall_time(work, interval, checkpoint, restart, mtbf, expected):
    assert expected_wall_time(work, interval, checkpoint, restart, mtbf) == pytest.approx(
        expected, rel=1e-6
    )


def test_daly_interval_minimises_the_wall_time():
    checkpoint, restart, mtbf = 60.0, 300.0, 7200.0
    best = daly_interval(checkpoint, mtbf)
    at_best = expected_wall_time(36000, best, checkpoint, restart, mtbf)
    for factor in (0.5, 0.8, 1.25, 2.0):
        assert expected_wall_time(36000, best * factor, checkpoint, restart, mtbf) > at_best


@pytest.mark.parametrize(
    "interval, checkpoint, mtbf, expected",
    [
        (100.0, 0.0, math.inf, 50.0),  # uniform failure times: half an interval
        (100.0, 20.0, math.inf, 60.0),
        (100.0, 0.0, 1e9, 50.0),  # exponential with M >> L tends to L/2
        (100.0, 0.0, 100.0, 100 - 100 / math.expm1(1)),
    ],
)
def test_expected_lost_work(interval, checkpoint, mtbf, expected):
    assert expected_lost_work(interval, checkpoint, mtbf) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: young_interval(0, 10),
        lambda: daly_interval(10, -1),
        lambda: expected_wall_time(10, 0, 1, 1, 10),
        lambda: checkpoint_seconds(1, 0),
    ],
)
def test_bad_numbers_are_refused(call):
    with pytest.raises(ValueError, match="must be a positive number"):
        call()


def test_checkpoint_seconds():
    assert checkpoint_seconds(size_gb=20, write_gb_per_s=0.5) == 40


def test_spot_is_cheaper_but_fails_more_and_checkpoints_more_often():
    plan = RunPlan(compute_h=10, gpus=8, instances=1, checkpoint_s=60, restart_s=300)
    on_demand, spot = estimate(plan, OFFER), estimate(plan, OFFER, spot=True)
    assert spot.cost < on_demand.cost
    assert spot.wall_h > on_demand.wall_h > 10
    assert spot.interval_s < on_demand.interval_s
    assert spot.mtbf_h == pytest.approx(1 / 0.501)
    assert on_demand.cost == pytest.approx(on_demand.wall_h * 8 * 4.0)
    assert "spot" in str(spot) and spot.overhead > 0


def test_cost_curve_is_lowest_near_the_daly_interval():
    plan = RunPlan(compute_h=10, gpus=1, checkpoint_s=60, restart_s=120)
    best = estimate(plan, OFFER, spot=True)
    curve = cost_curve(
        plan, OFFER, [best.interval_s / 4, best.interval_s, best.interval_s * 4], spot=True
    )
    assert curve[1].cost < curve[0].cost and curve[1].cost < curve[2].cost


@pytest.mark.parametrize("limit, refused", [(1e6, False), (1.0, True)])
def test_budget_guard(limit, refused):
    est = estimate(RunPlan(compute_h=10, gpus=8), OFFER)
    if not refused:
        assert budget_guard(est, limit) is est
        return
    with pytest.raises(BudgetExceeded) as info:
        budget_guard(est, limit)
    text = str(info.value)
    assert f"{est.cost:.2f}" in text and "1.00" in text and "8 GPU" in text and "test" in text


def test_the_price_file_has_dates_sources_and_sane_numbers():
    offers = load_prices()
    assert len(offers) >= 3
    for offer in offers.values():
        assert offer.as_of and offer.source.startswith("https://")
        assert 0 < offer.spot_per_gpu_hour < offer.on_demand_per_gpu_hour
        assert 0 < offer.spot_preemptions_per_hour < 1


def test_a_broken_price_file_names_the_entry(tmp_path):
    from kubecourse import CourseError

    path = tmp_path / "prices.yaml"
    path.write_text("as_of: x\noffers:\n  - name: a\n    gpu: b\n")
    with pytest.raises(CourseError, match=r"offers\[0\]"):
        load_prices(path)
