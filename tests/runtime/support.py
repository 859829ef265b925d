"""What the runtime tests share: where things are, processes (start, wait until
ready, stop), HTTP, waiting, and failing with a message that says what and why.

A check that fails raises Failure with the evidence; each test's main() prints
it and exits 1. The assertions on traces and metrics that the VM test also
makes are in nixos/tests/lab_checks.py, imported here as `checks`.
"""

import ctypes
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]
# The VM test's script is made of files in nixos/tests (nixos/tests/lab.nix);
# the assertions it shares with these tests stay there.
sys.path.insert(0, str(ROOT / "nixos" / "tests"))
import lab_checks as checks  # noqa: E402

__all__ = ["checks"]

# Outside the repository: this workplace's real backends and Nix evaluator.
SHARED = ROOT.parent / "shared"
RUNTIME = SHARED / "lab-runtime"
TEMPO_RUNNER = RUNTIME / "tempo"
LOKI_RUNNER = RUNTIME / "loki"
# The Loki line that runs here; nixpkgs' 3.6-3.7 take the same settings
# (nixos/lib/backends.nix lokiKeys).
LOKI_VERSION = "3.4.6"
CHECK_FLAKE = SHARED / "nix-eval" / "check-flake"

# A microservice binary built beforehand (CI builds it once for both tests);
# without it, each test builds the debug binary itself.
SERVICE_BIN_VAR = "TRACING_LAB_SERVICE_BIN"


class Failure(Exception):
    """A check failed; the message says what, with the evidence."""


def say(message: str) -> None:
    print(message, flush=True)


# --- the programs under test -------------------------------------------------


def service_binary() -> Path:
    """The microservice binary the chain runs: $TRACING_LAB_SERVICE_BIN, else the
    debug build, brought up to date with cargo."""
    given = os.environ.get(SERVICE_BIN_VAR)
    if given:
        path = Path(given)
        if not os.access(path, os.X_OK):
            raise Failure(f"{SERVICE_BIN_VAR}={given} is not an executable file")
        return path
    say("building target/debug/microservice")
    if subprocess.run(["cargo", "build", "--locked", "--bin", "microservice"], cwd=ROOT).returncode != 0:
        raise Failure("cargo build --bin microservice failed")
    return ROOT / "target" / "debug" / "microservice"


# The lab crate's lab-tail-sampling, built beforehand (CI); else built here.
TAIL_SAMPLING_BIN_VAR = "TRACING_LAB_TAIL_SAMPLING_BIN"


def tail_sampling_binary() -> Path:
    """lab-tail-sampling (the runner's tail-sampling decisions on recorded
    traffic): $TRACING_LAB_TAIL_SAMPLING_BIN, else the debug build."""
    given = os.environ.get(TAIL_SAMPLING_BIN_VAR)
    if given:
        path = Path(given)
        if not os.access(path, os.X_OK):
            raise Failure(f"{TAIL_SAMPLING_BIN_VAR}={given} is not an executable file")
        return path
    say("building target/debug/lab-tail-sampling")
    command = ["cargo", "build", "--locked", "-p", "lab", "--bin", "lab-tail-sampling"]
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise Failure("cargo build -p lab --bin lab-tail-sampling failed")
    return ROOT / "target" / "debug" / "lab-tail-sampling"


def prometheus_binary(install: bool) -> str | None:
    """Debian's Prometheus; installed with apt when `install` and missing."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)
    if found or not install:
        return found
    say("installing Debian's prometheus")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
    ):
        if subprocess.run(command, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise Failure(f"{' '.join(command)} failed")
    return "/usr/bin/prometheus"


def available_tempos() -> list[str]:
    """The Tempo versions ../shared/lab-runtime has, e.g. ["2.10.8", "3.0.3"]."""
    return sorted(p.name[len("tempo-") : -len(".xz")] for p in RUNTIME.glob("tempo-*.xz"))


def check_tempo(version: str) -> None:
    """Unpacks the runtime's Tempo once and checks it is the version asked for."""
    proc = subprocess.run([str(TEMPO_RUNNER), version, "-version"], capture_output=True, text=True)
    if proc.returncode != 0 or version not in proc.stdout + proc.stderr:
        raise Failure(f"{TEMPO_RUNNER} {version} -version said: {proc.stdout}{proc.stderr}")


def check_flake_eval(expr: str, what: str) -> Any:
    """The JSON value of a Nix expression over the flake (`o`, `pkgs`, `lib`),
    evaluated against a full nixpkgs by ../shared/nix-eval/check-flake."""
    if not CHECK_FLAKE.exists():
        raise Failure(f"{CHECK_FLAKE} is missing: {what} comes from it")
    started = time.monotonic()
    proc = subprocess.run(["bash", str(CHECK_FLAKE), str(ROOT), "--eval", expr], capture_output=True, text=True)
    if proc.returncode != 0:
        raise Failure(f"evaluating {what} failed:\n" + "\n".join(proc.stderr.splitlines()[-25:]))
    say(f"evaluated {what} in {time.monotonic() - started:.0f} s")
    return json.loads(proc.stdout)


