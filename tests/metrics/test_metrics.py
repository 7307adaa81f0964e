"""Metrics an operator watches, scraped from the metrics listener of two federating servers under a small
load (a remote join, messages both ways): every family the dashboard uses is present, and the ones the
load should move have moved. /health on every listener."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ranvier.app import Homeserver
from ranvier.metrics import Metrics, federation_endpoint, refusal_reason
from ranvier.metrics_collectors import extremity_histogram
from tests.ports import free_port
from tests.scenarios.servers import Client, eventually, start_server

DASHBOARD_FAMILIES = {
    "ranvier_http_requests",
    "ranvier_http_request_seconds",
    "ranvier_http_requests_in_flight",
    "ranvier_http_request_db_seconds",
    "ranvier_http_request_db_queries",
    "ranvier_federation_client_requests",
    "ranvier_federation_client_request_seconds",
    "ranvier_federation_inbound_pdus",
    "ranvier_federation_queue_depth",
    "ranvier_federation_oldest_queued_pdu_age_seconds",
    "ranvier_federation_destination_state",
    "ranvier_events_persisted",
    "ranvier_persist_batch_seconds",
    "ranvier_state_resolution_seconds",
    "ranvier_remote_join_phase_seconds",
    "ranvier_join_gap_events_found",
    "ranvier_dummy_events_sent",
    "ranvier_room_forward_extremities",
    "ranvier_timeline_gap_events_filled",
    "ranvier_timeline_gaps_given_up",
    "ranvier_db_connections",
    "ranvier_db_statement_seconds",
    "ranvier_timeline_gaps_found",
    "ranvier_event_loop_lag_seconds",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_open_fds",
}


async def _start(tmp_path: Path, name: str) -> Homeserver:
    fed_port = free_port()
    data = tmp_path / name
    return await start_server(
        data,
        fed_port=fed_port,
        extra={
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0},
                "federation": {
                    "bind": "127.0.0.1",
                    "port": fed_port,
                    "tls": True,
                    "tls_certificate_path": str(data / "tls.crt"),
                    "tls_private_key_path": str(data / "tls.key"),
                },
                "metrics": {"enabled": True, "bind": "127.0.0.1", "port": 0},
            }
        },
    )


async def _scrape(session: aiohttp.ClientSession, hs: Homeserver) -> dict[str, dict[tuple[Any, ...], float]]:
    async with session.get(f"http://127.0.0.1:{hs.ports['metrics']}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out: dict[str, dict[tuple[Any, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        samples = out.setdefault(family.name, {})
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _total(samples: dict[tuple[Any, ...], float], suffix: str = "", **labels: str) -> float:
    return sum(
        v
        for (name, lab), v in samples.items()
        if name.endswith(suffix) and all((k, val) in lab for k, val in labels.items())
    )


async def test_metric_families_are_present_and_move_under_load(tmp_path: Path) -> None:
    a = await _start(tmp_path, "a")
    b = await _start(tmp_path, "b")
    try:
        async with aiohttp.ClientSession() as session:
            for hs in (a, b):
                for listener in ("client", "metrics"):
                    async with session.get(f"http://127.0.0.1:{hs.ports[listener]}/health") as resp:
                        assert resp.status == 200 and await resp.text() == "OK"
            before = await _scrape(session, a)
            assert set(before) >= DASHBOARD_FAMILIES, DASHBOARD_FAMILIES - set(before)

            alice = await Client.register(session, a, "alice")
            bob = await Client.register(session, b, "bob")
            room_id = await alice.create_room(preset="public_chat")
            await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
            for i in range(3):
                await alice.send_text(room_id, f"from a {i}")
                await bob.send_text(room_id, f"from b {i}")

            async def delivered() -> bool:
                return len([t for t in await alice.texts(room_id) if t.startswith("from b")]) == 3

            await eventually(delivered, timeout=30)
            after_a = await _scrape(session, a)
            after_b = await _scrape(session, b)

        requests = after_a["ranvier_http_requests"]
        assert _total(requests, listener="client", route="/_matrix/client/v3/createRoom", status="200") == 1
        assert _total(after_a["ranvier_http_request_seconds"], "_count", listener="client") > 0
        assert _total(after_a["ranvier_http_request_db_queries"], "_sum", listener="client") > 0
        # A's server received B's messages in /send transactions and accepted them.
        assert _total(after_a["ranvier_federation_inbound_pdus"], outcome="accepted") >= 3
        # B joined over federation: its join phases were timed, and it sent transactions to A.
        for phase in ("make_join", "send_join", "persist"):
            assert _total(after_b["ranvier_remote_join_phase_seconds"], "_count", phase=phase) == 1
        sent = after_b["ranvier_federation_client_requests"]
        assert _total(sent, endpoint="federation/v1/send", destination=a.server_name, outcome="200") >= 1
        assert _total(sent, endpoint="key/v2/server") >= 1  # B fetched A's signing key
        persisted = after_a["ranvier_events_persisted"]
        earlier = before["ranvier_events_persisted"]
        assert _total(persisted, kind="timeline") > _total(earlier, kind="timeline")
        assert _total(after_a["ranvier_persist_batch_seconds"], "_count") > 0
        rooms = after_a["ranvier_room_forward_extremities"]
        assert _total(rooms, "_count") == 1 and _total(rooms, "_bucket", le="+Inf") == 1
        assert _total(after_a["process_resident_memory_bytes"]) > 0
        assert _total(after_a["ranvier_db_connections"], state="idle") >= 1
        assert _total(after_a["ranvier_db_statement_seconds"], "_count") > 0
    finally:
        await b.stop()
        await a.stop()


def test_label_helpers() -> None:
    assert federation_endpoint("/_matrix/federation/v1/send/123?x=1") == "federation/v1/send"
    assert federation_endpoint("/_matrix/key/v2/server") == "key/v2/server"
    assert refusal_reason("rejected: rule 4.2: sender not joined") == "auth rule 4.2"
    assert refusal_reason("PDU has no room_id") == "PDU has no"
    buckets, total = extremity_histogram([1, 1, 3, 250])
    assert dict(buckets)["1"] == 2 and dict(buckets)["5"] == 3 and dict(buckets)["+Inf"] == 4
    assert total == 255


def test_a_transaction_is_counted_with_one_labels_call_per_outcome() -> None:
    """The per-PDU results of a /send and the kinds of a persisted batch are counted per batch: the same
    totals as one inc() per PDU, with one labels() look-up per distinct label set (it was one per PDU,
    50 a transaction, each taking the metric's lock on the event loop)."""
    metrics = Metrics()
    calls: list[tuple[str, ...]] = []
    for family in (metrics.inbound_pdus, metrics.events_persisted):
        labels = family.labels

        def counting(*values: str, _labels: Any = labels) -> Any:
            calls.append(values)
            return _labels(*values)

        family.labels = counting  # type: ignore[method-assign]
    results: dict[str, dict[str, str]] = {f"$ok{i}": {} for i in range(47)}
    results |= {f"$bad{i}": {"error": "rejected: rule 4.2: sender not joined"} for i in range(2)}
    results["$late"] = {"error": "PDU has no room_id"}
    metrics.observe_inbound_results(results)
    metrics.count_persisted(["timeline"] * 49 + ["outlier"])
    assert sorted(calls) == sorted(
        [
            ("accepted", ""),
            ("refused", "auth rule 4.2"),
            ("refused", "PDU has no"),
            ("timeline",),
            ("outlier",),
        ]
    )

    def value(name: str, **labels: str) -> float:
        found = metrics.registry.get_sample_value(name, labels)
        assert found is not None, (name, labels)
        return found

    assert value("ranvier_federation_inbound_pdus_total", outcome="accepted", reason="") == 47
    assert value("ranvier_federation_inbound_pdus_total", outcome="refused", reason="auth rule 4.2") == 2
    assert value("ranvier_federation_inbound_pdus_total", outcome="refused", reason="PDU has no") == 1
    assert value("ranvier_events_persisted_total", kind="timeline") == 49
    assert value("ranvier_events_persisted_total", kind="outlier") == 1


def test_the_grafana_dashboard_uses_only_metrics_we_export() -> None:
    """contrib/grafana/ranvier-dashboard.json: every metric its queries name is one of ours."""
    import json
    import re

    dashboard = json.loads((Path(__file__).parents[2] / "contrib/grafana/ranvier-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = set()
    for expr in exprs:
        names.update(re.findall(r"\b((?:ranvier|process)_[a-z_]+)\b", expr))
    suffixes = ("_total", "_bucket", "_count", "_sum")
    families = {next((n[: -len(s)] for s in suffixes if n.endswith(s)), n) for n in names}
    # ranvier_federation_retry_interval_seconds is set by the sender per destination in back-off.
    known = DASHBOARD_FAMILIES | {"ranvier_federation_retry_interval_seconds"}
    assert families <= known, families - known
    assert len(dashboard["panels"]) >= 15
