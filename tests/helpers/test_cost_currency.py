"""Prices in the learner's currency: offers quoted in CNY and USD are compared in one currency."""

from __future__ import annotations

import math

import pytest

from kubecourse import CourseError
from kubecourse.cost import BudgetExceeded, RunPlan, budget_guard, estimate, load_prices

PRICES = """
as_of: "2026-11-29"
currency: USD
exchange_rates: {as_of: "2026-12-01", source: https://example.org/rates, USD: 1.0, CNY: 7.0}
offers:
  - {name: us, gpu: A, on_demand_per_gpu_hour: 2.0, spot_per_gpu_hour: 1.0,
     spot_preemptions_per_hour: 0.1, source: https://example.org/us}
  - {name: cn, gpu: A, currency: CNY, as_of: "2026-12-01", on_demand_per_gpu_hour: 7.0,
     spot_per_gpu_hour: 3.5, spot_preemptions_per_hour: 0.1, source: https://example.org/cn}
"""


@pytest.fixture
def prices(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES)
    return path


@pytest.mark.parametrize(
    "currency, us_on_demand, cn_on_demand",
    [(None, 2.0, 1.0), ("USD", 2.0, 1.0), ("CNY", 14.0, 7.0)],
    ids=["file-currency", "usd", "cny"],
)
def test_every_offer_is_converted_into_one_currency(prices, currency, us_on_demand, cn_on_demand):
    offers = load_prices(prices, currency=currency)
    assert {o.currency for o in offers.values()} == {currency or "USD"}
    assert math.isclose(offers["us"].on_demand_per_gpu_hour, us_on_demand)
    assert math.isclose(offers["cn"].on_demand_per_gpu_hour, cn_on_demand)
    assert offers["cn"].as_of == "2026-12-01" and offers["us"].as_of == "2026-11-29"


def test_the_cheaper_offer_is_the_same_in_either_currency(prices):
    plan = RunPlan(compute_h=10, gpus=8, checkpoint_s=60, restart_s=300)
    for currency in ("USD", "CNY"):
        offers = load_prices(prices, currency=currency)
        costs = {n: estimate(plan, o, spot=True).cost for n, o in offers.items()}
        assert min(costs, key=costs.get) == "cn"
    usd = estimate(plan, load_prices(prices, currency="USD")["us"])
    cny = estimate(plan, load_prices(prices, currency="CNY")["us"])
    assert math.isclose(cny.cost, 7.0 * usd.cost) and cny.currency == "CNY"
    assert str(cny).count("CNY") == 1
    with pytest.raises(BudgetExceeded, match=r"budget 100\.00 CNY"):
        budget_guard(cny, 100.0)


def test_a_currency_without_a_rate_is_an_error_naming_it(prices):
    with pytest.raises(CourseError, match="no exchange rate for EUR"):
        load_prices(prices, currency="EUR")


def test_the_course_price_file_has_dated_cny_offers_from_chinese_clouds():
    offers = load_prices(currency="CNY")
    chinese = [o for o in offers.values() if o.priced_in == "" and o.currency == "CNY"]
    assert len(chinese) >= 3
    for offer in chinese:
        assert offer.as_of and offer.source.startswith("https://")
        assert 0 < offer.spot_per_gpu_hour < offer.on_demand_per_gpu_hour
    usd = load_prices()
    assert all(o.currency == "USD" for o in usd.values()), "by default one currency: the file's"
