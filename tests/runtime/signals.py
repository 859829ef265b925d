#!/usr/bin/env python3
"""Runtime test of the three signals: one request followed from its trace to its
log lines and from its latency series to its trace, through the real collector.

What it proves, with the configuration the NixOS modules generate (evaluated by
../shared/nix-eval/check-flake) and real backends: the default chain sends
OTLP to the OpenTelemetry Collector (0.156.0 here), which sends traces to Tempo,
logs to Loki (3.4.6 here; the settings are also within what nixpkgs' 3.6-3.7
accept, see nixos/lib/backends.nix lokiKeys) and metrics to Prometheus'
remote-write receiver (Debian's Prometheus 2.42 here). Then:
- a request's log lines are found in Loki by its trace id, from every hop,
  with the query the Tempo data source's trace-to-logs link builds;
- the hops' service metrics (http.server/client.request.duration) are in
  Prometheus for every hop and every edge;
- Prometheus' exemplar API returns trace ids for Tempo's span-metrics latency
  series, under the label the Prometheus data source links to Tempo, and the
  traces are in Tempo;
- every dashboard query of the service-metrics and logs rows returns data, and
  the Loki data source's derived field finds its label on the lines.

With --synthetic the hops' logs and metrics are sent by this test instead (OTLP
JSON to the collector, shaped as the hops would send them, for the real
request's trace id): that checks the wiring with a service that does not
export logs and metrics yet. Without it, the hops' own exports are checked.

Only these differ from the lab: state directories live in a temporary
directory; processes run as root, not as systemd units.

usage: tests/runtime/signals.py [--tempo VERSION] [--synthetic]
"""

import argparse
import base64
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import nixos_lab as lab
from support import (
    LOKI_RUNNER,
    LOKI_VERSION,
    RUNTIME,
    Background,
    Failure,
    Processes,
    available_tempos,
    check_flake_eval,
    check_ports_free,
    checks,
    get_json,
    http,
    prometheus_binary,
    say,
    service_binary,
    tempo_spans,
    terminated_like_interrupted,
    trace_id_of,
    wait_until,
)

COLLECTOR_RUNNER = RUNTIME / "otelcol"
COLLECTOR_VERSION = "0.156.0"
READY_TIMEOUT = 120
SIGNAL_TIMEOUT = 90
LOKI_STATE = "/var/lib/loki"

SERVER_DURATION = checks.SERVER_DURATION
CLIENT_DURATION = checks.CLIENT_DURATION


# --- evaluation ----------------------------------------------------------------


def signals_expression(tempo_version: str) -> str:
    """What the lab system adds for logs and metrics: Loki's configuration and
    unit, the collector's settings."""
    return f"""
let
  system = lib.nixosSystem {{
    modules = [ o.nixosModules.default {{
      services.tracing-lab.enable = true;
      boot.isContainer = true;
      system.stateVersion = "26.05";
      nixpkgs.hostPlatform = "x86_64-linux";
      nixpkgs.overlays = [ (f: p: {{ tempo = p.tempo.overrideAttrs {{
        version = "{tempo_version}"; __intentionallyOverridingVersion = true; }}; }}) ];
    }} ];
  }};
  cfg = system.config;
in {{
  loki = cfg.services.loki.configuration;
  lokiDataDir = cfg.services.loki.dataDir;
  collector = cfg.services.opentelemetry-collector.settings;
}}
"""


def moved(value: Any, source: str, target: str) -> Any:
    """`value` with every path under `source` moved under `target`."""
    if isinstance(value, str):
        return target + value[len(source) :] if value == source or value.startswith(source + "/") else value
    if isinstance(value, list):
        return [moved(v, source, target) for v in value]
    if isinstance(value, dict):
        return {k: moved(v, source, target) for k, v in value.items()}
    return value


def pipeline_exporter(collector: dict[str, Any], signal: str) -> dict[str, Any]:
    """The settings of the one exporter of the collector's `signal` pipeline."""
    pipeline = collector.get("service", {}).get("pipelines", {}).get(signal)
    if not pipeline or len(pipeline.get("exporters", [])) != 1:
        raise Failure(f"the collector's {signal} pipeline has not exactly one exporter: {pipeline}")
    name = pipeline["exporters"][0]
    settings: dict[str, Any] = collector["exporters"][name]
    return settings


