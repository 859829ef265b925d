# VM test of the lab across machines (nixos/tests/lab-multi-host.nix). The
# NixOS test driver runs this with `backends`, `hop1`, `hop2`, `hop3`,
# `subtest`, `retry` and friends defined, after the text of ./lab_checks.py
# (json, Counter, Any, Callable and the span and metric helpers come from
# there).
import shlex


def curl(url: str, *args: str) -> str:
    return "curl --silent --show-error --max-time 20 " + " ".join(shlex.quote(a) for a in [*args, url])


start_all()

# The backends' lab.json describes every hop, wherever it runs.
backends.wait_for_unit("multi-user.target")
lab = json.loads(backends.succeed("cat /etc/tracing-lab/lab.json"))
hops: list[dict[str, Any]] = lab["hops"]
ports: dict[str, int] = lab["ports"]
machine_of = {"backends": backends, "hop1": hop1, "hop2": hop2, "hop3": hop3}
by_service = {hop["serviceName"]: hop for hop in hops}
tempo = f"http://127.0.0.1:{ports['tempo']}"
prometheus = f"http://127.0.0.1:{ports['prometheus']}"
loki = f"http://127.0.0.1:{ports['loki']}"
entry = hops[0]
entry_machine = machine_of[entry["host"]]


def address_of(host: str) -> str:
    """The host's address on the test network, as its own eth1 has it."""
    out = machine_of[host].succeed("ip -4 -o addr show dev eth1")
    return out.split()[3].split("/")[0]


def request_trace_id() -> str:
    """One request to the entry hop from its own machine; its trace id."""
    headers = entry_machine.succeed(
        curl(f"http://127.0.0.1:{entry['port']}/", "--fail", "--dump-header", "-", "--output", "/dev/null")
    )
    for line in headers.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "traceresponse":
            return value.strip().split("-")[1]
    raise AssertionError(f"no traceresponse header in:\n{headers}")


def fetch_trace(trace_id: str) -> list[Span]:
    status, out = backends.execute(curl(f"{tempo}/api/traces/{trace_id}", "--fail"))
    return spans_of(json.loads(out)) if status == 0 else []


def wait_for_trace_in_tempo(trace_id: str, done: Callable[[list[Span]], bool], what: str) -> list[Span]:
    return wait_for_trace(
        lambda: fetch_trace(trace_id),
        lambda check: retry(check, 180),
        done,
        lambda line: backends.log(f"{trace_id}: {line}"),
        what,
    )


def calls_into(spans: list[Span], caller: str, callee: str) -> list[tuple[Span, Span]]:
    """Each (CLIENT span of caller, SERVER span of callee below it)."""
    clients = {s["spanId"]: s for s in spans if s["service"] == caller and kind(s) == "CLIENT"}
    return [
        (clients[s["parentSpanId"]], s)
        for s in spans
        if s["service"] == callee and kind(s) == "SERVER" and s.get("parentSpanId") in clients
    ]


with subtest("every machine runs its own part"):
    for unit in ["opentelemetry-collector", "tempo", "loki", "prometheus", "grafana"]:
        backends.wait_for_unit(unit)
    backends.wait_for_open_port(ports["tempo"], addr="127.0.0.1")
    backends.wait_for_open_port(ports["prometheus"], addr="127.0.0.1")
    backends.wait_until_succeeds(curl(f"{tempo}/ready", "--fail"))
    backends.wait_until_succeeds(curl(f"{prometheus}/-/ready", "--fail"))
    for hop in hops:
        machine = machine_of[hop["host"]]
        machine.wait_for_unit(hop["unit"])
        machine.wait_until_succeeds(curl(f"{hop['url']}readyz", "--fail"))
        # Only its own hops: a hop machine runs no backend, the backends no hop.
        machine.fail("systemctl cat opentelemetry-collector.service")
        backends.fail(f"systemctl cat {hop['unit']}")
    # The collector takes spans on the test network, no further.
    backends.wait_for_open_port(ports["collectorOtlpHttp"], addr=address_of("backends"))

with subtest("the firewall opens a called hop's port on eth1 only"):
    for caller in hops:
        for callee in (by_service[s] for s in caller["calledServices"]):
            machine_of[caller["host"]].succeed(curl(f"http://{address_of(callee['host'])}:{callee['port']}/readyz", "--fail"))
    # Nobody calls the entry hop from elsewhere: the network does not reach it.
    hop2.fail(curl(f"http://{address_of(entry['host'])}:{entry['port']}/readyz", "--connect-timeout", "3"))

with subtest("a request's trace crosses the hosts whole"):
    # The exercise's netem on hop2 loses packets; without it no retry adds spans.
    hop2.succeed("systemctl stop tracing-lab-netem.service")
    trace_id = request_trace_id()
    spans = wait_for_trace_in_tempo(trace_id, lambda found: trace_is_complete(found, hops), "every span")
    check_trace(spans, hops)
    for caller in hops:
        for callee in (by_service[s] for s in caller["calledServices"]):
            pairs = calls_into(spans, caller["serviceName"], callee["serviceName"])
            assert len(pairs) == 1, f"{caller['serviceName']} → {callee['serviceName']}: {len(pairs)} calls"
            client, server = pairs[0]
            callee_address = address_of(callee["host"])
            caller_address = address_of(caller["host"])
            assert client["attrs"].get("server.address") == callee_address, client["attrs"]
            assert server["attrs"].get("server.address") == callee_address, server["attrs"]
            assert server["attrs"].get("network.peer.address") == caller_address, server["attrs"]

