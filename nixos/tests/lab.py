# VM test of the tracing lab (nixos/tests/lab.nix). The NixOS test driver runs
# this with `machine`, `subtest`, `retry` and friends already defined, after
# the text of ./lab_checks.py (what the runtime test asserts too): json,
# Counter, Any, Callable and the span and metric helpers come from there.
import re
import shlex
from html.parser import HTMLParser
from typing import NamedTuple


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


def fetch_trace(trace_id: str) -> list[Span]:
    status, out = machine.execute(curl(f"{tempo}/api/traces/{trace_id}", "--fail"))
    return spans_of(json.loads(out)) if status == 0 else []


def wait_for_trace_in_tempo(
    trace_id: str, done: Callable[[list[Span]], bool], what: str, timeout: int = 180
) -> list[Span]:
    """Polls Tempo until done(spans) holds; returns the spans."""
    return wait_for_trace(
        lambda: fetch_trace(trace_id),
        lambda check: retry(check, timeout),
        done,
        lambda line: machine.log(f"{trace_id}: {line}"),
        what,
    )


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
loki = f"http://127.0.0.1:{ports['loki']}"

for unit in ["opentelemetry-collector", "tempo", "loki", "prometheus", "grafana"] + [h["unit"] for h in hops]:
    machine.wait_for_unit(unit)
for port in [ports["collectorOtlpGrpc"], ports["collectorOtlpHttp"], ports["tempoOtlpGrpc"], ports["tempoOtlpHttp"]]:
    machine.wait_for_open_port(port, addr="127.0.0.1")
for port in [ports["tempo"], ports["loki"], ports["prometheus"], ports["grafana"]] + [h["port"] for h in hops]:
    machine.wait_for_open_port(port, addr="127.0.0.1")
machine.wait_until_succeeds(curl(f"{tempo}/ready", "--fail"))
machine.wait_until_succeeds(curl(f"{prometheus}/-/ready", "--fail"))
machine.wait_until_succeeds(curl(f"{loki}/ready", "--fail"), timeout=180)
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
    total = expected_span_count(hops)
    spans = wait_for_trace_in_tempo(trace_id, lambda found: trace_is_complete(found, hops), "all spans of the chain")
    check_trace(spans, hops)

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
        return search_finds(result, trace_id)

    retry(found_by_search, 120)

with subtest("Grafana shows it"):
    health = get_json(f"{grafana}/api/health")
    assert health["database"] == "ok", f"Grafana health: {health}"
    for uid in ("tempo", "prometheus"):
        get_json(f"{grafana}/api/datasources/uid/{uid}")
    # The checks behind each data source's "Test" button: Prometheus has a
    # backend health check, Tempo's is an echo through the data source proxy.
    # Read in Python, not piped into grep: the driver runs commands with
    # pipefail, and grep -q leaving early could fail curl with SIGPIPE.
    def answers_with(url: str, text: str) -> Callable[[bool], bool]:
        def check(last_try: bool) -> bool:
            status, out = machine.execute(curl(url, "--fail"))
            if last_try:
                machine.log(f"{url} answered ({status}): {out}")
            return status == 0 and text in out

        return check

    retry(answers_with(f"{grafana}/api/datasources/uid/prometheus/health", '"status":"OK"'), 120)
    retry(answers_with(f"{grafana}/api/datasources/proxy/uid/tempo/api/echo", "echo"), 120)
    proxied = get_json(f"{grafana}/api/datasources/proxy/uid/tempo/api/traces/{trace_id}")
    assert len(spans_of(proxied)) == total, "the trace did not come through Grafana's data source proxy"
    dashboard = get_json(f"{grafana}/api/dashboards/uid/tracing-lab")
    assert dashboard["dashboard"]["title"] == "Tracing lab", f"dashboard: {dashboard['dashboard']['title']}"

with subtest("Prometheus has the service graph and the span metrics"):
    queries = [service_graph_edge_query(client, server) for client, server in service_graph_edges(hops)]
    queries += [span_metrics_query(service) for service in services]
    for query in queries:

        def has_data(last_try: bool) -> bool:
            # Each try sends traffic: the generator needs fresh client/server pairs.
            request_chain(entry_url)
            result = get_json(f"{prometheus}/api/v1/query", "--get", "--data-urlencode", f"query={query}")
            return bool(result["data"]["result"])

        retry(has_data, 300)

