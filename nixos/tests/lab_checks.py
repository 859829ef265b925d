# What the VM test (lab.py) and the runtime tests (tests/runtime/) both assert
# about the lab's traces and metrics, so that the two cannot drift apart: the
# span names a hop emits, how Tempo's answers are read, the checks on one
# trace, and the PromQL of the service graph and the span metrics.
#
# Plain Python without the test driver's names. The runtime test imports it;
# nixos/tests/lab.nix puts its text in front of lab.py's, so lab.py uses these
# names (and this file's imports) as its own and must not import them again
# (pyflakes would call that a redefinition).
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

# What one hop emits for an HTML request, as the service documents it. This is
# the only place the tests spell out span names: adjust it here if they change.
SERVER_SPAN = "GET /"
CLIENT_SPAN = "GET"  # one per downstream call (reqwest-tracing)
WORK_SPAN = "simulated work"  # only when the hop has a delay or jitter
WORK_ATTRIBUTE = "lab.response_time_ms"  # the configured delay, on WORK_SPAN
TEMPLATE_LOAD = "template load"
TEMPLATE_RENDER = "template render"
# Every hop checks its compiled templates, then renders (the entry page.html,
# which includes part.html; the others part.html alone).
TEMPLATE_SPANS = [TEMPLATE_LOAD, TEMPLATE_RENDER]
RESOURCE_ATTRIBUTES = ["service.name", "service.version", "service.instance.id", "host.name"]

# Metrics of Tempo's metrics-generator, as they arrive in Prometheus.
SERVICE_GRAPH_REQUESTS = "traces_service_graph_request_total"
SERVICE_GRAPH_FAILED = "traces_service_graph_request_failed_total"
SPAN_METRICS_CALLS = "traces_spanmetrics_calls_total"
SPAN_METRICS_LATENCY = "traces_spanmetrics_latency_bucket"

# The hops' own metrics (OTel HTTP semantic conventions) as Prometheus names
# them after the collector's remote write; service.name becomes `job`.
SERVER_DURATION = "http_server_request_duration_seconds"
CLIENT_DURATION = "http_client_request_duration_seconds"

Span = dict[str, Any]
# A hop as /etc/tracing-lab/lab.json describes it.
Hop = dict[str, Any]


def expected_span_names(hop: Hop) -> Counter[str]:
    names = Counter([SERVER_SPAN])
    names.update(TEMPLATE_SPANS)
    # src/delay.rs skips the span only when both delay and jitter are 0.
    if hop["responseTime"] > 0 or hop["jitter"] > 0:
        names[WORK_SPAN] += 1
    if hop["calledServices"]:  # no zero counts: Counter equality before 3.10 counts them
        names[CLIENT_SPAN] += len(hop["calledServices"])
    return names


def expected_span_count(hops: list[Hop]) -> int:
    return sum(sum(expected_span_names(hop).values()) for hop in hops)


def service_graph_edges(hops: list[Hop]) -> list[tuple[str, str]]:
    """Every caller→callee pair of the chain, as (client, server) service names."""
    return [(hop["serviceName"], callee) for hop in hops for callee in hop["calledServices"]]


def service_graph_edge_query(client: str, server: str) -> str:
    return f'{SERVICE_GRAPH_REQUESTS}{{client="{client}",server="{server}"}}'


def failed_edge_query(client: str, server: str) -> str:
    """Failed calls from client to server (either side's span ERROR), as the
    service graph counts them: what the errors exercise shows."""
    return f'{SERVICE_GRAPH_FAILED}{{client="{client}",server="{server}"}}'


def span_metrics_query(service: str) -> str:
    return f'{SPAN_METRICS_CALLS}{{service="{service}"}}'


def hop_logs_query(service: str, trace_id: str) -> str:
    """LogQL for one hop's log lines of one trace (trace_id: structured metadata)."""
    return f'{{service_name="{service}"}} | trace_id="{trace_id}"'


