#!/usr/bin/env python3
"""Runs what `nix run .#local` would run, as far as this machine can.

Evaluates the package `lab-local` (nix/local.nix) with ../shared/nix-eval/check-flake
and starts, with exactly the commands and environment of its process-compose
configuration, real Tempo (../shared/lab-runtime, 3.0.3 and 2.10.8), Debian's
Prometheus, the real OpenTelemetry Collector (../shared/lab-runtime, 0.156.0)
and the chain of the debug build of `microservice`: hops → collector → Tempo,
as `nix run .#local` has it (the hops' OTLP endpoint is checked to name the
collector's receiver, not changed). Substituted are only the Nix store paths
of the binaries and of the configuration files (written here from their
evaluated settings). Grafana and the load are not run (not available here).

It starts them in the order of the configuration's depends_on, waits for each
readiness probe it declares, fetches the entry page, and finds the request's
trace in Tempo (every hop's spans, as many as the chain emits) and every edge of
the chain in Prometheus' service graph. It also checks that every process
listens on 127.0.0.1 only and, for Tempo 3 when run as root, that Tempo writes
nothing under /var/tempo (an empty directory is bind-mounted there).

    python3 tests/runtime/local_lab.py                  # both Tempo versions
    python3 tests/runtime/local_lab.py --tempo 3.0.3
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nixos_lab
import signals
from support import (
    LOKI_RUNNER,
    LOKI_VERSION,
    ROOT,
    RUNTIME,
    TEMPO_RUNNER,
    Failure,
    Processes,
    check_flake_eval,
    checks,
    http,
    prometheus_binary,
    service_binary,
    tempo_spans,
    terminated_like_interrupted,
    trace_id_of,
    wait_until,
)

STATE_VAR = "TRACING_LAB_STATE"
NOT_HERE = {"grafana": "no Grafana here", "load": "no vegeta here"}
OTELCOL_VERSION = "0.156.0"
TEMPO_VERSIONS = ["3.0.3", "2.10.8"]
# The exercise `nix run .#local` starts with, and its chain.
EXERCISE = "baseline"


def say(message: str) -> None:
    print(f"local_lab: {message}", flush=True)


def evaluate(tempo_versions: list[str]) -> dict[str, Any]:
    """Per Tempo version: the package's configuration and settings, with nixpkgs'
    Tempo set to that version; and the chain as lab.json describes it."""
    per_version = " ".join(
        f"""
        "{version}" = let
          tempo = pkgs.tempo.overrideAttrs {{
            version = "{version}";
            __intentionallyOverridingVersion = true;
          }};
          p = o.packages.x86_64-linux.lab-local.override {{ pkgs = pkgs // {{ inherit tempo; }}; }};
        in {{
          config = p.processCompose.{EXERCISE};
          files = p.files.{EXERCISE};
          inherit (p.settings) tempo prometheus loki;
          inherit (p.provisioning) datasources;
          collector = p.settings.collector.{EXERCISE};
          bin = {{
            collector = lib.getExe pkgs.${{(import {ROOT}/nixos/lib/local.nix).collectorPackage "{EXERCISE}"}};
            tempo = lib.getExe' tempo "tempo";
            loki = lib.getExe' pkgs.grafana-loki "loki";
            prometheus = lib.getExe pkgs.prometheus;
            microservice = lib.getExe o.packages.x86_64-linux.microservice;
          }};
        }};"""
        for version in tempo_versions
    )
    expr = f"""{{
      versions = {{ {per_version} }};
      # What /etc/tracing-lab/lab.json holds for this chain in the VM.
      chain = ((import {ROOT}/nixos/lib/local.nix).chain "{EXERCISE}").summary;
    }}"""
    result: dict[str, Any] = check_flake_eval(expr, f"lab-local for Tempo {', '.join(tempo_versions)}")
    return result


def env_of(process: dict[str, Any]) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in process.get("environment", []))


def substitute(command: str, replacements: dict[str, str], file_replacements: dict[str, str]) -> str:
    """The command with each binary's store path, a word of its own in single quotes as
    nixos/lib/local.nix writes them, replaced by this machine's words, and each
    file's store path inside a word by a path here (one that needs no quoting)."""
    for store_path, words in replacements.items():
        command = command.replace(f"'{store_path}'", words)
    for store_path, path in file_replacements.items():
        command = command.replace(store_path, path)
    if "/nix/store/" in command:
        raise Failure(f"a store path is left in: {command}")
    return command


def start_order(processes: dict[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(name: str, path: list[str]) -> None:
        if name in order:
            return
        if name in path:
            raise Failure(f"depends_on cycle: {path + [name]}")
        for dependency in sorted(processes[name].get("depends_on", {})):
            visit(dependency, path + [name])
        order.append(name)

    for name in sorted(processes):
        visit(name, [])
    return order


def listening_addresses(pids: list[int]) -> list[str]:
    """Local addresses of the TCP sockets the processes (and their children) listen on."""
    if not shutil.which("ss"):
        return []
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            found.append(line.split()[3])
    return found


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(child)
    result, todo = [], [pid]
    while todo:
        current = todo.pop()
        result.append(current)
        todo.extend(children.get(current, []))
    return result


def run(
    tempo_version: str, lab: dict[str, Any], hops: list[checks.Hop], prometheus_bin: str, service_bin: Path, scratch: Path
) -> None:
    config, files, bin_ = lab["config"], lab["files"], lab["bin"]
    processes: dict[str, Any] = config["processes"]
    services = sorted(hop["serviceName"] for hop in hops)
    # The hops' processes are those that run as one of the chain's services.
    hop_processes = {n for n, p in processes.items() if env_of(p).get("OTEL_SERVICE_NAME") in services}
    if len(hop_processes) != len(hops):
        raise Failure(f"processes {sorted(hop_processes)} run as the chain's services {services}")
    state = scratch / "state"
    for sub in ("tempo", "loki", "prometheus", "grafana"):
        (state / sub).mkdir(parents=True)

    tempo_file = scratch / "tempo.json"
    tempo_file.write_text(json.dumps(lab["tempo"]))
    loki_file = scratch / "loki.json"
    loki_file.write_text(json.dumps(lab["loki"]))
    prometheus_file = scratch / "prometheus.yml"
    prometheus_file.write_text(json.dumps(lab["prometheus"]))
    collector_file = scratch / "collector.json"
    collector_file.write_text(json.dumps(lab["collector"]))
    replacements = {
        bin_["collector"]: f"{shlex.quote(str(RUNTIME / 'otelcol'))} {OTELCOL_VERSION}",
        bin_["tempo"]: f"{shlex.quote(str(TEMPO_RUNNER))} {tempo_version}",
        bin_["loki"]: f"{shlex.quote(str(LOKI_RUNNER))} {LOKI_VERSION}",
        bin_["prometheus"]: shlex.quote(prometheus_bin),
        bin_["microservice"]: shlex.quote(str(service_bin)),
    }
    file_replacements = {
        files["tempo"]: str(tempo_file),
        files["loki"]: str(loki_file),
        files["prometheus"]: str(prometheus_file),
        files["collector"].removeprefix("file:"): str(collector_file),
    }
    # The hops send to the collector's OTLP/HTTP receiver, as configured.
    receiver = lab["collector"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    for name in sorted(hop_processes):
        endpoint = env_of(processes[name]).get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        if endpoint.rstrip("/") != f"http://{receiver}":
            raise Failure(f"{name} sends to OTEL_EXPORTER_OTLP_ENDPOINT={endpoint!r}, not to the collector's {receiver}")

    # Tempo 3 must not need /var/tempo: an empty directory stands there.
    var_tempo = scratch / "var-tempo"
    var_tempo.mkdir()
    watch_var_tempo = tempo_version.startswith("3.") and os.geteuid() == 0 and os.path.isdir("/var/tempo")

    logs = Path(os.environ.get("LOCAL_RUNTIME_LOGS", str(scratch)))
    procs = Processes(logs, grace=15)
    started: list[str] = []
    try:
        for name in start_order(processes):
            if name in NOT_HERE:
                say(f"  {name}: skipped ({NOT_HERE[name]})")
                continue
            process = processes[name]
            command = substitute(process["command"], replacements, file_replacements)
            env = dict(os.environ)
            env[STATE_VAR] = str(state)
            env.update(env_of(process))
            argv = [config["shell"]["shell_command"].rsplit("/", 1)[-1], config["shell"]["shell_argument"], command]
            if name == "tempo" and watch_var_tempo:
                argv = [
                    "unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$0" /var/tempo && exec "$@"', str(var_tempo), *argv,
                ]  # fmt: skip
            procs.start(name, argv, env)
            started.append(name)
            probe = process.get("readiness_probe", {}).get("http_get")
            if probe is not None:
                url = f"{probe['scheme']}://{probe['host']}:{probe['port']}{probe['path']}"
                say(f"  {name}: ready in {procs.wait_ready(name, url, 90):.1f} s")

        since = time.time() - 5
        entry_name = next(iter(processes["load"]["depends_on"]))
        port = processes[entry_name]["readiness_probe"]["http_get"]["port"]
        status, headers, _ = http(f"http://127.0.0.1:{port}/", timeout=10)
        if status != 200:
            raise Failure(f"the entry page answered {status}")
        trace_id = trace_id_of(headers)
        if not trace_id:
            raise Failure(f"no traceresponse header: {dict(headers or {})}")
        say(f"  the entry page came with trace {trace_id}")

        tempo_port = processes["tempo"]["readiness_probe"]["http_get"]["port"]
        expected = checks.expected_span_count(hops)
        spans: list[checks.Span] = []

        def trace_complete() -> bool:
            nonlocal spans
            procs.all_alive()
            spans = tempo_spans(f"http://127.0.0.1:{tempo_port}", trace_id, timeout=3)
            return sorted({s["service"] for s in spans}) == services and checks.trace_is_complete(spans, hops)

        try:
            wait_until(f"trace {trace_id} in Tempo with {expected} spans from {services}", 60, trace_complete, 2)
        except Failure as failure:
            raise Failure(f"{failure}; it has {checks.span_summary(spans)}") from None
        say(f"  Tempo has the trace: {len(spans)} spans from {', '.join(services)}")

        prometheus_port = processes["prometheus"]["readiness_probe"]["http_get"]["port"]
        query = f"http://127.0.0.1:{prometheus_port}/api/v1/query?query={checks.SERVICE_GRAPH_REQUESTS}"
        wanted = set(checks.service_graph_edges(hops))
        edges: set[tuple[str, str]] = set()

        def service_graph() -> bool:
            nonlocal edges
            procs.all_alive()
            status, _, body = http(query, timeout=3)
            results = json.loads(body)["data"]["result"] if status == 200 else []
            edges = {(r["metric"].get("client"), r["metric"].get("server")) for r in results}
            return wanted <= edges

        try:
            wait_until(f"service-graph edges {sorted(wanted)} in Prometheus", 60, service_graph, 2)
        except Failure as failure:
            raise Failure(f"{failure}; it has {sorted(edges)}") from None
        say(f"  Prometheus has the service graph from Tempo's remote write: {len(edges)} edges")
        follow_signals(lab, hops, trace_id, f"http://127.0.0.1:{tempo_port}", since)

        pids = [pid for proc in procs.running.values() for pid in descendants(proc.pid)]
        addresses = listening_addresses(pids)
        wide = [a for a in addresses if not a.startswith("127.0.0.1:")]
        if wide:
            raise Failure(f"listening beyond 127.0.0.1: {wide}")
        if addresses:
            say(f"  every listening socket is on 127.0.0.1 ({len(addresses)} sockets)")
        else:
            say("  ss is missing: listening addresses not checked")
    finally:
        # The hops first, Prometheus last (Tempo's remote write may hang otherwise).
        for name in reversed(started):
            procs.stop([name])

    if watch_var_tempo:
        left = [str(p.relative_to(var_tempo)) for p in var_tempo.rglob("*")]
        if left:
            raise Failure(f"Tempo {tempo_version} wrote under /var/tempo: {left}")
        say("  Tempo wrote nothing under /var/tempo")
    tempo_state = sorted({re.sub(r"_\d+", "_*", p.name) for p in (state / "tempo").iterdir()})
    say(f"  Tempo's state directory holds: {', '.join(tempo_state)}")


def follow_signals(lab: dict[str, Any], hops: list[checks.Hop], trace_id: str, tempo_url: str, since: float) -> None:
    """The request's log lines by its trace id, and a trace behind the latency
    series, through the data sources Grafana gets (their URLs included)."""
    datasources = {
        ds["uid"]: nixos_lab.provisioned_tree(ds, f"data source {ds['uid']}")
        for ds in lab["datasources"].get("datasources", [])
    }
    loki = datasources.get("loki", {})
    if loki.get("type") != "loki":
        raise Failure(f"the package provisions no Loki data source: {sorted(datasources)}")
    signals.check_logs(loki["url"].rstrip("/"), hops, trace_id, since)
    prom = nixos_lab.prometheus_datasource(datasources, "prometheus", "the local lab")
    # Span metrics need a few requests for their exemplars (the load process is not run).
    with nixos_lab.Traffic(hops[0]["url"]):
        signals.check_exemplars(prom, datasources, tempo_url, since)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tempo", choices=TEMPO_VERSIONS, action="append", help="Tempo version (default: both)")
    args = parser.parse_args()

    if not TEMPO_RUNNER.exists():
        say(f"skipped: {RUNTIME} (real Tempo binaries) is absent")
        return 0
    prometheus_bin = prometheus_binary(install=False)
    if prometheus_bin is None:
        say("skipped: Prometheus is not installed (apt-get install prometheus)")
        return 0
    versions = args.tempo or TEMPO_VERSIONS
    try:
        with terminated_like_interrupted():
            service_bin = service_binary()
            evaluated = evaluate(versions)
            hops: list[checks.Hop] = evaluated["chain"]["hops"]
            for version in versions:
                say(f"Tempo {version}")
                started = time.monotonic()
                with tempfile.TemporaryDirectory(prefix="local-lab-") as scratch:
                    run(version, evaluated["versions"][version], hops, prometheus_bin, service_bin, Path(scratch))
                say(f"Tempo {version}: passed in {time.monotonic() - started:.0f} s")
    except Failure as failure:
        say(f"FAILED: {failure}")
        return 1
    except KeyboardInterrupt as signalled:
        say(f"interrupted ({signalled or 'SIGINT'}); what it had started is stopped")
        return 130
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
