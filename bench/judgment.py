"""Judgment benchmark: simulated soaks judged by the sequential test, the previous shipped
floor rules and a Mann-Whitney test repeated every interval (Kayenta-style).

Each soak lasts 2 h, evaluated every 15 s (480 looks), at 1, 10 or 100 requests/s per
namespace. Counts are drawn per 15 s interval (Poisson requests, binomial errors, multinomial
latency buckets) and everything is vectorised with numpy, so the full run takes a few minutes
on 2 cores; a short run on a real Prometheus follows (bench/judgment_live.py). Writes
bench/results/judgment.json and docs/img/judgment.png:
`make bench BENCH_ARGS='--only judgment'` (`--quick` for a smoke run).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import lognorm, mannwhitneyu, norm

from bench import reporting
from gatekeeper import sequential

ROOT = Path(__file__).resolve().parent.parent
LOOK = 15.0
LOOKS = 480
BASE_ERROR = 0.001
HISTORY = 240  # the active's baseline window (1 h) in looks, served before the soak starts
OLD_WINDOW = 20  # the previous rules' 5-minute window in looks
BOUNDS = np.array([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
RATE_TEST = sequential.RateTest(allowed_ratio=1.5, allowed_margin=0.001, confidence=0.99,
                                detect=5, power=0.8)
LATENCY_TEST = sequential.RateTest(allowed_ratio=1.25, confidence=0.99, detect=3, power=0.8)


def _rejections(dark_bad: np.ndarray, dark_total: np.ndarray, active_bad: np.ndarray,
                active_total: np.ndarray, test: sequential.RateTest) -> np.ndarray:
    """Boolean (soaks, looks): the sequential rule fails at that look."""
    exposure = dark_total / np.maximum(active_total, 1.0)
    theta0 = sequential.null_share(test.allowed_ratio, exposure)
    a, b = sequential.prior_parameters(test.allowed_ratio, test.detect, exposure)
    log_e = sequential.log_e_value(dark_bad, active_bad, theta0, a, b)
    dark_rate = dark_bad / np.maximum(dark_total, 1.0)
    active_rate = active_bad / np.maximum(active_total, 1.0)
    return np.asarray((log_e >= math.log(1 / test.alpha))
                      & (dark_rate - active_rate > test.allowed_margin)
                      & (dark_total > 0) & (active_total > 0))


def _window_sum(values: np.ndarray, width: int) -> np.ndarray:
    """Sum over the last `width` looks (axis 1), for every look."""
    cumulative = np.cumsum(values, axis=1)
    shifted = np.zeros_like(cumulative)
    shifted[:, width:] = cumulative[:, :-width]
    return cumulative - shifted


def _baseline_sum(values: np.ndarray, looks: int) -> np.ndarray:
    """The active's counts over max(1 h, span since ready) at each look, as the Prometheus
    source takes them (`values` has HISTORY looks of history before the soak)."""
    cumulative = np.concatenate([np.zeros_like(values[:, :1]),
                                 np.cumsum(values, axis=1)], axis=1)
    t = np.arange(looks)
    width = np.maximum(HISTORY, t + 1)
    end = HISTORY + t + 1
    start = np.maximum(end - width, 0)
    return np.asarray(cumulative[:, end] - cumulative[:, start])


def _summary(fails: np.ndarray, dark_requests: np.ndarray) -> dict[str, Any]:
    """Share of soaks with a fail, median minutes and requests to the first one."""
    hit = fails.any(axis=1)
    first = np.argmax(fails, axis=1)
    out: dict[str, Any] = {"probability": float(hit.mean())}
    if hit.any():
        out["median_minutes"] = float(np.median((first[hit] + 1) * LOOK / 60.0))
        out["median_requests"] = float(np.median(dark_requests[hit, first[hit]]))
        out["within_15_min"] = float(np.mean(hit & (first < 60)))
        out["within_2_min"] = float(np.mean(hit & (first < 8)))
    return out


def rate_scenario(rps: float, factor: float, soaks: int, rng: np.random.Generator,
                  mann_whitney_soaks: int, looks: int = LOOKS) -> dict[str, Any]:
    """Error rate BASE_ERROR for the active, factor x for the dark."""
    lam = rps * LOOK
    dark_n = rng.poisson(lam, (soaks, looks)).astype(float)
    active_n = rng.poisson(lam, (soaks, HISTORY + looks)).astype(float)
    dark_e = rng.binomial(dark_n.astype(np.int64), min(BASE_ERROR * factor, 1.0)).astype(float)
    active_e = rng.binomial(active_n.astype(np.int64), BASE_ERROR).astype(float)
    # Sequential: dark since ready, active over the last hour.
    dark_bad, dark_total = np.cumsum(dark_e, axis=1), np.cumsum(dark_n, axis=1)
    active_bad = _baseline_sum(active_e, looks)
    active_total = _baseline_sum(active_n, looks)
    new = _rejections(dark_bad, dark_total, active_bad, active_total, RATE_TEST)
    # Previous shipped rules over a 5-minute window: error-rate (key, weight 3, < 1 % pass,
    # < 2 % warning), error-rate-vs-active (weight 1, <= +50 %, floor 0.2 %), min 100
    # requests; other rules pass (weight 9 of 13); unsafe when key fails or score < 90 %.
    win_e, win_n = _window_sum(dark_e, OLD_WINDOW), _window_sum(dark_n, OLD_WINDOW)
    act_e = _window_sum(active_e, OLD_WINDOW)[:, HISTORY:]
    act_n = _window_sum(active_n, OLD_WINDOW)[:, HISTORY:]
    dark_ratio = win_e / np.maximum(win_n, 1.0)
    active_ratio = act_e / np.maximum(act_n, 1.0)
    enough = win_n >= 100
    absolute = np.where(dark_ratio < 0.01, 1.0, np.where(dark_ratio < 0.02, 0.5, 0.0))
    relative = np.where((dark_ratio <= 0.002) | (dark_ratio <= active_ratio * 1.5), 1.0, 0.0)
    score = (3 * absolute + relative + 9) / 13
    old = enough & ((absolute == 0.0) | (score < 0.9))
    # Mann-Whitney each look over the window's 20 per-interval error ratios, 99 %, effect 1.1.
    m = min(mann_whitney_soaks, soaks)
    ratios_d = dark_e[:m] / np.maximum(dark_n[:m], 1.0)
    ratios_a = active_e[:m, HISTORY:] / np.maximum(active_n[:m, HISTORY:], 1.0)
    ends = np.arange(OLD_WINDOW - 1, looks)
    idx = ends[:, None] - np.arange(OLD_WINDOW)[None, :]
    sample_d, sample_a = ratios_d[:, idx], ratios_a[:, idx]
    constant = (sample_d.max(axis=2) == sample_d.min(axis=2)) & (
        sample_a.max(axis=2) == sample_a.min(axis=2)) & (sample_d[..., 0] == sample_a[..., 0])
    p = mannwhitneyu(sample_d, sample_a, alternative="greater", axis=2).pvalue
    p = np.where(constant | np.isnan(p), 1.0, p)
    mean_d, mean_a = sample_d.mean(axis=2), sample_a.mean(axis=2)
    large = mean_d > 1.1 * mean_a
    mw = np.zeros((m, looks), dtype=bool)
    mw[:, ends] = (p < 0.01) & large
    return {
        "sequential": _summary(new, dark_total),
        "floor_rules": _summary(old, dark_total),
        "mann_whitney": _summary(mw, dark_total[:m]),
        "curve": np.mean(np.maximum.accumulate(new, axis=1), axis=0)[::4].tolist(),
    }


def _bucket_probabilities(scale: float) -> np.ndarray:
    """Bucket masses (finite buckets then +Inf) of a log-normal with p50 0.1 s, p99 0.5 s,
    all latencies multiplied by `scale` (p99 +25 % is scale 1.25)."""
    sigma = math.log(0.5 / 0.1) / norm.ppf(0.99)
    cdf = lognorm.cdf(BOUNDS, sigma, scale=0.1 * scale)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def latency_scenario(rps: float, scale: float, soaks: int, rng: np.random.Generator,
                     q: float = 0.99, looks: int = LOOKS) -> dict[str, Any]:
    """The sequential latency rule on simulated histograms (the previous rules only had the
    absolute 2 s budget and a relative p99 rule of weight 1, so they never failed here)."""
    lam = rps * LOOK
    dark_n = rng.poisson(lam, (soaks, looks))
    active_n = rng.poisson(lam, (soaks, HISTORY + looks))
    dark_b = rng.multinomial(dark_n, _bucket_probabilities(scale)).astype(float)
    active_b = rng.multinomial(active_n, _bucket_probabilities(1.0)).astype(float)
    dark_c = np.cumsum(np.cumsum(dark_b, axis=1), axis=2)  # (soaks, looks, buckets) cumulative
    active_c = _baseline_sum(np.cumsum(active_b, axis=2), looks)
    pooled = dark_c + active_c
    total = pooled[..., -1:]
    finite = pooled[..., :-1]
    index = np.clip(np.sum(finite <= q * total, axis=2) - 1, 0, len(BOUNDS) - 1)
    pick = index[..., None]
    dark_slow = dark_c[..., -1] - np.take_along_axis(dark_c[..., :-1], pick, axis=2)[..., 0]
    active_slow = active_c[..., -1] - np.take_along_axis(active_c[..., :-1], pick, axis=2)[..., 0]
    fails = _rejections(dark_slow, dark_c[..., -1], active_slow, active_c[..., -1],
                        LATENCY_TEST)
    return {"sequential": _summary(fails, dark_c[..., -1]),
            "curve": np.mean(np.maximum.accumulate(fails, axis=1), axis=0)[::4].tolist()}


def minutes_to_pass(rps: float, rate: float, test: sequential.RateTest,
                    looks: int = LOOKS) -> float | None:
    """When a release identical to the active starts passing (expected counts: the power to
    catch a `detect` x regression reaches `power`); None if not within the soak."""
    for look in range(looks):
        dark = rps * LOOK * (look + 1)
        active = rps * LOOK * max(HISTORY, look + 1)
        if sequential.detection_power(dark, active, rate + 0.5 / active, test) >= test.power:
            return (look + 1) * LOOK / 60.0
    return None


def simulate(soaks: int, seed: int = 13, mann_whitney_soaks: int = 400, *,
        rps_levels: tuple[float, ...] = (1.0, 10.0, 100.0),
        looks: int = LOOKS) -> dict[str, Any]:
    """Every scenario at every traffic level."""
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {"soaks": soaks, "mann_whitney_soaks": min(soaks,
                                                                       mann_whitney_soaks),
                               "looks": looks, "look_seconds": LOOK, "rates": {},
                               "latency": {}}
    for rps in rps_levels:
        for factor in (1.0, 2.0, 5.0, 10.0):
            key = f"{rps:g} rps x{factor:g}"
            results["rates"][key] = rate_scenario(rps, factor, soaks, rng, mann_whitney_soaks,
                                                        looks)
        for scale in (1.0, 1.25, 1.6):
            key = f"{rps:g} rps p99 +{(scale - 1) * 100:.0f}%"
            results["latency"][key] = latency_scenario(rps, scale, soaks, rng, looks=looks)
    results["minutes_to_pass"] = {
        f"{rps:g} rps": {"errors 0.1 %": minutes_to_pass(rps, BASE_ERROR, RATE_TEST, looks),
                         "slow share 1 %": minutes_to_pass(rps, 0.01, LATENCY_TEST, looks)}
        for rps in (1.0, 3.0, 10.0, 40.0, 100.0)}
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    """Detection probability against soak time for each rate scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    minutes = np.arange(0, results["looks"], 4) * LOOK / 60 + LOOK / 60
    styles = {"1": ":", "10": "--", "100": "-"}
    colours = {"x1": "black", "x2": "tab:blue", "x5": "tab:orange", "x10": "tab:red",
               "+0%": "black", "+25%": "tab:blue", "+60%": "tab:red"}
    for axis, group in zip(axes, ("rates", "latency"), strict=True):
        for key, value in results[group].items():
            rps, effect = key.split(" rps ")
            effect = effect.removeprefix("p99 ")
            axis.plot(minutes[:len(value["curve"])], value["curve"], label=key,
                      linestyle=styles[rps], color=colours[effect])
    for axis, title in zip(axes, ("5xx rate (active 0.1 %)", "latency (active p99 0.5 s)"),
                           strict=True):
        axis.set_xlabel("minutes since the dark became ready")
        axis.set_title(title)
        axis.set_xscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("share of soaks failed so far (sequential rule)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def markdown(results: dict[str, Any]) -> str:
    """The tables of docs/judgment.md."""
    sim = results["simulation"]
    lines = ["| traffic, scenario | rule set | fails (share of soaks) | within 2 min | "
             "within 15 min | median time to fail | median dark requests |",
             "|---|---|---|---|---|---|---|"]
    names = {"sequential": "sequential (new)", "floor_rules": "previous floor rules",
             "mann_whitney": "Mann-Whitney each look"}
    for key, value in {**sim["rates"], **sim["latency"]}.items():
        for method in ("sequential", "floor_rules", "mann_whitney"):
            if method not in value:
                continue
            row = value[method]
            minutes = row.get("median_minutes")
            requests = row.get("median_requests", 0.0)
            lines.append(
                f"| {key} | {names[method]} | {row['probability']:.3f} | "
                f"{row.get('within_2_min', 0.0):.2f} | {row.get('within_15_min', 0.0):.2f} | "
                f"{'-' if minutes is None else f'{minutes:.1f} min'} | "
                f"{'-' if minutes is None else f'{requests:,.0f}'} |")
    lines += ["", "| traffic | identical release passes the 5xx rule after | "
              "... the latency rule after |", "|---|---|---|"]
    for key, value in sim["minutes_to_pass"].items():
        cells = [("never (2 h)" if v is None else f"{v:.1f} min") for v in value.values()]
        lines.append(f"| {key} | {cells[0]} | {cells[1]} |")
    live = results.get("live")
    if live:
        lines += ["", "| real Prometheus, 10 req/s | first unsafe | looks safe / unknown / "
                  "unsafe |", "|---|---|---|"]
        for key, value in live["scenarios"].items():
            first = value["first_unsafe_min"]
            lines.append(f"| {key} | {'never' if first is None else f'{first:.2f} min'} | "
                         f"{value['safe']} / {value['unknown']} / {value['unsafe']} |")
    return "\n".join(lines)


def run(options: reporting.Options) -> reporting.Outcome:
    """`python -m bench --only judgment`: the simulation, then the real-Prometheus run."""
    import asyncio

    from bench import judgment_live

    soaks = 50 if options.quick else 2000
    started = time.monotonic()
    simulation = simulate(soaks)
    simulation["seconds"] = round(time.monotonic() - started, 1)
    live = asyncio.run(judgment_live.run(virtual_minutes=5.0 if options.quick else 20.0))
    results = {"simulation": simulation, "live": live}
    if not options.quick:
        plot(simulation, ROOT / "docs" / "img" / "judgment.png")
    text = markdown(results)
    return reporting.Outcome(
        results=results,
        targets={"false_alarms_per_soak_at_99": "<= 0.01",
                 "x5_at_10_rps_within_15_min": ">= 0.9",
                 "x5_at_100_rps_within_2_min": ">= 0.9"},
        tables=[text],
        notes=[f"{soaks} simulated soaks per scenario ({simulation['mann_whitney_soaks']} for "
               "Mann-Whitney), 2 h, a look every 15 s; docs/img/judgment.png"],
    )