with subtest("the request's log lines are in Loki by its trace id, from every hop"):
    since_ns = (int(machine.succeed("date +%s")) - 3600) * 10**9

    def log_lines(base: str, service: str) -> list[Any]:
        result = get_json(
            f"{base}/loki/api/v1/query_range",
            "--get",
            "--data-urlencode",
            f"query={hop_logs_query(service, trace_id)}",
            "--data-urlencode",
            f"start={since_ns}",
        )
        return [s for s in result["data"]["result"] if s.get("values")]

    for service in services:

        def lines_of_hop(last_try: bool, service: str = service) -> bool:
            found = log_lines(loki, service)
            if last_try:
                machine.log(f"{hop_logs_query(service, trace_id)}: {found}")
            return bool(found)

        retry(lines_of_hop, 120)
    # Grafana's Loki data source reaches the same lines, each with the trace_id
    # its derived field turns into a Tempo link.
    streams = log_lines(f"{grafana}/api/datasources/proxy/uid/loki", services[0])
    assert streams and all(s["stream"].get("trace_id") == trace_id for s in streams), f"via Grafana: {streams}"

with subtest("the hops' metrics are in Prometheus, and exemplars lead to traces"):
    for query in service_metrics_queries(hops):

        def has_series(last_try: bool, query: str = query) -> bool:
            request_chain(entry_url)
            result = get_json(f"{prometheus}/api/v1/query", "--get", "--data-urlencode", f"query={query}")
            if last_try:
                machine.log(f"{query}: {result['data']['result']}")
            return bool(result["data"]["result"])

        retry(has_series, 180)

    datasource = get_json(f"{grafana}/api/datasources/uid/prometheus")
    label = datasource["jsonData"]["exemplarTraceIdDestinations"][0]["name"]
    exemplar_ids: list[str] = []

    def exemplars_found(last_try: bool) -> bool:
        request_chain(entry_url)
        now = int(machine.succeed("date +%s"))
        answer = get_json(
            f"{prometheus}/api/v1/query_exemplars",
            "--get",
            "--data-urlencode",
            f"query={SPAN_METRICS_LATENCY}",
            "--data-urlencode",
            f"start={now - 3600}",
            "--data-urlencode",
            f"end={now + 60}",
        )
        exemplar_ids[:] = exemplar_trace_ids(answer, label)
        if last_try:
            machine.log(f"exemplars of {SPAN_METRICS_LATENCY}: {answer}")
        return bool(exemplar_ids)

    retry(exemplars_found, 180)
    wait_for_trace_in_tempo(exemplar_ids[-1], bool, "the trace of an exemplar")

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
    spans = wait_for_trace_in_tempo(
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

# --- the exercises: specialisations of the booted system ------------------------


def switch_exercise(name: str) -> list[dict[str, Any]]:
    """Switches the lab with its own command; waits until every hop is ready."""
    machine.succeed(f"lab-exercise {name}")
    described = json.loads(machine.succeed("cat /etc/tracing-lab/lab.json"))
    assert described["exercise"] == name, f"lab.json names the exercise {described['exercise']}"
    for hop in described["hops"]:
        machine.wait_for_unit(hop["unit"])
        machine.wait_until_succeeds(curl(f"{hop['url']}readyz", "--fail"))
    exercise_hops: list[dict[str, Any]] = described["hops"]
    return exercise_hops


def search_service(service: str, since: int) -> Any:
    return get_json(
        f"{tempo}/api/search",
        "--get",
        "--data-urlencode",
        f"tags=service.name={service}",
        "--data-urlencode",
        f"start={since}",
        "--data-urlencode",
        f"end={since + 3600}",
        "--data-urlencode",
        "limit=100",
    )


with subtest("lab-exercise lists the exercises"):
    listing = machine.succeed("lab-exercise")
    for name in ("baseline", "broken-propagation", "errors", "tail-sampling"):
        assert name in listing, f"lab-exercise does not list {name}:\n{listing}"
    machine.fail("lab-exercise no-such-exercise")

with subtest("exercise broken-propagation: one request, two traces"):
    since = int(machine.succeed("date +%s"))
    exercise_hops = switch_exercise("broken-propagation")
    entry, cut, lost = (hop["serviceName"] for hop in exercise_hops)
    answer = request_chain(entry_url)
    assert answer.status == 200, f"the chain answered {answer.status}"
    spans = wait_for_trace_in_tempo(
        answer.trace_id,
        lambda found: any(s["service"] == entry and kind(s) == "SERVER" for s in found)
        and any(s["service"] == cut and kind(s) == "CLIENT" for s in found),
        "the caller's part",
    )
    check_cut_trace(spans, cut, lost)

    def orphans_in_search(last_try: bool) -> bool:
        orphans = traces_started_at(search_service(lost, since), lost)
        if last_try:
            machine.log(f"traces that start at {lost}: {orphans}")
        return bool(orphans)

    retry(orphans_in_search, 180)

with subtest("exercise errors: the failing edge in the service graph"):
    exercise_hops = switch_exercise("errors")
    query = failed_edge_query(exercise_hops[1]["serviceName"], exercise_hops[2]["serviceName"])

    def edge_fails(last_try: bool) -> bool:
        request_chain(entry_url)
        result = get_json(f"{prometheus}/api/v1/query", "--get", "--data-urlencode", f"query={query}")
        values = [float(r["value"][1]) for r in result["data"]["result"]]
        if last_try:
            machine.log(f"{query}: {values}")
        return any(value > 0 for value in values)

    retry(edge_fails, 300)

with subtest("exercise tail-sampling: every error trace kept, most healthy fast ones not"):
    switch_exercise("tail-sampling")
    answers: list[Answer] = []
    while sum(a.status != 200 for a in answers) < 3:
        assert len(answers) < 300, "300 requests and fewer than 3 failed"
        answers.append(request_chain(entry_url))
    # Decisions come in the order traces began: once the last one (an error)
    # is in Tempo, every earlier trace has been decided too.
    for failed in (a for a in answers if a.status != 200):
        wait_for_trace_in_tempo(failed.trace_id, bool, "an error trace, kept")
    fast = [a for a in answers if a.status == 200 and a.seconds < 0.35]
    kept = [a.trace_id for a in fast if fetch_trace(a.trace_id)]
    machine.log(f"tail sampling kept {len(kept)} of {len(fast)} healthy fast traces")
    assert len(kept) * 2 <= len(fast), f"{len(kept)} of {len(fast)} healthy fast traces kept, expected about a tenth"

with subtest("exercise tail-sampling-scaled: routed by trace id, every trace whole"):
    exercise_hops = switch_exercise("tail-sampling-scaled")
    for sampler in (1, 2):
        machine.wait_for_unit(f"opentelemetry-collector-sampler-{sampler}.service")
    # Every request of this chain is slower than the samplers' latency policy.
    for answer in [request_chain(entry_url) for _ in range(10)]:
        assert answer.status == 200, f"the chain answered {answer.status}"
        wait_for_trace_in_tempo(answer.trace_id, lambda found: trace_is_complete(found, exercise_hops), "every span")

with subtest("exercise tail-sampling-scaled-by-service: routed by service, traces cut"):
    exercise_hops = switch_exercise("tail-sampling-scaled-by-service")
    entry_service, leaf_service = exercise_hops[0]["serviceName"], exercise_hops[-1]["serviceName"]
    answers = [request_chain(entry_url) for _ in range(20)]

    def has_entry_part(found: list[Span]) -> bool:
        return any(s["service"] == entry_service and kind(s) == "SERVER" for s in found)

    # The leaf's part (150 ms) is judged alone by its sampler, faster than the
    # policy: dropped. Each part is decided the same wait after it reaches its
    # sampler, and the hops send within a second of a request's end: once the
    # entry's part of the last trace is in Tempo, the leaf parts of the first
    # five traces, 15 requests (4.5 s) earlier, were decided, and a kept one
    # would be in Tempo too.
    wait_for_trace_in_tempo(answers[-1].trace_id, has_entry_part, "the entry's part")
    for answer in answers[:5]:
        spans = wait_for_trace_in_tempo(answer.trace_id, has_entry_part, "the entry's part")
        services = sorted({str(s["service"]) for s in spans})
        machine.log(f"{answer.trace_id}: {len(spans)} spans kept, from {services}")
        assert leaf_service not in services, f"{leaf_service}'s part was kept: routing by service cut nothing"