# --- the backends ------------------------------------------------------------------


def start_loki(procs: Processes, loki: dict[str, Any], data_dir: str, scratch: Path) -> str:
    """Loki with the generated settings, its state directory moved to scratch;
    its URL once ready."""
    state = scratch / "loki-state"
    state.mkdir()
    settings = moved(loki, data_dir, str(state))
    (scratch / "loki.json").write_text(json.dumps(settings, indent=2))  # JSON is YAML
    server = settings.get("server", {})
    url = lab.local_url(server.get("http_listen_address", ""), server["http_listen_port"])
    check_ports_free(
        [
            ("Loki's HTTP API", server.get("http_listen_address", ""), server["http_listen_port"]),
            ("Loki's gRPC server", server.get("grpc_listen_address", ""), server["grpc_listen_port"]),
        ]
    )
    # As the unit runs it: in its data directory.
    argv = [str(LOKI_RUNNER), LOKI_VERSION, f"-config.file={scratch / 'loki.json'}"]
    procs.start("loki", argv, dict(os.environ), str(state))
    lab.step(f"loki {LOKI_VERSION} ready", procs.wait_ready("loki", url + "/ready", READY_TIMEOUT, 1))
    return url


def start_collector(procs: Processes, collector: dict[str, Any], scratch: Path) -> None:
    (scratch / "collector.json").write_text(json.dumps(collector, indent=2))
    procs.start(
        "collector",
        [str(COLLECTOR_RUNNER), COLLECTOR_VERSION, f"--config=file:{scratch / 'collector.json'}"],
        dict(os.environ),
    )
    # Its own metrics answer once its pipelines run (the core distribution has no health check).
    lab.step(
        f"collector {COLLECTOR_VERSION} ready",
        procs.wait_ready("collector", "http://127.0.0.1:8888/metrics", READY_TIMEOUT),
    )


# --- what the hops would send, for --synthetic ---------------------------------------


def hex_id(value: str) -> str:
    """An id of Tempo's OTLP/JSON answer (base64) in hex, as OTLP/JSON sends it."""
    return value if re.fullmatch(r"[0-9a-f]{16}", value) else base64.b64decode(value).hex()


def otlp_attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": str(v)}}
        for k, v in values.items()
    ]


class SyntheticHops(Background):
    """In the background, what the hops would export: every 5 s, cumulative
    histograms that grow (rates need two points) and the trace's log lines."""

    def __init__(self, otlp_http: str, hops: list[checks.Hop], spans: list[checks.Span], trace_id: str) -> None:
        self.args = (otlp_http, hops, spans, trace_id)
        self.started = time.time_ns()
        self.error: Failure | None = None
        super().__init__()

    def run(self) -> None:
        rounds = 0
        while not self.stopping.is_set() and rounds < 120:
            rounds += 1
            try:
                send_synthetic(*self.args, started=self.started, rounds=rounds)
            except Failure as failure:
                self.error = failure
                return
            self.stopping.wait(5)