def service_metrics_queries(hops: list[Hop]) -> list[str]:
    """The hops' request counts: the server side per hop, the client side per
    edge (the caller's job, the callee's port)."""
    ports = {hop["serviceName"]: hop["port"] for hop in hops}
    return [f'{SERVER_DURATION}_count{{job="{hop["serviceName"]}"}}' for hop in hops] + [
        f'{CLIENT_DURATION}_count{{job="{client}", server_port="{ports[server]}"}}'
        for client, server in service_graph_edges(hops)
    ]


def exemplar_trace_ids(answer: dict[str, Any], label: str) -> list[str]:
    """The trace ids (under `label`) of Prometheus' /api/v1/query_exemplars answer."""
    return [
        exemplar["labels"][label]
        for series in answer.get("data") or []
        for exemplar in series.get("exemplars", [])
        if label in exemplar.get("labels", {})
    ]


def callers_of(service: str, hops: list[Hop]) -> list[str]:
    """The services whose requests pass through `service`."""
    found: list[str] = []
    frontier = [service]
    while frontier:
        callee = frontier.pop()
        for hop in hops:
            if callee in hop["calledServices"] and hop["serviceName"] not in found:
                found.append(hop["serviceName"])
                frontier.append(hop["serviceName"])
    return found


# --- reading Tempo's answers -------------------------------------------------


def attribute_value(value: dict[str, Any]) -> Any:
    for field in ("stringValue", "boolValue", "doubleValue"):
        if field in value:
            return value[field]
    if "intValue" in value:
        return int(value["intValue"])
    return value


def attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: attribute_value(item.get("value", {})) for item in items}