with subtest("the request's log lines reach Loki from every host, by its trace id"):
    since_ns = (int(backends.succeed("date +%s")) - 3600) * 10**9
    for hop in hops:
        logs_query = hop_logs_query(hop["serviceName"], trace_id)

        def lines_of_hop(last_try: bool, logs_query: str = logs_query) -> bool:
            out = backends.succeed(
                curl(
                    f"{loki}/loki/api/v1/query_range",
                    "--fail",
                    "--get",
                    "--data-urlencode",
                    f"query={logs_query}",
                    "--data-urlencode",
                    f"start={since_ns}",
                )
            )
            found = [s for s in json.loads(out)["data"]["result"] if s.get("values")]
            if last_try:
                backends.log(f"{logs_query}: {found}")
            return bool(found)

        retry(lines_of_hop, 120)

with subtest("the service graph has the edges between the hosts"):
    for client_service, server_service in service_graph_edges(hops):
        query = service_graph_edge_query(client_service, server_service)

        def has_edge(last_try: bool) -> bool:
            # Each try sends traffic: the generator needs fresh client/server pairs.
            request_trace_id()
            out = backends.succeed(curl(f"{prometheus}/api/v1/query", "--get", "--data-urlencode", f"query={query}"))
            return bool(json.loads(out)["data"]["result"])

        retry(has_edge, 300)

with subtest("exercise network: the link out of hop2 adds its 100 ms"):

    def gap_ms(trace_id: str) -> float:
        """How long after microservice-2's CLIENT span microservice-3's SERVER span starts."""
        found = wait_for_trace_in_tempo(
            trace_id,
            lambda spans: bool(calls_into(spans, "microservice-2", "microservice-3")),
            "a call from microservice-2 to microservice-3",
        )
        client, server = calls_into(found, "microservice-2", "microservice-3")[-1]
        return (server["startNs"] - client["startNs"]) / 1e6

    # A first request opens the connection: the gaps below are of a pooled one.
    request_trace_id()
    without = gap_ms(request_trace_id())
    hop2.succeed("systemctl start tracing-lab-netem.service")
    hop2.succeed("tc qdisc show dev eth1 | grep -q 'delay 100ms'")
    request_trace_id()
    delayed = gap_ms(request_trace_id())
    backends.log(f"gap from microservice-2's CLIENT to microservice-3's SERVER span: {without:.1f} ms, then {delayed:.1f} ms")
    # Less than 100 ms would leave room for clock skew between the machines.
    assert delayed - without >= 90, f"the gap grew by {delayed - without:.1f} ms, not about 100"

with subtest("exercise network: a lost packet costs microservice-2 a retry"):
    # At 5 % loss on hop2's link, about one call in twenty loses its request
    # packet; TCP resends it after 200 ms or more, past the attempt's 400 ms,
    # and microservice-2 tries again. Of 200 requests some are retried (none
    # would be with a chance of about 0.95^200, 1 in 30000).
    entry_url = f"http://127.0.0.1:{entry['port']}/"
    entry_machine.succeed(f"seq 200 | xargs -P 8 -I % {curl(entry_url, '--output', '/dev/null')}")
    retried_ids: list[str] = []

    def some_retried(last_try: bool) -> bool:
        out = backends.succeed(
            curl(
                f"{tempo}/api/search",
                "--fail",
                "--get",
                "--data-urlencode",
                "q={ resource.service.name = \"microservice-2\" && span.http.request.resend_count > 0 }",
                "--data-urlencode",
                "limit=5",
            )
        )
        retried_ids[:] = sorted(trace_ids_in_search(json.loads(out)))
        return bool(retried_ids)

    retry(some_retried, 180)
    retried_trace = wait_for_trace_in_tempo(
        retried_ids[0].rjust(32, "0"),
        lambda spans: any("http.request.resend_count" in s["attrs"] for s in spans),
        "the retried attempt",
    )
    attempts = sorted(
        (s for s in retried_trace if s["service"] == "microservice-2" and kind(s) == "CLIENT"),
        key=lambda s: s["startNs"],
    )
    backends.log(
        f"{len(retried_ids)} or more retried traces; one has {len(attempts)} attempts lasting "
        + ", ".join(f"{a['durationMs']:.0f} ms" for a in attempts)
    )
    assert len(attempts) >= 2, f"a retried trace with {len(attempts)} attempts"
    # Every attempt but the last gave up at the 400 ms timeout.
    for attempt in attempts[:-1]:
        assert is_error(attempt), f"attempt {attempt['attrs']} is not ERROR"
        assert attempt["durationMs"] >= 390, f"an attempt gave up after {attempt['durationMs']:.0f} ms"
    assert attempts[-1]["attrs"].get("http.request.resend_count") == len(attempts) - 1, attempts[-1]["attrs"]