# --- processes ---------------------------------------------------------------


def die_with_parent() -> None:
    """In the child: get SIGKILL if the test itself dies, so nothing outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Processes:
    """Processes a test starts, each in its own process group with its log in
    `logs`; stop() ends them, whatever they started included."""

    def __init__(self, logs: Path, grace: float = 5) -> None:
        self.logs = logs
        self.grace = grace  # seconds from SIGTERM to SIGKILL
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: str = "/") -> subprocess.Popen[bytes]:
        if name in self.running:
            raise Failure(f"{name} is already running")
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.running[name] = proc
        return proc

    def wait_ready(self, name: str, url: str, timeout: float, interval: float = 0.5) -> float:
        """Waits until `url` answers 200 while `name` runs; the seconds it took."""
        return wait_until(
            f"{name} ready ({url} answering 200)",
            timeout,
            lambda: self.assert_alive(name) and http(url, timeout=3)[0] == 200,
            interval,
        )

    def log_tail(self, name: str, lines: int = 20, matching: str = "") -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        if matching:
            # Tempo 3's scheduler complains every 15 s when idle; harmless.
            text = [line for line in text if re.search(matching, line, re.I) and "no jobs found" not in line]
        return "\n".join("    " + line[:400] for line in text[-lines:])

    def assert_alive(self, name: str) -> bool:
        """True, or a Failure with the end of its log when it has exited."""
        code = self.running[name].poll()
        if code is not None:
            raise Failure(f"{name} exited with code {code}:\n{self.log_tail(name)}")
        return True

    def all_alive(self) -> bool:
        return all(self.assert_alive(name) for name in list(self.running))

    def stop(self, names: list[str]) -> None:
        """SIGTERM to each group, then SIGKILL to what is still alive after the grace."""
        procs = [(n, self.running.pop(n)) for n in names if n in self.running]
        for _, proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.grace
        for name, proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"  {name} still runs {self.grace:.0f} s after SIGTERM: killed")
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # also whatever it left in its group
            except ProcessLookupError:
                pass
            proc.wait()


@contextmanager
def terminated_like_interrupted() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP unwind the test, so that it stops what it started."""

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGINT too: a shell starts background jobs with it ignored.
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def check_ports_free(wanted: list[tuple[str, str, int]]) -> None:
    """Fails naming the port, who wanted it and who holds it, when one is taken."""
    for what, host, port in wanted:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host or "0.0.0.0", port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                holder = ""
                if shutil.which("ss"):
                    holder = subprocess.run(
                        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True
                    ).stdout.strip()
                raise Failure(f"port {port} ({what}, {host or '*'}:{port}) is taken: {holder or 'in use'}")


# --- HTTP and waiting --------------------------------------------------------


def http(
    url: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None, timeout: float = 20
) -> tuple[int, Any, str]:
    """(status, headers, body); status 0 when nothing answered."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.headers, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        return 0, {}, str(error)


def get_json(url: str, params: dict[str, str] | None = None) -> Any:
    status, _, body = http(url + ("?" + urllib.parse.urlencode(params) if params else ""))
    if status != 200:
        raise Failure(f"GET {url} {params or ''} answered {status}: {body[:500]}")
    return json.loads(body)


def tempo_spans(tempo_url: str, trace_id: str, timeout: float = 20) -> list[checks.Span]:
    """The spans Tempo has of the trace; none while it has none, or does not answer."""
    status, _, body = http(f"{tempo_url}/api/traces/{trace_id}", timeout=timeout)
    return checks.spans_of(json.loads(body)) if status == 200 else []


def trace_id_of(headers: Any) -> str:
    """The trace id of a W3C traceresponse header, or "" without one."""
    match = re.fullmatch(
        r"00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}", ((headers or {}).get("traceresponse", "") or "").strip()
    )
    return match.group(1) if match else ""


def wait_until(what: str, timeout: float, attempt: Callable[[], bool], interval: float = 1.0) -> float:
    """Retries attempt() until it holds; the seconds it took, or a Failure naming `what`."""
    started = time.monotonic()
    while True:
        if attempt():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise Failure(f"{what}: still not so after {timeout:.0f} s")
        time.sleep(interval)


class Background:
    """Its `run` in a thread while the `with` block lasts: `run` loops until
    `stopping` is set (waiting on it between rounds), and leaving the block
    sets it and waits for the thread."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopping.set()
        self.thread.join()
