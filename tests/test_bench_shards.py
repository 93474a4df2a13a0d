"""The sharded-replicas benchmark's own arithmetic (its runs are in bench/, not here)."""

from __future__ import annotations

from bench import shards


def test_metric_sums_every_sample_of_one_name_only() -> None:
    text = "\n".join([
        "# HELP gatekeeper_evaluation_duration_seconds Duration of one evaluation cycle.",
        'gatekeeper_evaluation_duration_seconds_count 4.0',
        'gatekeeper_evaluation_duration_seconds_sum 13.5',
        'gatekeeper_evaluation_duration_seconds_sum_other{x="1"} 99.0',
        'prometheus_http_requests_total{code="200",handler="/api/v1/query"} 7',
        'prometheus_http_requests_total{code="200",handler="/api/v1/query_range"} 2',
        'prometheus_http_requests_total{code="200",handler="/-/ready"} 50',
    ])
    assert shards._metric(text, "gatekeeper_evaluation_duration_seconds_count") == 4.0
    assert shards._metric(text, "gatekeeper_evaluation_duration_seconds_sum") == 13.5
    assert shards._metric(text, "prometheus_http_requests_total") == 59.0


def test_outcome_reports_every_group_and_the_zero_target() -> None:
    row = {"replicas": 2, "ready_s": 3.0, "stored_s": 4.0, "cycle_s_per_replica": [1.5, 1.2],
           "promql_per_cycle": 9.0, "api_requests_per_min": 1200, "rss_mib": [200.0, 190.0],
           "flip_s": {"p50": 0.3}, "state_puts_per_flip": 1.5, "state_put_statuses": [200],
           "state_configmap_bytes": 2048, "failover_s": 7.5, "pairs_acted_on_by_two": 0}
    outcome = shards._outcome([row, {**row, "replicas": 4, "pairs_acted_on_by_two": 3}], 100)
    assert outcome.targets["pairs_acted_on_by_two"]["measured"] == [0, 3]
    table = outcome.tables[0]
    assert "1.5 1.2" in table and "7.5" in table and table.count("\n") == 4
    assert {s for p in shards._pairs(50) for s in [shards._shard(p.name)]} <= set(
        range(shards.SHARDS))
