#!/usr/bin/env python3
"""Runs what `nix run .#local` would run, as far as this machine can.

Evaluates the package `lab-local` (nix/local.nix) with ../shared/nix-eval/check-flake
and starts, with exactly the commands and environment of its process-compose
configuration, real Tempo (../shared/lab-runtime, 3.0.3 and 2.10.8), Debian's
Prometheus and the chain of the debug build of `microservice`. Substituted are
only the Nix store paths of the binaries and of the configuration files (written
here from their evaluated settings), and, since no OpenTelemetry Collector is
available here, the hops' OTLP endpoint: they send straight to Tempo's receiver.
Grafana, the collector and the load are not run (not available here).

It starts them in the order of the configuration's depends_on, waits for each
readiness probe it declares, fetches the entry page, and finds the request's
trace in Tempo and the service graph in Prometheus. It also checks that every
process listens on 127.0.0.1 only and, for Tempo 3 when run as root, that Tempo
writes nothing under /var/tempo (an empty directory is bind-mounted there).

    python3 nixos/tests/local-runtime.py                  # both Tempo versions
    python3 nixos/tests/local-runtime.py --tempo 3.0.3
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
TEMPO_RUNNER = SHARED / "lab-runtime" / "tempo"
CHECK_FLAKE = SHARED / "nix-eval" / "check-flake"
MICROSERVICE = ROOT / "target" / "debug" / "microservice"
STATE_VAR = "TRACING_LAB_STATE"
NOT_HERE = {"otel-collector": "no collector here", "grafana": "no Grafana here", "load": "no vegeta here"}
TEMPO_VERSIONS = ["3.0.3", "2.10.8"]


class Failure(Exception):
    pass


def say(message: str) -> None:
    print(f"local-runtime: {message}", flush=True)


def evaluate(tempo_version: str) -> dict[str, Any]:
    """The package's configuration and settings, with nixpkgs' Tempo set to `tempo_version`."""
    expr = f"""
      let
        tempo = pkgs.tempo.overrideAttrs {{
          version = "{tempo_version}";
          __intentionallyOverridingVersion = true;
        }};
        p = o.packages.x86_64-linux.lab-local.override {{ pkgs = pkgs // {{ inherit tempo; }}; }};
      in {{
        config = p.processCompose.baseline;
        files = p.files.baseline;
        inherit (p.settings) tempo prometheus;
        bin = {{
          tempo = lib.getExe' tempo "tempo";
          prometheus = lib.getExe pkgs.prometheus;
          microservice = lib.getExe o.packages.x86_64-linux.microservice;
        }};
      }}"""
    proc = subprocess.run(
        ["bash", str(CHECK_FLAKE), "--eval", expr], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise Failure(f"check-flake --eval failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
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


def get(url: str, timeout: float = 3) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)
    except OSError:
        return 0, b"", {}


def wait_ready(name: str, process: dict[str, Any], proc: subprocess.Popen[bytes], timeout: float) -> float:
    probe = process.get("readiness_probe", {}).get("http_get")
    started = time.monotonic()
    if probe is None:
        return 0.0
    url = f"{probe['scheme']}://{probe['host']}:{probe['port']}{probe['path']}"
    while True:
        if get(url)[0] == 200:
            return time.monotonic() - started
        if proc.poll() is not None:
            raise Failure(f"{name} exited with {proc.returncode} before {url} was ready")
        if time.monotonic() - started > timeout:
            raise Failure(f"{name}: {url} not ready after {timeout:.0f} s")
        time.sleep(0.5)


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


def stop(name: str, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        say(f"{name} still runs 15 s after SIGTERM; killing it")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(tempo_version: str, scratch: Path) -> None:
    say(f"Tempo {tempo_version}: evaluating lab-local")
    lab = evaluate(tempo_version)
    config, files, bin_ = lab["config"], lab["files"], lab["bin"]
    processes: dict[str, Any] = config["processes"]
    state = scratch / "state"
    for sub in ("tempo", "prometheus", "grafana"):
        (state / sub).mkdir(parents=True)

    tempo_file = scratch / "tempo.json"
    tempo_file.write_text(json.dumps(lab["tempo"]))
    prometheus_file = scratch / "prometheus.yml"
    prometheus_file.write_text(json.dumps(lab["prometheus"]))
    prometheus_bin = shutil.which("prometheus") or "/usr/bin/prometheus"
    replacements = {
        bin_["tempo"]: f"{shlex.quote(str(TEMPO_RUNNER))} {tempo_version}",
        bin_["prometheus"]: shlex.quote(prometheus_bin),
        bin_["microservice"]: shlex.quote(str(MICROSERVICE)),
    }
    file_replacements = {files["tempo"]: str(tempo_file), files["prometheus"]: str(prometheus_file)}
    tempo_otlp = lab["tempo"]["distributor"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"]

    # Tempo 3 must not need /var/tempo: an empty directory stands there.
    var_tempo = scratch / "var-tempo"
    var_tempo.mkdir()
    watch_var_tempo = tempo_version.startswith("3.") and os.geteuid() == 0 and os.path.isdir("/var/tempo")

    running: list[tuple[str, subprocess.Popen[bytes]]] = []
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
            if name.startswith("microservice-"):
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{tempo_otlp}"
            argv = [config["shell"]["shell_command"].rsplit("/", 1)[-1], config["shell"]["shell_argument"], command]
            if name == "tempo" and watch_var_tempo:
                argv = [
                    "unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$0" /var/tempo && exec "$@"', str(var_tempo), *argv,
                ]
            log = open(os.environ.get("LOCAL_RUNTIME_LOGS", str(scratch)) + f"/{name}.log", "wb")
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            running.append((name, proc))
            seconds = wait_ready(name, process, proc, 90)
            say(f"  {name}: ready in {seconds:.1f} s")

        entry = next(p for n, p in processes.items() if n == "load")["depends_on"]
        entry_name = next(iter(entry))
        port = processes[entry_name]["readiness_probe"]["http_get"]["port"]
        status, _body, headers = get(f"http://127.0.0.1:{port}/", timeout=10)
        if status != 200:
            raise Failure(f"the entry page answered {status}")
        match = re.match(r"00-([0-9a-f]{32})-", headers.get("traceresponse", ""))
        if not match:
            raise Failure(f"no traceresponse header: {headers}")
        trace_id = match.group(1)
        say(f"  the entry page came with trace {trace_id}")

        hops = sorted(n for n in processes if n.startswith("microservice-"))
        tempo_port = processes["tempo"]["readiness_probe"]["http_get"]["port"]
        deadline = time.monotonic() + 60
        while True:
            status, body, _ = get(f"http://127.0.0.1:{tempo_port}/api/traces/{trace_id}")
            services, spans = set(), 0
            if status == 200:
                trace = json.loads(body)
                for batch in trace.get("batches", trace.get("resourceSpans", [])):
                    for attribute in batch.get("resource", {}).get("attributes", []):
                        if attribute["key"] == "service.name":
                            services.add(attribute["value"]["stringValue"])
                    for scope in batch.get("scopeSpans", batch.get("instrumentationLibrarySpans", [])):
                        spans += len(scope.get("spans", []))
            if sorted(services) == hops and spans >= 14:
                break
            if time.monotonic() > deadline:
                raise Failure(f"Tempo has {spans} spans from {sorted(services)} of trace {trace_id} after 60 s")
            time.sleep(2)
        say(f"  Tempo has the trace: {spans} spans from {', '.join(sorted(services))}")

        prometheus_port = processes["prometheus"]["readiness_probe"]["http_get"]["port"]
        query = "http://127.0.0.1:%d/api/v1/query?query=traces_service_graph_request_total" % prometheus_port
        deadline = time.monotonic() + 60
        while True:
            status, body, _ = get(query)
            edges = {
                (r["metric"].get("client"), r["metric"].get("server"))
                for r in (json.loads(body)["data"]["result"] if status == 200 else [])
            }
            if (hops[0], hops[1]) in edges:
                break
            if time.monotonic() > deadline:
                raise Failure(f"no service-graph edge {hops[0]} → {hops[1]} in Prometheus after 60 s: {edges}")
            time.sleep(2)
        say(f"  Prometheus has the service graph from Tempo's remote write: {len(edges)} edges")

        pids = [pid for _, proc in running for pid in descendants(proc.pid)]
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
        for name, proc in reversed(running):
            stop(name, proc)

    if watch_var_tempo:
        left = [str(p.relative_to(var_tempo)) for p in var_tempo.rglob("*")]
        if left:
            raise Failure(f"Tempo {tempo_version} wrote under /var/tempo: {left}")
        say("  Tempo wrote nothing under /var/tempo")
    tempo_state = sorted({re.sub(r"_\d+", "_*", p.name) for p in (state / "tempo").iterdir()})
    say(f"  Tempo's state directory holds: {', '.join(tempo_state)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tempo", choices=TEMPO_VERSIONS, action="append", help="Tempo version (default: both)")
    args = parser.parse_args()

    if not TEMPO_RUNNER.exists():
        say(f"skipped: {TEMPO_RUNNER.parent} (real Tempo binaries) is absent")
        return 0
    if not (shutil.which("prometheus") or os.path.exists("/usr/bin/prometheus")):
        say("skipped: Prometheus is not installed (apt-get install prometheus, see ../shared/lab-runtime/README.md)")
        return 0
    try:
        if subprocess.run(["cargo", "build", "--locked", "--bin", "microservice"], cwd=ROOT).returncode != 0:
            raise Failure("cargo build failed")
        for version in args.tempo or TEMPO_VERSIONS:
            with tempfile.TemporaryDirectory(prefix="local-runtime-") as scratch:
                run(version, Path(scratch))
    except Failure as failure:
        say(f"FAILED: {failure}")
        return 1
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
