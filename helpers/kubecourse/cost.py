"""What a training run costs, how often to checkpoint it, and a guard that refuses an over-budget job.

    from kubecourse.cost import RunPlan, estimate, load_prices, budget_guard
    offer = load_prices()["aws-p4d-a100"]
    plan = RunPlan(compute_h=100, gpus=8, checkpoint_s=60, restart_s=300)
    spot = estimate(plan, offer, spot=True)          # Daly-optimal interval, expected wall time, cost
    budget_guard(spot, limit=2000)                   # raises BudgetExceeded naming the numbers

The model (Young 1974, Daly 2006) assumes failures (preemptions, crashes) arrive at random with a
mean time between failures M, a checkpoint takes C seconds to write, a restart R seconds (new pod,
image, data, resume), and the work since the last complete checkpoint is lost at each failure.
Too frequent checkpoints waste time writing them; too rare ones waste recomputation. The optimum:
  Young:  tau = sqrt(2 C M)
  Daly:   tau = sqrt(2 C M) [1 + 1/3 sqrt(C / 2M) + 1/9 (C / 2M)] - C   (for C < 2M, else tau = M)
and the expected wall time for T seconds of work checkpointed every tau seconds (Daly's eq. 12):
  T_wall = M e^(R/M) (e^((tau + C)/M) - 1) T / tau.
Each failure loses on average (tau + C)/2 of work when failures land at uniformly random times
(exactly M - L/(e^(L/M) - 1) with L = tau + C for exponential failures, which tends to L/2).
A SIGTERM with a grace period long enough for a final checkpoint (the course's labs do this) loses
almost nothing; the model's loss is that of a SIGKILL, a crash, or a grace period too short.

Prices are data (docs/gpu-prices.yaml, with date and source): examples to refresh, not quotes.
All times are seconds unless a name ends in _h (hours). Offers may be priced in different currencies
(USD for the US clouds, CNY for the Chinese ones); `load_prices(currency="CNY")` converts every offer
with the file's dated `exchange_rates`, so offers are always compared in one currency (by default
the file's `currency`), and a budget is in that currency too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from .errors import CourseError
from .manifests import repo_root


class BudgetExceeded(CourseError):
    """The estimated cost of a job is above the budget it was given."""


# --------------------------------------------------------------------------------------------------
# Prices
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuOffer:
    """One way to rent a GPU: its price per GPU-hour on demand and as spot, and how often spot
    capacity is reclaimed (per instance-hour)."""

    name: str
    gpu: str
    on_demand_per_gpu_hour: float
    spot_per_gpu_hour: float
    spot_preemptions_per_hour: float
    source: str = ""
    as_of: str = ""
    currency: str = "USD"  # the currency of the two prices above (after any conversion)
    priced_in: str = ""  # the currency the provider quotes, when it was converted from it

    def price(self, spot: bool) -> float:
        return self.spot_per_gpu_hour if spot else self.on_demand_per_gpu_hour


def default_price_file() -> Path:
    return repo_root() / "docs" / "gpu-prices.yaml"


def load_prices(path: str | Path | None = None, currency: str | None = None) -> dict[str, GpuOffer]:
    """The offers in a price file (default docs/gpu-prices.yaml), by name, all in one currency.

    `currency` (e.g. "CNY"): convert every offer into it with the file's `exchange_rates`; default:
    the file's `currency`. An offer carries its own `currency` when the provider quotes another one.
    """
    source = Path(path) if path is not None else default_price_file()
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    default_currency = str(data.get("currency", "USD"))
    target = currency or default_currency
    offers = {}
    for i, entry in enumerate(data.get("offers") or []):
        try:
            quoted_in = str(entry.get("currency", default_currency))
            rate = exchange_rate(quoted_in, target, data, source)
            offer = GpuOffer(
                name=entry["name"],
                gpu=entry["gpu"],
                on_demand_per_gpu_hour=float(entry["on_demand_per_gpu_hour"]) * rate,
                spot_per_gpu_hour=float(entry["spot_per_gpu_hour"]) * rate,
                spot_preemptions_per_hour=float(entry["spot_preemptions_per_hour"]),
                source=entry.get("source", ""),
                as_of=str(entry.get("as_of", data.get("as_of", ""))),
                currency=target,
                priced_in=quoted_in if quoted_in != target else "",
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CourseError(
                f"{source}: offers[{i}] is incomplete or not a number: {error}"
            ) from error
        offers[offer.name] = offer
    return offers


def exchange_rate(
    from_currency: str, to_currency: str, data: dict, source: Path | str = ""
) -> float:
    """How many `to_currency` one `from_currency` buys, from a price file's `exchange_rates`
    (units of each currency per 1 of the file's `currency`, dated and sourced like the prices)."""
    if from_currency == to_currency:
        return 1.0
    rates = {str(k): v for k, v in (data.get("exchange_rates") or {}).items()}
    rates.setdefault(str(data.get("currency", "USD")), 1.0)
    missing = [
        c for c in (from_currency, to_currency) if not isinstance(rates.get(c), (int, float))
    ]
    if missing:
        raise CourseError(
            f"{source}: no exchange rate for {', '.join(missing)} in exchange_rates "
            f"(known: {', '.join(sorted(k for k, v in rates.items() if isinstance(v, (int, float))))})"
        )
    return float(rates[to_currency]) / float(rates[from_currency])


# --------------------------------------------------------------------------------------------------
# Checkpoint interval
# --------------------------------------------------------------------------------------------------


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def young_interval(checkpoint_s: float, mtbf_s: float) -> float:
    """Young's first-order optimal compute time between checkpoints: sqrt(2 C M)."""
    _positive(checkpoint_s=checkpoint_s, mtbf_s=mtbf_s)
    return math.sqrt(2 * checkpoint_s * mtbf_s)


def daly_interval(checkpoint_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum (2006); equals M once a checkpoint costs 2M or more."""
    _positive(checkpoint_s=checkpoint_s, mtbf_s=mtbf_s)
    if checkpoint_s >= 2 * mtbf_s:
        return mtbf_s
    ratio = checkpoint_s / (2 * mtbf_s)
    return (
        math.sqrt(2 * checkpoint_s * mtbf_s) * (1 + math.sqrt(ratio) / 3 + ratio / 9) - checkpoint_s
    )


def expected_wall_time(
    work_s: float, interval_s: float, checkpoint_s: float, restart_s: float, mtbf_s: float
) -> float:
    """Daly's expected wall time to finish `work_s` of compute, checkpointing every `interval_s`
    (exponential failures with mean `mtbf_s`; a failure during a checkpoint or restart counts)."""
    _positive(work_s=work_s, interval_s=interval_s, mtbf_s=mtbf_s)
    if checkpoint_s < 0 or restart_s < 0:
        raise ValueError("checkpoint_s and restart_s must be >= 0")
    m = mtbf_s
    return (
        m
        * math.exp(restart_s / m)
        * math.expm1((interval_s + checkpoint_s) / m)
        * work_s
        / interval_s
    )


def expected_lost_work(
    interval_s: float, checkpoint_s: float = 0.0, mtbf_s: float = math.inf
) -> float:
    """Mean work lost per failure: the time since the last complete checkpoint when it strikes.
    With failures at uniformly random times this is (interval + C)/2; exponential failures with
    mean M make it a little less: M - L/(e^(L/M) - 1), L = interval + C."""
    length = interval_s + checkpoint_s
    if math.isinf(mtbf_s):
        return length / 2
    return mtbf_s - length / math.expm1(length / mtbf_s)


def checkpoint_seconds(size_gb: float, write_gb_per_s: float) -> float:
    """Seconds to write one checkpoint of `size_gb` at `write_gb_per_s` (the storage tier matters)."""
    _positive(size_gb=size_gb, write_gb_per_s=write_gb_per_s)
    return size_gb / write_gb_per_s


# --------------------------------------------------------------------------------------------------
# A run's estimate
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """A training run to price. compute_h: hours of training with no failure and no checkpoint
    (measure it: steps x seconds per step); gpus: GPUs it holds; instances: how many machines
    (each can be reclaimed); checkpoint_s: seconds to write one checkpoint; restart_s: seconds from
    a failure to training again (scheduling, image pull, data, resume); failures_per_hour: crash
    rate of the whole run on on-demand capacity; interval_s: force a checkpoint interval (None =
    Daly's optimum)."""

    compute_h: float
    gpus: int = 1
    instances: int = 1
    checkpoint_s: float = 60.0
    restart_s: float = 300.0
    failures_per_hour: float = 0.001
    interval_s: float | None = None


@dataclass(frozen=True)
class Estimate:
    """The model's answer for one plan on one offer."""

    offer: str
    spot: bool
    price_per_gpu_hour: float
    mtbf_h: float
    interval_s: float
    wall_h: float
    expected_failures: float
    cost: float
    gpus: int
    compute_h: float
    currency: str = "USD"

    @property
    def overhead(self) -> float:
        """Wall time over pure compute time, minus 1 (0.1 = 10 % spent on checkpoints and failures)."""
        return self.wall_h / self.compute_h - 1

    def __str__(self) -> str:
        kind = "spot" if self.spot else "on-demand"
        return (
            f"{self.offer} {kind}: {self.wall_h:.2f} h wall x {self.gpus} GPU x "
            f"{self.price_per_gpu_hour:.2f}/GPU-h = {self.cost:.2f} {self.currency}; checkpoint every "
            f"{self.interval_s / 60:.1f} min, MTBF {self.mtbf_h:.1f} h, ~{self.expected_failures:.1f} failures"
        )


def estimate(plan: RunPlan, offer: GpuOffer, *, spot: bool = False) -> Estimate:
    """Expected wall time and cost of `plan` on `offer`, checkpointing at Daly's optimum
    (or `plan.interval_s`). Spot adds the offer's reclaim rate per instance to the crash rate."""
    _positive(compute_h=plan.compute_h, gpus=plan.gpus, instances=plan.instances)
    rate_per_h = plan.failures_per_hour + (
        offer.spot_preemptions_per_hour * plan.instances if spot else 0.0
    )
    _positive(failures_per_hour=rate_per_h)
    mtbf_s = 3600.0 / rate_per_h
    interval = plan.interval_s or daly_interval(plan.checkpoint_s, mtbf_s)
    work_s = plan.compute_h * 3600.0
    wall_s = expected_wall_time(work_s, interval, plan.checkpoint_s, plan.restart_s, mtbf_s)
    price = offer.price(spot)
    wall_h = wall_s / 3600.0
    return Estimate(
        offer=offer.name,
        spot=spot,
        price_per_gpu_hour=price,
        mtbf_h=mtbf_s / 3600.0,
        interval_s=interval,
        wall_h=wall_h,
        expected_failures=wall_s / mtbf_s,
        cost=wall_h * plan.gpus * price,
        gpus=plan.gpus,
        compute_h=plan.compute_h,
        currency=offer.currency,
    )


def cost_curve(
    plan: RunPlan, offer: GpuOffer, intervals_s: list[float], *, spot: bool = False
) -> list[Estimate]:
    """The estimate at each forced checkpoint interval (the notebook plots cost vs interval)."""
    return [estimate(replace(plan, interval_s=i), offer, spot=spot) for i in intervals_s]


def budget_guard(estimated: Estimate, limit: float) -> Estimate:
    """Return the estimate when it fits the budget; raise BudgetExceeded naming the numbers if not."""
    if estimated.cost > limit:
        kind = "spot" if estimated.spot else "on-demand"
        raise BudgetExceeded(
            f"refused: estimated cost {estimated.cost:.2f} exceeds the budget {limit:.2f} "
            f"{estimated.currency} "
            f"({estimated.wall_h:.2f} h expected wall time x {estimated.gpus} GPU x "
            f"{estimated.price_per_gpu_hour:.2f} per GPU-hour, {estimated.offer} {kind}, "
            f"~{estimated.expected_failures:.1f} failures); use fewer GPU-hours, spot capacity, "
            "or a larger budget"
        )
    return estimated


__all__ = [
    "BudgetExceeded",
    "Estimate",
    "GpuOffer",
    "RunPlan",
    "budget_guard",
    "checkpoint_seconds",
    "cost_curve",
    "daly_interval",
    "estimate",
    "exchange_rate",
    "expected_lost_work",
    "expected_wall_time",
    "load_prices",
    "young_interval",
]