def send_synthetic(
    otlp_http: str, hops: list[checks.Hop], spans: list[checks.Span], trace_id: str, started: int, rounds: int
) -> None:
    """Each hop's log line for its SERVER span of the trace, and its server and
    client duration histograms (`rounds` × 2 requests since `started`), as
    OTLP/JSON through the collector."""
    now = time.time_ns()
    by_service = {hop["serviceName"]: hop for hop in hops}
    logs, metrics = [], []
    for hop in hops:
        service = hop["serviceName"]
        server_spans = [s for s in spans if s["service"] == service and checks.kind(s) == "SERVER"]
        if not server_spans:
            raise Failure(f"trace {trace_id} has no SERVER span of {service}")
        resource = {"attributes": otlp_attributes({"service.name": service})}
        logs.append(
            {
                "resource": resource,
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": str(now),
                                "severityText": "INFO",
                                "body": {"stringValue": "request handled (sent by tests/runtime/signals.py)"},
                                "traceId": trace_id,
                                "spanId": hex_id(server_spans[0].get("spanId", "")),
                            }
                        ]
                    }
                ],
            }
        )

        def histogram(name: str, attrs: dict[str, Any]) -> dict[str, Any]:
            point = {
                "startTimeUnixNano": str(started),
                "timeUnixNano": str(now),
                "count": str(2 * rounds),
                "sum": 0.3 * rounds,
                "bucketCounts": [str(rounds), str(rounds), "0"],
                "explicitBounds": [0.1, 0.25],
                "attributes": otlp_attributes(attrs),
            }
            return {"name": name, "unit": "s", "histogram": {"aggregationTemporality": 2, "dataPoints": [point]}}

        hop_metrics = [
            histogram(
                "http.server.request.duration",
                {"http.request.method": "GET", "http.route": "/", "http.response.status_code": 200},
            )
        ]
        for callee in hop["calledServices"]:
            parsed = urllib.parse.urlsplit(by_service[callee]["url"])
            hop_metrics.append(
                histogram(
                    "http.client.request.duration",
                    {
                        "http.request.method": "GET",
                        "http.response.status_code": 200,
                        "server.address": parsed.hostname or "",
                        "server.port": parsed.port or 80,
                    },
                )
            )
        metrics.append({"resource": resource, "scopeMetrics": [{"metrics": hop_metrics}]})
    for path, body in (("/v1/logs", {"resourceLogs": logs}), ("/v1/metrics", {"resourceMetrics": metrics})):
        status, _, text = http_post_json(otlp_http + path, body)
        if status != 200:
            raise Failure(f"the collector answered {status} to OTLP/JSON on {path}: {text[:300]}")


