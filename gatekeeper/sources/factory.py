"""Build the sources a rule set needs from the configuration (and nothing more)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gatekeeper.config import Config, PairConfig
from gatekeeper.outcomes import OutcomeBoard
from gatekeeper.rules import RuleSet
from gatekeeper.sources.base import PodCache, Source


def pair_drivers(pair: PairConfig) -> frozenset[str]:
    """The validation drivers PAIR configures (`load`, `jobs`: its test_job)."""
    return frozenset(name for name, on in (("load", pair.load is not None),
                                           ("jobs", pair.test_job is not None)) if on)


def configured_drivers(config: Config) -> dict[str, frozenset[str]]:
    """Pair name -> the validation drivers it configures."""
    return {pair.name: pair_drivers(pair) for pair in config.pairs}


def needs_kubernetes(rule_set: RuleSet) -> bool:
    """True when some rule reads pods, logs or objects through the Kubernetes API."""
    return bool(rule_set.sources() & {"logs", "kubernetes"})


def build_sources(
    config: Config, rule_set: RuleSet, *, api_client: Any | None = None,
    board: OutcomeBoard | None = None,
    pods: PodCache | None = None, server_now: Callable[[], float | None] | None = None,
    drivers_of: Callable[[str], frozenset[str]] | None = None,
) -> dict[str, Source]:
    """One instance per source the rules use; absent ones make those rules `error`.
    `board` holds the validation drivers' outcomes (the `validation` source reads it; an
    empty one outside the service). `pods`: a namespace's pods from the watch cache while
    current (else None); `server_now`: the API server's clock as the cache last saw it.
    `drivers_of`: a pair name's drivers now (the service's pairs change with their
    objects; default: the configuration's)."""
    used = rule_set.sources()
    sources: dict[str, Source] = {}
    if "prometheus" in used and config.prometheus is not None:
        from gatekeeper.sources.prometheus import PrometheusSource

        headers = dict(config.prometheus.headers)
        if config.prometheus.bearer_token_file:
            from pathlib import Path

            token = Path(config.prometheus.bearer_token_file).read_text().strip()
            headers["Authorization"] = f"Bearer {token}"
        sources["prometheus"] = PrometheusSource(
            config.prometheus.url, timeout=config.prometheus.timeout, headers=headers,
            pool=None, max_sample_age=config.prometheus.max_sample_age,
        )
    if "alertmanager" in used and config.alertmanager is not None:
        from gatekeeper.sources.alertmanager import AlertmanagerSource

        sources["alertmanager"] = AlertmanagerSource(
            config.alertmanager.url, timeout=config.alertmanager.timeout
        )
    if "loki" in used and config.loki is not None:
        from pathlib import Path

        from gatekeeper.sources.loki import LokiSource

        loki_token = (Path(config.loki.bearer_token_file).read_text().strip()
                      if config.loki.bearer_token_file else None)
        sources["loki"] = LokiSource(
            config.loki.url, timeout=config.loki.timeout, tenant=config.loki.tenant,
            token=loki_token, headers=config.loki.headers,
        )
    if "probe" in used:
        from gatekeeper.sources.probes import ProbeSource

        sources["probe"] = ProbeSource()
    if "validation" in used:
        from gatekeeper.sources.validation import ValidationSource

        drivers = configured_drivers(config)
        known = drivers_of or (lambda pair: drivers.get(pair, frozenset()))
        sources["validation"] = ValidationSource(
            board if board is not None else OutcomeBoard(),
            configured=lambda pair, driver: driver in known(pair))
    if api_client is not None and "logs" in used:
        from gatekeeper.sources.logs import LogSource

        sources["logs"] = LogSource(api_client, pods=pods)
    if api_client is not None and "kubernetes" in used:
        from gatekeeper.sources.kubernetes import KubernetesSource

        sources["kubernetes"] = KubernetesSource(
            api_client, read_secrets=config.kubernetes.read_secrets, pods=pods,
            server_now=server_now)
    return sources


async def close_sources(sources: dict[str, Source]) -> None:
    """Close every source, whatever happens to the others."""
    for source in sources.values():
        try:
            await source.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