def spans_of(trace: dict[str, Any]) -> list[Span]:
    """Flattens Tempo's /api/traces answer (OTLP/JSON) into spans that know their service."""
    spans: list[Span] = []
    for batch in trace.get("batches", trace.get("resourceSpans", [])):
        resource = attributes(batch.get("resource", {}).get("attributes", []))
        scopes = batch.get("scopeSpans", batch.get("instrumentationLibrarySpans", []))
        for scope in scopes:
            for span in scope.get("spans", []):
                spans.append(
                    {
                        **span,
                        "service": resource.get("service.name"),
                        "resource": resource,
                        "attrs": attributes(span.get("attributes", [])),
                        "startNs": int(span["startTimeUnixNano"]),
                        "durationMs": (int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e6,
                    }
                )
    return spans


def kind(span: Span) -> str:
    return str(span.get("kind", "")).replace("SPAN_KIND_", "")


def is_error(span: Span) -> bool:
    return str(span.get("status", {}).get("code", "")) in ("STATUS_CODE_ERROR", "2")


def trace_ids_in_search(answer: dict[str, Any]) -> set[str]:
    """Trace ids of a /api/search answer, without leading zeros (Tempo drops them)."""
    return {t["traceID"].lstrip("0") for t in answer.get("traces", [])}


def search_finds(answer: dict[str, Any], trace_id: str) -> bool:
    return trace_id.lstrip("0") in trace_ids_in_search(answer)


def traces_started_at(answer: dict[str, Any], service: str) -> set[str]:
    """Trace ids of a /api/search answer whose root span is `service`'s: in the
    broken-propagation exercise, the orphans that begin below the break."""
    return {t["traceID"].lstrip("0") for t in answer.get("traces", []) if t.get("rootServiceName") == service}


def check_cut_trace(spans: list[Span], cut: str, lost: str) -> None:
    """The trace of a request through a hop (`cut`) that passes no trace
    context on: it ends at `cut`'s CLIENT span, and `lost` is not in it."""
    assert not any(s["service"] == lost for s in spans), f"{lost} is in the caller's trace: {span_summary(spans)}"
    clients = {s["spanId"] for s in spans if s["service"] == cut and kind(s) == "CLIENT"}
    assert clients, f"{cut} made no CLIENT span: {span_summary(spans)}"
    below = [s for s in spans if s.get("parentSpanId") in clients]
    assert not below, f"spans below {cut}'s CLIENT span: {span_summary(below)}"


def span_summary(spans: list[Span]) -> str:
    return json.dumps(sorted(Counter(f"{s['service']}: {s['name']}" for s in spans).items()))


# --- the checks on one trace ---------------------------------------------------


def trace_is_complete(spans: list[Span], hops: list[Hop]) -> bool:
    """Whether Tempo has (at least) as many spans as the chain emits, from every hop."""
    services = {hop["serviceName"] for hop in hops}
    return {s["service"] for s in spans} >= services and len(spans) >= expected_span_count(hops)


def check_trace(spans: list[Span], hops: list[Hop]) -> None:
    """Asserts that `spans` are the trace of one successful HTML request through `hops`."""
    total = expected_span_count(hops)
    assert len(spans) == total, f"{len(spans)} spans, expected {total}: {span_summary(spans)}"
    by_id = {s["spanId"]: s for s in spans}
    for hop in hops:
        service = hop["serviceName"]
        own = [s for s in spans if s["service"] == service]
        names = Counter(s["name"] for s in own)
        expected = expected_span_names(hop)
        assert names == expected, f"{service} has spans {dict(names)}, expected {dict(expected)}"
        missing = [a for a in RESOURCE_ATTRIBUTES if a not in own[0]["resource"]]
        assert not missing, f"{service}'s resource lacks {missing}"

        servers = [s for s in own if kind(s) == "SERVER"]
        assert len(servers) == 1, f"{service} has {len(servers)} SERVER spans"
        server = servers[0]
        assert server["name"] == SERVER_SPAN, f"{service}'s server span is {server['name']!r}"

        # Template and work spans hang below this hop's server span.
        for span in own:
            if span["name"] in (TEMPLATE_LOAD, TEMPLATE_RENDER, WORK_SPAN):
                node = span
                while node.get("parentSpanId") and node is not server:
                    parent = by_id.get(node["parentSpanId"])
                    assert parent is not None, f"{span['name']} of {service} has a parent not in the trace"
                    node = parent
                    assert node["service"] == service, f"{span['name']} of {service} sits under {node['service']}"
                assert node is server, f"{span['name']} of {service} is not below its server span"

        for work in (s for s in own if s["name"] == WORK_SPAN):
            # An integer; compared as text, so that an older service that
            # recorded it as the text "50" still reads the same.
            configured = work["attrs"].get(WORK_ATTRIBUTE)
            assert str(configured) == str(hop["responseTime"]), f"{service}: {work['attrs']}"
            minimum = hop["responseTime"] - hop["jitter"]
            assert work["durationMs"] >= minimum, f"{service}'s work took {work['durationMs']} ms < {minimum} ms"

        # Each client span is the parent of a callee's server span.
        client_ids = {s["spanId"] for s in own if kind(s) == "CLIENT"}
        callee_servers = sorted(
            s["service"] for s in spans if kind(s) == "SERVER" and s.get("parentSpanId") in client_ids
        )
        assert callee_servers == sorted(hop["calledServices"]), (
            f"{service}'s client spans lead to {callee_servers}, not {hop['calledServices']}"
        )

    roots = [s for s in spans if not s.get("parentSpanId")]
    assert len(roots) == 1, f"{len(roots)} root spans: {[(s['service'], s['name']) for s in roots]}"
    root = roots[0]
    assert root["service"] == hops[0]["serviceName"] and kind(root) == "SERVER", (
        f"root span: {root['service']} {root['name']}"
    )


def wait_for_trace(
    fetch: Callable[[], list[Span]],
    retry_until: Callable[[Callable[[bool], bool]], None],
    done: Callable[[list[Span]], bool],
    report: Callable[[str], None],
    what: str,
) -> list[Span]:
    """Fetches a trace through `fetch` until done(spans) holds, retried by `retry_until`."""
    found: list[Span] = []

    def check(last_try: bool) -> bool:
        nonlocal found
        found = fetch()
        if last_try:
            report(f"the trace ({what}) has: {span_summary(found)}")
        return done(found)

    retry_until(check)
    return found