def http_post_json(url: str, body: Any) -> tuple[int, Any, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, answer.headers, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        return 0, {}, str(error)


# --- the checks ----------------------------------------------------------------------


def loki_streams(loki_url: str, expr: str, since: float) -> list[dict[str, Any]]:
    """The streams a LogQL query finds from `since` until now, as Grafana asks."""
    params = {
        "query": expr,
        "start": str(int(since * 1e9)),
        "end": str(time.time_ns()),
        "limit": "1000",
        "direction": "backward",
    }
    status, _, body = http(loki_url + "/loki/api/v1/query_range?" + urllib.parse.urlencode(params))
    if status == 0:
        # Loki was seen to take more than 20 s for a query before it had
        # ingested anything: a retry, not a failure.
        say(f"  Loki did not answer {expr} in time: {body}")
        return []
    if status != 200:
        raise Failure(f"Loki refused {expr} ({status}): {body[:300]}")
    streams: list[dict[str, Any]] = json.loads(body).get("data", {}).get("result", [])
    return [s for s in streams if s.get("values")]


def check_logs(loki_url: str, hops: list[checks.Hop], trace_id: str, since: float) -> None:
    """Every hop's lines of the trace, in Loki by trace id."""
    started = time.monotonic()
    for hop in hops:
        expr = checks.hop_logs_query(hop["serviceName"], trace_id)
        wait_until(
            f"log lines of {expr} in Loki (does the hop export its logs over OTLP?)",
            SIGNAL_TIMEOUT,
            lambda: bool(loki_streams(loki_url, expr, since)),
        )
    lab.step(f"log lines of trace {trace_id} from all {len(hops)} hops in Loki", time.monotonic() - started)


def check_service_metrics(prom: lab.PromDatasource, hops: list[checks.Hop]) -> None:
    """Server metrics per hop, client metrics per edge (caller's job, callee's port)."""
    started = time.monotonic()
    for query in checks.service_metrics_queries(hops):
        wait_until(f"{query} in Prometheus", SIGNAL_TIMEOUT, lambda: lab.counter_total(prom, query) > 0)
    lab.step(f"service metrics of {len(hops)} hops and their edges in Prometheus", time.monotonic() - started)


def check_exemplars(
    prom: lab.PromDatasource, datasources: dict[str, dict[str, Any]], tempo_url: str, since: float
) -> None:
    """Exemplars of the span-metrics latency series carry the trace-id label the
    Prometheus data source links to Tempo, and the traces are in Tempo."""
    destinations = (datasources["prometheus"].get("jsonData") or {}).get("exemplarTraceIdDestinations") or []
    if not destinations:
        raise Failure("the Prometheus data source has no exemplarTraceIdDestinations")
    label = destinations[0]["name"]
    if destinations[0].get("datasourceUid") not in datasources:
        raise Failure(f"exemplars link to data source {destinations[0].get('datasourceUid')!r}, not provisioned")
    found: list[str] = []

    def exemplars_with_trace_ids() -> bool:
        nonlocal found
        params = {"query": checks.SPAN_METRICS_LATENCY, "start": str(since), "end": str(time.time() + 5)}
        answer = get_json(prom.url + "/api/v1/query_exemplars", params)
        found = checks.exemplar_trace_ids(answer, label)
        return bool(found)

    took = wait_until(
        f"exemplars with a {label!r} label for {checks.SPAN_METRICS_LATENCY} in Prometheus",
        SIGNAL_TIMEOUT,
        exemplars_with_trace_ids,
        2,
    )
    trace_id = found[-1]
    if not re.fullmatch(r"[0-9a-f]{16,32}", trace_id):
        raise Failure(f"exemplar label {label}={trace_id!r} is not a trace id")
    status, _, _ = http(f"{tempo_url}/api/traces/{trace_id}")
    if status != 200:
        raise Failure(f"the exemplar's trace {trace_id} answered {status} in Tempo")
    lab.step(f"{len(found)} exemplars with trace ids; trace {trace_id} in Tempo", took)


def signal_panels(dashboards: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(where, dashboard, panel, target) of every query on the service metrics or Loki."""
    found = []
    for file, dashboard in dashboards.items():
        panels = [p for row in dashboard.get("panels", []) for p in [row, *row.get("panels", [])]]
        for panel in panels:
            for target in panel.get("targets", []):
                uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid", "")
                expr = target.get("expr", "")
                if uid == "loki" or SERVER_DURATION in expr or CLIENT_DURATION in expr:
                    found.append((f"{file}: panel {panel.get('title')!r}", dashboard, panel, target))
    return found


def check_queries(
    prom: lab.PromDatasource,
    loki_url: str,
    datasources: dict[str, dict[str, Any]],
    dashboards: dict[str, Any],
    hops: list[checks.Hop],
    spans: list[checks.Span],
    trace_id: str,
    since: float,
) -> None:
    """Every service-metrics and logs panel, the Tempo data source's trace-to-logs
    link on each hop's SERVER span, and the Loki data source's derived field."""
    started = time.monotonic()
    services = {hop["serviceName"] for hop in hops}
    panels = signal_panels(dashboards)
    if not any(t[3].get("datasource", {}).get("uid") == "loki" for t in panels):
        raise Failure("no dashboard panel queries Loki")
    pending: dict[str, lab.QueryCheck] = {}
    for where, dashboard, panel, target in panels:
        uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid", "")
        if datasources.get(uid, {}).get("type") == "loki":
            expr = target["expr"]

            def logs_panel(expr: str = expr) -> str:
                streams = loki_streams(loki_url, expr, since)
                missing = services - {s["stream"].get("service_name") for s in streams}
                return f"no lines of {sorted(missing)} for {expr}" if missing else ""

            pending[where] = logs_panel
        else:
            prom_check = lab.prometheus_panel_query(
                # Only the data sources and the hops matter to a panel's query.
                lab.Backends(
                    "", prom, datasources, dashboards, hops, "", [], since, {}, {}, None, lambda: True, Path("."), None
                ),
                dashboard,
                panel,
                target,
                uid,
                lab.dashboard_variables(dashboard, where),
                where,
            )

            def metrics_panel(run: lab.QueryCheck = prom_check, expr: str = target["expr"]) -> str:
                problem = run()
                if problem or "job" not in expr:
                    return problem
                # Per hop: every hop has a series.
                time_range = lab.relative_range(dashboard, time.time())
                step, variables = lab.prometheus_variables(time_range, prom, None)
                result = lab.prom_query(prom, lab.substitute(expr, variables, where), time_range, step)
                # Client metrics only come from the hops that call another.
                callers = {hop["serviceName"] for hop in hops if hop["calledServices"]}
                expected = callers if CLIENT_DURATION in expr else services
                missing = expected - {ls.get("job") for ls in lab.series_with_data(result)}
                return f"no data for hops {sorted(missing)} in {expr}" if missing else ""

            pending[where] = metrics_panel

    tempo_ds = datasources["tempo"]
    options = (tempo_ds.get("jsonData") or {}).get("tracesToLogsV2") or {}
    if options.get("datasourceUid") not in datasources:
        raise Failure(f"the Tempo data source's tracesToLogsV2 links to {options.get('datasourceUid')!r}")
    for span in (s for s in spans if checks.kind(s) == "SERVER"):
        values = {**span["resource"], **span["attrs"]}
        tags = ", ".join(
            f'{t.get("value") or t["key"]}="{values[t["key"]]}"' for t in options.get("tags", []) if t["key"] in values
        )
        query = options["query"] if options.get("customQuery") else ""
        if not query:
            raise Failure("the Tempo data source's trace-to-logs has no custom query")
        variables = {"__tags": tags, "__span.traceId": trace_id, "__trace.traceId": trace_id}
        expr = lab.substitute(query, variables, "tracesToLogsV2")

        def trace_to_logs(expr: str = expr, service: str = span["service"]) -> str:
            streams = loki_streams(loki_url, expr, since)
            if not streams:
                return f"no lines for {expr}"
            if any(s["stream"].get("service_name") != service for s in streams):
                return f"lines of other services for {expr}"
            return ""

        pending[f"Tempo data source: trace to logs on {span['service']}"] = trace_to_logs

    for field in (datasources["loki"].get("jsonData") or {}).get("derivedFields", []):

        def derived_field(field: dict[str, Any] = field) -> str:
            if field.get("matcherType") != "label":
                return f"derived field {field.get('name')}: only label matchers are emulated"
            streams = loki_streams(loki_url, checks.hop_logs_query(hops[0]["serviceName"], trace_id), since)
            values = {s["stream"].get(field["matcherRegex"]) for s in streams}
            if trace_id not in values:
                return f"derived field {field.get('name')}: no line with {field['matcherRegex']}={trace_id} ({values})"
            if field.get("datasourceUid") not in datasources:
                return f"derived field {field.get('name')} links to data source {field.get('datasourceUid')!r}"
            return ""

        pending[f"Loki data source: derived field {field.get('name')}"] = derived_field

    problems: dict[str, str] = {}

    def all_have_data() -> bool:
        return lab.run_pending(pending, problems)

    count = len(pending)
    try:
        wait_until("every logs and service-metrics query returning data", SIGNAL_TIMEOUT, all_have_data, 3)
    except Failure as failure:
        raise Failure(f"{failure}:\n" + "\n".join(f"  {w}: {problems[w]}" for w in pending)) from None
    lab.step(
        f"{count} dashboard and data-source queries on logs and service metrics return data",
        time.monotonic() - started,
    )


# --- one run -------------------------------------------------------------------------


def run(tempo_version: str, synthetic: bool) -> None:
    prometheus_bin = prometheus_binary(install=True)
    assert prometheus_bin is not None
    service_bin = service_binary()
    system = lab.evaluate([tempo_version], ["default"])[f"{tempo_version}/default"]
    extra = check_flake_eval(signals_expression(tempo_version), "Loki and the collector of the lab system")
    hops: list[checks.Hop] = json.loads(system["labJson"])["hops"]
    datasources = {
        ds["uid"]: lab.provisioned_tree(ds, f"data source {ds['uid']}")
        for ds in (system["datasources"] or {}).get("datasources", [])
    }
    dashboards = {file: json.loads(text) for file, text in (system["dashboards"] or {}).items()}
    collector = extra["collector"]
    otlp_http = "http://" + collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    loki_endpoint = pipeline_exporter(collector, "logs").get("endpoint", "")
    say(f"  collector: logs → {loki_endpoint}, metrics → {pipeline_exporter(collector, 'metrics').get('endpoint')}")

    scratch = Path(tempfile.mkdtemp(prefix="signals-"))
    try:
        with lab.running_backends(tempo_version, system, scratch, prometheus_bin) as backends:
            procs = backends.procs
            loki_url = start_loki(procs, extra["loki"], extra["lokiDataDir"], scratch)
            if not loki_endpoint.startswith(loki_url):
                raise Failure(f"the collector sends logs to {loki_endpoint}, Loki listens at {loki_url}")
            start_collector(procs, collector, scratch)
            prom = lab.prometheus_datasource(datasources, "prometheus", "the lab")
            units = []
            for hop in hops:
                unit = hop["unit"].removesuffix(".service")
                env = lab.process_env(system["hops"][unit]["environment"], unit)
                if not env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").startswith("http://127.0.0.1:"):
                    raise Failure(f"{unit} exports to {env.get('OTEL_EXPORTER_OTLP_ENDPOINT')}, not the collector")
                procs.start(unit, [str(service_bin)], env)
                units.append(unit)
            for hop, unit in zip(hops, units):
                procs.wait_ready(unit, hop["url"] + "readyz", 30, 0.2)
            since = time.time() - 5

            status, headers, body = http(hops[0]["url"], headers={"Accept": "text/html"})
            trace_id = trace_id_of(headers)
            if status != 200 or not trace_id:
                raise Failure(f"the entry hop answered {status} without a trace id: {body[:200]}")
            spans: list[checks.Span] = []

            def trace_complete() -> bool:
                nonlocal spans
                procs.all_alive()
                spans = tempo_spans(backends.tempo_url, trace_id)
                return checks.trace_is_complete(spans, hops)

            lab.step(
                f"trace {trace_id} whole in Tempo, through the collector",
                wait_until(f"trace {trace_id} in Tempo", SIGNAL_TIMEOUT, trace_complete, 0.5),
            )
            with lab.Traffic(hops[0]["url"]):
                if synthetic:
                    say("  --synthetic: this test sends the hops' logs and metrics")
                with SyntheticHops(otlp_http, hops, spans, trace_id) if synthetic else nullcontext() as sender:
                    check_logs(loki_url, hops, trace_id, since)
                    check_service_metrics(prom, hops)
                    check_exemplars(prom, datasources, backends.tempo_url, since)
                    check_queries(prom, loki_url, datasources, dashboards, hops, spans, trace_id, since)
                if sender is not None and sender.error is not None:
                    raise sender.error
    except Failure as failure:
        # running_backends keeps every process's log in scratch.
        logs = Processes(scratch)
        pattern = r"level=(error|warn)|\berror\b|\twarn\t"
        said = {name: logs.log_tail(name, 8, pattern) for name in ("collector", "loki")}
        evidence = "".join(f"\n  {n}'s log (errors, warnings):\n{t}" for n, t in said.items() if t)
        raise Failure(f"{failure}{evidence}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    tempos = available_tempos()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tempo", choices=tempos, default="2.10.8" if "2.10.8" in tempos else (tempos or [""])[0])
    parser.add_argument(
        "--synthetic", action="store_true", help="send the hops' logs and metrics from this test (wiring only)"
    )
    args = parser.parse_args()
    missing = [str(p) for p in (LOKI_RUNNER, COLLECTOR_RUNNER) if not p.exists()] + ([] if tempos else ["a Tempo"])
    if missing:
        say(f"signals: skipped, this machine lacks {', '.join(missing)}; the VM test covers this under Nix")
        return 0
    started = time.monotonic()
    try:
        with terminated_like_interrupted():
            run(args.tempo, args.synthetic)
    except Failure as failure:
        say(f"signals: FAILED: {failure}")
        return 1
    except KeyboardInterrupt as signalled:
        say(f"\nsignals: interrupted ({signalled or 'SIGINT'}); what it had started is stopped")
        return 130
    say(f"signals: ok in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
