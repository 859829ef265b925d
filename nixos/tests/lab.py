# VM test of the tracing lab (nixos/tests/lab.nix). The NixOS test driver runs
# this with `machine`, `subtest`, `retry` and friends already defined.
import json
import re
import shlex
from collections import Counter
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any, NamedTuple

# What one hop emits for an HTML request, as the service documents it. This is
# the only place the test spells out span names: adjust it here if they change.
SERVER_SPAN = "GET /"
CLIENT_SPAN = "GET"  # one per downstream call (reqwest-tracing)
WORK_SPAN = "simulated work"  # only when the hop has a delay or jitter
WORK_ATTRIBUTE = "lab.response_time_ms"  # the configured delay, on WORK_SPAN
TEMPLATE_LOAD = "template load"
TEMPLATE_RENDER = "template render"
TEMPLATE_SPANS = {
    # The entry hop renders page.html, which includes part.html.
    "entry": [TEMPLATE_LOAD, TEMPLATE_RENDER, TEMPLATE_LOAD],
    "inner": [TEMPLATE_LOAD, TEMPLATE_RENDER],
}
RESOURCE_ATTRIBUTES = ["service.name", "service.version", "service.instance.id", "host.name"]

Span = dict[str, Any]


def expected_span_names(hop: dict[str, Any]) -> Counter[str]:
    names = Counter([SERVER_SPAN])
    names.update(TEMPLATE_SPANS["entry" if hop["entry"] else "inner"])
    # src/delay.rs skips the span only when both delay and jitter are 0.
    if hop["responseTime"] > 0 or hop["jitter"] > 0:
        names[WORK_SPAN] += 1
    if hop["calledServices"]:  # no zero counts: Counter equality before 3.10 counts them
        names[CLIENT_SPAN] += len(hop["calledServices"])
    return names


def curl(url: str, *args: str) -> str:
    return "curl --silent --show-error --max-time 20 " + " ".join(
        shlex.quote(a) for a in [*args, url]
    )


def get(url: str, *args: str) -> str:
    return machine.succeed(curl(url, "--fail", *args))


def get_json(url: str, *args: str) -> Any:
    return json.loads(get(url, *args))


class Answer(NamedTuple):
    status: int
    trace_id: str
    body: str
    seconds: float


def request_chain(url: str, accept: str = "text/html") -> Answer:
    """One request through the chain."""
    out = machine.succeed(
        curl(url, "--header", f"Accept: {accept}", "--dump-header", "/tmp/headers")
        + " --output /tmp/body --write-out '%{http_code} %{time_total}'"
    )
    status, seconds = out.split()
    headers = machine.succeed("cat /tmp/headers")
    match = re.search(
        r"^traceresponse:\s*00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}\s*$",
        headers,
        re.IGNORECASE | re.MULTILINE,
    )
    assert match, f"no W3C traceresponse header in:\n{headers}"
    return Answer(int(status), match.group(1).lower(), machine.succeed("cat /tmp/body"), float(seconds))


# --- reading Tempo's OTLP/JSON ---------------------------------------------


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
    """Flattens Tempo's /api/traces answer into spans that know their service."""
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
                        "durationMs": (
                            int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])
                        )
                        / 1e6,
                    }
                )
    return spans


def kind(span: Span) -> str:
    return str(span.get("kind", "")).replace("SPAN_KIND_", "")


def is_error(span: Span) -> bool:
    return str(span.get("status", {}).get("code", "")) in ("STATUS_CODE_ERROR", "2")


def fetch_trace(trace_id: str) -> list[Span]:
    status, out = machine.execute(curl(f"{tempo}/api/traces/{trace_id}", "--fail"))
    return spans_of(json.loads(out)) if status == 0 else []


def wait_for_trace(
    trace_id: str, done: Callable[[list[Span]], bool], what: str, timeout: int = 180
) -> list[Span]:
    """Polls Tempo until done(spans) holds; returns the spans."""
    found: list[Span] = []

    def check(last_try: bool) -> bool:
        nonlocal found
        found = fetch_trace(trace_id)
        if last_try:
            machine.log(f"trace {trace_id} ({what}) has: {Counter((s['service'], s['name']) for s in found)}")
        return done(found)

    retry(check, timeout)
    return found


# --- reading the page -------------------------------------------------------


