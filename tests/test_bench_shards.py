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
           "state_write_bytes": 2048, "failover_s": 7.5, "pairs_acted_on_by_two": 0}
    outcome = shards._outcome([row, {**row, "replicas": 4, "pairs_acted_on_by_two": 3}], 100,
                              "objects")
    assert outcome.targets["pairs_acted_on_by_two"]["measured"] == [0, 3]
    table = outcome.tables[0]
    assert "1.5 1.2" in table and "7.5" in table and table.count("\n") == 4
    assert "(objects)" in table and outcome.results["state"] == "objects"
    assert {s for p in shards._pairs(50) for s in [shards._shard(p.name)]} <= set(
        range(shards.SHARDS))


def test_pair_objects_are_the_charts_crd_and_one_valid_object_per_pair() -> None:
    """The seed the emulator loads in objects mode: it accepts every object (schema checked
    against the chart's CRD, as on a real server)."""
    from kube_emulator.emulator import Emulator

    pairs = shards._pairs(3)
    manifests = shards._pair_objects(pairs)
    assert manifests[0]["kind"] == "CustomResourceDefinition"
    emulator = Emulator()
    emulator.load(manifests)
    stored = emulator.list_objects("bluegreen.dev/v1alpha1", "BlueGreenPair",
                                   shards.OBJECTS_NAMESPACE)
    assert [o["metadata"]["name"] for o in stored] == [p.name for p in pairs]
    assert stored[0]["spec"]["namespaces"] == [pairs[0].blue, pairs[0].green]


def test_overlaps_counts_only_a_shard_proven_held_by_two_at_once() -> None:
    def read(replica: int, sent: float, held: set[int]) -> shards.Reading:
        return shards.Reading(replica, sent, sent + 0.05, frozenset(held))

    # A hand-over between two reads: 0 has shard 3, 1 has it next, 0 no longer does.
    handover = [read(0, 0.0, {3}), read(1, 0.1, {3}), read(0, 0.2, set()), read(1, 0.3, {3})]
    assert shards.overlaps(handover, within_s=1.0) == set()
    # 0 holds shard 3 before and after 1's read that shows it too: both held it at once.
    both = [read(0, 0.0, {3, 4}), read(1, 0.1, {3}), read(0, 0.2, {3, 4}), read(1, 0.3, {3})]
    assert shards.overlaps(both, within_s=1.0) == {3}
    # ...unless 0's two readings are so far apart that it may have lost and retaken it.
    slow = [read(0, 0.0, {3}), read(1, 0.1, {3}), read(0, 1.5, {3})]
    assert shards.overlaps(slow, within_s=1.0) == set()