class HopParser(HTMLParser):
    """Records each class="hop" element with the hops it is nested in."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.hops: list[tuple[str, list[str]]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag in self.VOID:
            return
        service = a.get("data-service") if "hop" in (a.get("class") or "").split() else None
        if service is not None:
            self.hops.append((service, [s for _, s in self.stack if s is not None]))
        self.stack.append((tag, service))

    def handle_endtag(self, tag: str) -> None:
        # Also closes what HTML lets end implicitly (<p>, <li>, ...).
        if any(t == tag for t, _ in self.stack):
            while self.stack.pop()[0] != tag:
                pass


def callers_of(service: str, hops: list[dict[str, Any]]) -> list[str]:
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


# --- the lab as the module describes it --------------------------------------

start_all()

lab = json.loads(machine.succeed("cat /etc/tracing-lab/lab.json"))
hops: list[dict[str, Any]] = lab["hops"]
ports: dict[str, int] = lab["ports"]
services = [hop["serviceName"] for hop in hops]
entry_url = hops[0]["url"]
tempo = f"http://127.0.0.1:{ports['tempo']}"
prometheus = f"http://127.0.0.1:{ports['prometheus']}"
grafana = f"http://127.0.0.1:{ports['grafana']}"

for unit in ["opentelemetry-collector", "tempo", "prometheus", "grafana"] + [h["unit"] for h in hops]:
    machine.wait_for_unit(unit)
for port in [ports["collectorOtlpGrpc"], ports["collectorOtlpHttp"], ports["tempoOtlpGrpc"], ports["tempoOtlpHttp"]]:
    machine.wait_for_open_port(port, addr="127.0.0.1")
for port in [ports["tempo"], ports["prometheus"], ports["grafana"]] + [h["port"] for h in hops]:
    machine.wait_for_open_port(port, addr="127.0.0.1")
machine.wait_until_succeeds(curl(f"{tempo}/ready", "--fail"))
machine.wait_until_succeeds(curl(f"{prometheus}/-/ready", "--fail"))
machine.wait_until_succeeds(curl(f"{grafana}/api/health", "--fail"))
for hop in hops:
    machine.wait_until_succeeds(curl(f"{hop['url']}readyz", "--fail"))

with subtest("the chain answers"):
    answer = request_chain(entry_url)
    trace_id, page = answer.trace_id, answer.body
    assert answer.status == 200, f"entry hop answered {answer.status}:\n{page}"
    parser = HopParser()
    parser.feed(page)
    parser.close()
    assert [s for s, _ in parser.hops] == services, f"hops in the page: {parser.hops}"
    for i, (service, outer) in enumerate(parser.hops):
        assert outer == services[:i], f"{service} is nested in {outer}, not in {services[:i]}"
    assert page.rstrip().lower().endswith("</html>"), "the page is not one complete document"
    assert any(
        "/explore?" in link and trace_id in link for link in parser.links
    ), f"no Grafana link to trace {trace_id} in {parser.links}"

    answer = request_chain(entry_url, accept="application/json")
    assert answer.status == 200, f"JSON request answered {answer.status}:\n{answer.body}"
    hop_json: Any = json.loads(answer.body)
    seen = []
    while hop_json is not None:
        seen.append(hop_json["service"])
        assert hop_json["trace_id"] == answer.trace_id, f"{hop_json['service']} reports trace {hop_json['trace_id']}"
        downstream = hop_json["downstream"]
        hop_json = downstream[0]["hop"] if downstream else None
    assert seen == services, f"JSON chain: {seen}"

with subtest("the trace is in Tempo"):
    expected = {hop["serviceName"]: expected_span_names(hop) for hop in hops}
    total = sum(sum(names.values()) for names in expected.values())
    spans = wait_for_trace(
        trace_id,
        lambda found: {s["service"] for s in found} >= set(services) and len(found) >= total,
        "all spans of the chain",
    )
    assert len(spans) == total, f"{len(spans)} spans, expected {total}"
    by_id = {s["spanId"]: s for s in spans}
    for hop in hops:
        service = hop["serviceName"]
        own = [s for s in spans if s["service"] == service]
        names = Counter(s["name"] for s in own)
        assert names == expected[service], f"{service} has spans {dict(names)}, expected {dict(expected[service])}"
        missing = [a for a in RESOURCE_ATTRIBUTES if a not in own[0]["resource"]]
        assert not missing, f"{service}'s resource lacks {missing}"

        (server,) = [s for s in own if kind(s) == "SERVER"]
        assert server["name"] == SERVER_SPAN, f"{service}'s server span is {server['name']!r}"

        # Template and work spans hang below this hop's server span.
        for span in own:
            if span["name"] in (TEMPLATE_LOAD, TEMPLATE_RENDER, WORK_SPAN):
                node = span
                while node.get("parentSpanId") and node is not server:
                    node = by_id[node["parentSpanId"]]
                    assert node["service"] == service, f"{span['name']} of {service} sits under {node['service']}"
                assert node is server, f"{span['name']} of {service} is not below its server span"

        for work in (s for s in own if s["name"] == WORK_SPAN):
            assert work["attrs"].get(WORK_ATTRIBUTE) == hop["responseTime"], f"{service}: {work['attrs']}"
            minimum = hop["responseTime"] - hop["jitter"]
            assert work["durationMs"] >= minimum, f"{service}'s work took {work['durationMs']} ms < {minimum} ms"

        # Each client span is the parent of the next hop's server span.
        clients = [s for s in own if kind(s) == "CLIENT"]
        callee_servers = sorted(
            s["service"]
            for s in spans
            if kind(s) == "SERVER" and s.get("parentSpanId") in {c["spanId"] for c in clients}
        )
        assert callee_servers == sorted(hop["calledServices"]), f"{service}'s client spans lead to {callee_servers}, not {hop['calledServices']}"

    (root,) = [s for s in spans if not s.get("parentSpanId")]
    assert root["service"] == services[0] and kind(root) == "SERVER", f"root span: {root['service']} {root['name']}"

with subtest("search finds the trace"):
    now = int(machine.succeed("date +%s"))

    def found_by_search(last_try: bool) -> bool:
        result = get_json(
            f"{tempo}/api/search",
            "--get",
            "--data-urlencode",
            f"tags=service.name={services[-1]}",
            "--data-urlencode",
            f"start={now - 3600}",
            "--data-urlencode",
            f"end={now + 60}",
            "--data-urlencode",
            "limit=100",
        )
        # Tempo drops leading zeros of trace ids in search results.
        ids = {t["traceID"].lstrip("0") for t in result.get("traces", [])}
        return trace_id.lstrip("0") in ids

    retry(found_by_search, 120)

with subtest("Grafana shows it"):
    health = get_json(f"{grafana}/api/health")
    assert health["database"] == "ok", f"Grafana health: {health}"
    for uid in ("tempo", "prometheus"):
        get_json(f"{grafana}/api/datasources/uid/{uid}")
    # The checks behind each data source's "Test" button: Prometheus has a
    # backend health check, Tempo's is an echo through the data source proxy.
    machine.wait_until_succeeds(
        curl(f"{grafana}/api/datasources/uid/prometheus/health", "--fail") + " | grep -q '\"status\":\"OK\"'",
        timeout=120,
    )
    machine.wait_until_succeeds(
        curl(f"{grafana}/api/datasources/proxy/uid/tempo/api/echo", "--fail") + " | grep -q echo",
        timeout=120,
    )
    proxied = get_json(f"{grafana}/api/datasources/proxy/uid/tempo/api/traces/{trace_id}")
    assert len(spans_of(proxied)) == total, "the trace did not come through Grafana's data source proxy"
    dashboard = get_json(f"{grafana}/api/dashboards/uid/tracing-lab")
    assert dashboard["dashboard"]["title"] == "Tracing lab", f"dashboard: {dashboard['dashboard']['title']}"

with subtest("Prometheus has the service graph"):
    for hop in hops:
        for callee in hop["calledServices"]:
            query = f'traces_service_graph_request_total{{client="{hop["serviceName"]}",server="{callee}"}}'

            def has_edge(last_try: bool) -> bool:
                # Each try sends traffic: the generator needs fresh client/server pairs.
                request_chain(entry_url)
                result = get_json(f"{prometheus}/api/v1/query", "--get", "--data-urlencode", f"query={query}")
                return bool(result["data"]["result"])

            retry(has_edge, 300)

with subtest("faults"):
    machine.stop_job("opentelemetry-collector.service")
    machine.wait_for_closed_port(ports["collectorOtlpHttp"], addr="127.0.0.1")
    for _ in range(3):
        answer = request_chain(entry_url)
        assert answer.status == 200, f"without the collector the chain answered {answer.status}"
        assert answer.seconds < 3, f"without the collector a request took {answer.seconds} s"

    machine.start_job("opentelemetry-collector.service")
    machine.wait_for_unit("opentelemetry-collector.service")
    machine.wait_for_open_port(ports["collectorOtlpHttp"], addr="127.0.0.1")
    sent: list[str] = []

    def new_trace_arrives(last_try: bool) -> bool:
        sent.append(request_chain(entry_url).trace_id)
        return any(fetch_trace(t) for t in sent[-10:])

    retry(new_trace_arrives, 180)

    last = hops[-1]
    machine.stop_job(last["unit"])
    machine.wait_for_closed_port(last["port"], addr="127.0.0.1")
    answer = request_chain(entry_url)
    assert answer.status == 502, f"with {last['serviceName']} down the chain answered {answer.status}"
    failing = callers_of(last["serviceName"], hops)
    spans = wait_for_trace(
        answer.trace_id,
        lambda found: all(any(s["service"] == svc and is_error(s) for s in found) for svc in failing),
        "ERROR spans",
    )
    for svc in failing:
        servers = [s for s in spans if s["service"] == svc and kind(s) == "SERVER"]
        assert servers and all(is_error(s) for s in servers), f"{svc}'s server span is not ERROR"

    machine.start_job(last["unit"])
    machine.wait_for_open_port(last["port"], addr="127.0.0.1")
    answer = request_chain(entry_url)
    assert answer.status == 200, f"after restarting {last['serviceName']} the chain answered {answer.status}"

with subtest("microservice units are hardened"):
    for hop in hops:
        report = machine.succeed(f"SYSTEMD_COLORS=0 systemd-analyze security --no-pager {hop['unit']}")
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", report)
        assert match, f"no exposure level in:\n{report}"
        assert float(match.group(1)) <= 2.0, f"{hop['unit']} is rated {match.group(1)}:\n{report}"
