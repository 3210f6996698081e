"""Run a TorchServe instance: start, wait until its models answer, show a first request, stop.

Used by ``make serve|start|stop``, by the tests (with a generated test config) and by
the load tests. Each instance keeps its state in its own run directory: logs, the
token file TorchServe writes (key_file.json), and TMPDIR, which is where TorchServe
keeps its pid file, so several instances never see each other.

    python -m runtime.torchserve serve|start|stop [--models NAME ...]

``serve`` and ``start`` also run the Kubernetes pod's auth proxy (runtime/pod.py ``proxy``: Caddy with
k8s/base/Caddyfile) in front of that TorchServe, on 127.0.0.1:8000 (REST, and the playground page) and 7000
(gRPC) unless --proxy-port / --proxy-grpc-port say otherwise: it takes the API key kept in run/api.key (or
$HUMANSERVE_API_KEY) and calls TorchServe with its own key.
"""

import argparse
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PRODUCTION_CONFIG = REPO / "config.properties"
POD_PROPERTIES = REPO / "k8s" / "base" / "pod.properties"
DEFAULT_RUN_DIR = REPO / "run"
DEFAULT_STORE = REPO / "model_store"
PID_FILE = "server.pid"
# The pod's auth proxy in front of make serve/start's TorchServe, so the playground and keyed calls are tried here
# exactly as a cluster serves them. Its files in the run directory: the API key made once when the environment
# gives none (kept so that a restarted server takes the key the playground already holds), TorchServe's inference
# key as Caddy reads it, and its pid file.
CADDYFILE = REPO / "k8s" / "base" / "Caddyfile"
PROXY_HOST = "127.0.0.1"
PROXY_PORT_VARIABLE, PROXY_GRPC_PORT_VARIABLE = "HUMANSERVE_PROXY_PORT", "HUMANSERVE_PROXY_GRPC_PORT"
API_KEY_FILE = "api.key"
INFERENCE_KEY_FILE = "inference.key"
PROXY_PID_FILE = "proxy.pid"
# Settings of config.properties that name a file (read_properties), and the JVM option in vmargs that does.
FILE_PROPERTIES = {"metrics_config"}
LOG_CONFIG_OPTION = "-Dlog4j.configurationFile"
# The environment of TorchServe and its workers; make serve, the tests, the benchmarks and
# the Kubernetes pod (runtime/pod.py) all start TorchServe here. Measured with make bench-stack
# (docs/benchmarks.md):
# - glibc returns every large free block to the kernel, so each request's decode paid page
#   faults for fresh memory again (a 1080p JPEG decode: 12 ms instead of 6.4 here). Both
#   thresholds must be set (either alone changes nothing); the mmap one is at glibc's
#   64-bit maximum.
ALLOCATOR_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "268435456"}
# - tcmalloc, where installed (Debian's libtcmalloc-minimal4; the image has it), preloaded instead:
#   with 4 real models under mixed load (make soak, 5 min) it answered 17 % more requests than the
#   tuned glibc with a 27 % lower p99 and flat worker memory, 3 of 4 workers smaller; jemalloc lost
#   12 % of the throughput for 10-30 % less memory (docs/benchmarks.md).
TCMALLOC = "libtcmalloc_minimal.so.4"
LIBRARY_FOLDERS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def tcmalloc_preload() -> dict[str, str]:
    """``LD_PRELOAD`` of tcmalloc where the system has it, else nothing (the tuned glibc serves)."""
    found = [Path(folder) / TCMALLOC for folder in LIBRARY_FOLDERS if (Path(folder) / TCMALLOC).exists()]
    return {"LD_PRELOAD": str(found[0])} if found else {}


def allocator_in(environment: dict[str, str]) -> str:
    """The allocator an environment gives the workers, in words for benchmark rows."""
    preloaded = Path(environment.get("LD_PRELOAD", "")).name
    if preloaded:
        return f"allocator {preloaded}"
    return "allocator glibc" + (" with tuned thresholds" if "MALLOC_MMAP_THRESHOLD_" in environment else "")


# - torch's OpenMP threads spin after each parallel region, and a handler runs many small
#   ops: passive waiting cut the pose path from 5.3 to 3.5 core-ms per request.
WORKER_ENVIRONMENT = {**ALLOCATOR_ENVIRONMENT, **tcmalloc_preload(), "OMP_WAIT_POLICY": "PASSIVE"}
# Torch threads of each CPU worker whose archive leaves them unset (handlers/core/base.py):
# a number, or "share" for the workers' equal share of the cores. Unset: torch's one per core. Measured
# with make soak on 2 cores, 4 models (docs/benchmarks.md): the share changed the mixed throughput by
# under 2 % (5.48 against 5.39 answers/s: with OMP_WAIT_POLICY=PASSIVE idle threads cost little), and
# halved each model's throughput when it ran alone; so it is there for nodes where it measures better.
THREADS_VARIABLE = "HUMANSERVE_TORCH_THREADS"
# The Java agent built by make setup (and the image) from runtime/frontend_agent: without it TorchServe 0.12
# never restarts a dead worker of a sequence model (pose_tracker), which then answers nothing; a gRPC
# client that closes its side of StreamPredictions2 before its last answer kills the worker; its
# frontend decodes a worker's answer once per 64 KB read (4 MB answers: 151 core-ms instead of 9);
# a REST sequence is named only by ts_request_sequence_id spelled exactly so (not X-Sequence-Id, which
# proxies pass); and 4 idle sequences hold up every other sequence's frames for up to a minute.
AGENT_JAR = REPO / "build" / "humanserve-agent.jar"


def with_agent(vmargs: str) -> str:
    """The frontend's JVM options with the agent loaded, where it was built (a warning otherwise)."""
    if f"-javaagent:{AGENT_JAR}" in vmargs:
        return vmargs
    if not AGENT_JAR.exists():
        print(
            f"WARNING: {AGENT_JAR} is missing (make setup builds it with a JDK): a dead worker of a sequence model will not be restarted, a gRPC stream closed early by its client kills the worker, large answers cost the frontend far more, REST sequences must be named by ts_request_sequence_id exactly, and idle sequences hold up others",
            file=sys.stderr,
        )
        return vmargs
    return f"{vmargs} -javaagent:{AGENT_JAR}".strip()


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines of a Java properties file, the files it names made absolute against its own folder."""
    properties = parse_properties(path.read_text())
    # TorchServe would resolve them against its working directory, which differs for make serve,
    # the tests and the pod; beside the config they are one file everywhere (k8s/base/, where the
    # repository's config.properties links to, and the ConfigMap's /etc/humanserve/).
    folder = path.resolve().parent
    for key in FILE_PROPERTIES.intersection(properties):
        properties[key] = str(folder / properties[key])
    if "vmargs" in properties:
        properties["vmargs"] = " ".join(
            f"{LOG_CONFIG_OPTION}={folder / word.split('=', 1)[1]}"
            if word.startswith(f"{LOG_CONFIG_OPTION}=")
            else word
            for word in properties["vmargs"].split()
        )
    return properties


def named_files(properties: dict[str, str]) -> list[Path]:
    """The files that settings name (read_properties made them absolute): the metrics declaration, the log
    configuration."""
    files = [Path(properties[key]) for key in sorted(FILE_PROPERTIES.intersection(properties))]
    return files + [
        Path(word.split("=", 1)[1])
        for word in properties.get("vmargs", "").split()
        if word.startswith(f"{LOG_CONFIG_OPTION}=")
    ]


def write_properties(path: Path, properties: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))


def parse_properties(text: str) -> dict[str, str]:
    """``key=value`` lines of Java properties text (comments and blanks skipped)."""
    properties = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            properties[key.strip()] = value.strip()
    return properties


def free_ports(count: int) -> list[int]:
    """Ports the OS says are free on loopback now."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def loopback_overrides(store: Path) -> dict[str, str]:
    """Free loopback ports for every API, and a model store: all that tests and benchmarks change in the production
    config."""
    inference, management, metrics, grpc, grpc_management = free_ports(5)
    return {
        "inference_address": f"http://127.0.0.1:{inference}",
        "management_address": f"http://127.0.0.1:{management}",
        "metrics_address": f"http://127.0.0.1:{metrics}",
        "grpc_inference_address": "127.0.0.1",
        "grpc_inference_port": str(grpc),
        "grpc_management_port": str(grpc_management),
        "model_store": str(store),
    }


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (a container's limit)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cores
    return cores if quota == "max" else max(1, min(cores, math.ceil(int(quota) / int(period))))


def thread_share(cores: int, cpu_workers: int) -> int:
    """Torch threads per CPU worker when ``cpu_workers`` workers share ``cores``: an equal share, at least 1."""
    return max(1, cores // max(1, cpu_workers))


def cpu_workers(archives: list[Path]) -> int:
    """How many workers the archives start on the CPU: their minWorkers, but none for archives compiled for CUDA."""
    total = 0
    for archive in archives:
        config = archive_config(archive)
        devices = {part.get("device", "cpu") for part in config.get("handler", {}).get("compiled", {}).values()}
        total += 0 if devices == {"cuda"} else int(config.get("minWorkers", 1))
    return total


def example_image(run_dir: Path) -> Path:
    """scikit-image's astronaut photo, copied into the run directory for example requests."""
    from skimage import data

    target = run_dir / "astronaut.png"
    if not target.exists():
        shutil.copy(Path(data.__file__).parent / "astronaut.png", target)
    return target


@dataclass
class TorchServe:
    """One TorchServe instance: the config it runs with, its models and its run directory."""

    run_dir: Path
    models: list[str]
    model_store: Path = DEFAULT_STORE
    config: Path = PRODUCTION_CONFIG
    overrides: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(
        default_factory=lambda: dict(WORKER_ENVIRONMENT)
    )  # for TorchServe and its workers
    # After the settings' vmargs, so they win (the JVM takes a flag's last value). Not JAVA_TOOL_OPTIONS:
    # G1 ignores young-generation sizes given there, only the command line counts.
    jvm_options: list[str] = field(default_factory=list)
    agent: bool = (
        True  # load the frontend agent where it was built; False: TorchServe's frontend as shipped, to compare
    )
    # A foreground frontend's console on this terminal even with overrides (make serve); else, as tests run it, in
    # logs/console.log.
    terminal: bool = False
    process: subprocess.Popen | None = None

    @property
    def properties(self) -> dict[str, str]:
        """The settings in force: the config file, then the overrides."""
        return {**read_properties(self.config), **self.overrides}

    @property
    def vmargs(self) -> str:
        """The frontend's JVM options: the settings' vmargs, then ``jvm_options``, then the agent (unless ``agent`` is
        off)."""
        options = " ".join([self.properties.get("vmargs", ""), *self.jvm_options]).strip()
        return with_agent(options) if self.agent else options

    @property
    def archives(self) -> list[Path]:
        """The archives this instance serves: the named models', or the whole store (load_models=all)."""
        if self.models:
            return [self.model_store / f"{name}.mar" for name in self.models]
        return sorted(self.model_store.glob("*.mar"))

    @property
    def inference_url(self) -> str:
        return self._local_url("inference_address", "http://127.0.0.1:8080")

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the gRPC inference API, on this machine."""
        return f"127.0.0.1:{self.properties['grpc_inference_port']}"

    @property
    def management_url(self) -> str:
        return self._local_url("management_address", "http://127.0.0.1:8081")

    @property
    def metrics_url(self) -> str:
        return self._local_url("metrics_address", "http://127.0.0.1:8082")

    def token(self, api: str = "inference") -> str | None:
        """The bearer key TorchServe generated for ``api`` (inference or management), if auth is on."""
        key_file = self.run_dir / "key_file.json"
        if self.properties.get("disable_token_authorization") == "true" or not key_file.exists():
            return None
        try:
            return json.loads(key_file.read_text())[api]["key"]
        except (json.JSONDecodeError, KeyError):  # TorchServe is still writing the file
            return None

    def start(self, detach: bool = False) -> None:
        """Launch TorchServe; its console goes to the terminal, or to logs/console.log when detached."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "tmp").mkdir(exist_ok=True)
        logs = self.run_dir / "logs"
        if logs.exists():  # TorchServe appends; keep one previous run's logs apart
            shutil.rmtree(self.run_dir / "logs.previous", ignore_errors=True)
            logs.rename(self.run_dir / "logs.previous")
        logs.mkdir()
        (self.run_dir / "key_file.json").unlink(missing_ok=True)
        # The settings in force, in the run directory: overrides applied, named files made absolute.
        config = self.run_dir / "config.properties"
        properties = self.properties
        properties["vmargs"] = self.vmargs
        write_properties(config, properties)
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # archives must be self-contained
            # TMPDIR holds TorchServe's pid file; TEMP becomes java.io.tmpdir, where worker sockets live.
            "TMPDIR": str(self.run_dir / "tmp"),
            "TEMP": str(self.run_dir / "tmp"),
            "LOG_LOCATION": str(logs),
            "METRICS_LOCATION": str(logs),
            **self.environment,
        }
        if env.get(THREADS_VARIABLE) == "share":
            env[THREADS_VARIABLE] = str(thread_share(available_cores(), cpu_workers(self.archives)))
        command = [
            str(Path(sys.executable).parent / "torchserve"),
            "--start",
            "--foreground",
            "--ncs",
            "--ts-config",
            str(config.resolve()),
            "--model-store",
            str(self.model_store.resolve()),
            "--workflow-store",
            str(self.model_store.resolve()),
            # Without names, TorchServe loads what the config says (load_models=all: the whole store).
            *(["--models", *[f"{name}={name}.mar" for name in self.models]] if self.models else []),
        ]
        output = open(logs / "console.log", "ab") if detach or (self.overrides and not self.terminal) else None
        self.process = subprocess.Popen(
            command,
            cwd=self.run_dir,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
        )
        (self.run_dir / PID_FILE).write_text(str(self.process.pid))

    def wait_ready(self, timeout: float = 300) -> None:
        """Return once /ping is healthy and every model has a READY worker; raise with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"TorchServe exited with {self.process.returncode}\n{self.log_tail()}")
            failed = self._failed_models()
            if failed:
                cause = self._load_failure(failed[0])
                raise RuntimeError(
                    f"model {failed[0]} failed to load (TorchServe retries forever)\n{cause}\n{self.log_tail()}"
                )
            if self.healthy() and all(self.model_ready(name) for name in self.models):
                return
            time.sleep(0.5)
        raise TimeoutError(f"models {self.models} not ready after {timeout:.0f}s\n{self.log_tail()}")

    @contextmanager
    def running(self, timeout: float = 300) -> Iterator["TorchServe"]:
        """Start, wait until every model is ready, and stop on leaving, also when start-up fails."""
        self.start()
        try:
            self.wait_ready(timeout)
            yield self
        finally:
            self.stop()

    def stop(self, timeout: float = 30) -> None:
        """Stop the instance and every worker it started (its whole process group)."""
        pid_file = self.run_dir / PID_FILE
        if self.process is None and not pid_file.exists():
            return
        pid = self.process.pid if self.process else int(pid_file.read_text())
        _stop_group(pid, timeout)
        pid_file.unlink(missing_ok=True)
        self.process = None

    def register_workflow(self, name: str, timeout: float = 600) -> None:
        """Register ``name``.war from the store (TorchServe loads workflows only this way) and wait for its models."""
        url = f"{self.management_url}/workflows?url={name}.war"
        request = urllib.request.Request(url, method="POST", headers=self._auth("management"))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()

    def describe(self, model: str, customized: bool = True) -> dict:
        """TorchServe's description of ``model``; ``customized`` adds the handler's own, which needs a free worker.

        TorchServe 0.12 never routes a customized description to a sequence-batching model's worker (it times out).
        """
        query = "?customized=true" if customized else ""
        return self.get_json(f"{self.management_url}/models/{model}{query}", api="management")[0]

    def worker_pids(self, model: str) -> list[int]:
        """The process IDs of ``model``'s workers, sorted (a worker still starting has none yet)."""
        return sorted(
            worker["pid"] for worker in self.describe(model, customized=False)["workers"] if worker.get("pid")
        )

    def get_json(self, url: str, api: str) -> object:
        request = urllib.request.Request(url, headers=self._auth(api))
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the console and model logs, for failure messages."""
        tails = []
        for name in ("console.log", "ts_log.log", "model_log.log"):
            path = self.run_dir / "logs" / name
            if path.exists():
                tails.append(f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(tails)

    def _load_failure(self, name: str) -> str:
        """The worker's own line naming why `name` failed to load: retries push it out of the log's tail."""
        log = self.run_dir / "logs" / "model_log.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        causes = re.findall(rf"Failed to load model {re.escape(name)}, exception .*", text)
        return causes[-1] if causes else "(the worker named no cause: see the log tail)"

    def _failed_models(self) -> list[str]:
        # The front end logs this state change when a worker dies before its model loaded,
        # whatever the cause (the worker itself names only some causes).
        log = self.run_dir / "logs" / "ts_log.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return [
            name
            for name in self.models
            if re.search(rf"W-\d+-{re.escape(name)}_\S+ State change WORKER_STARTED -> WORKER_ERROR", text)
        ]

    def _auth(self, api: str) -> dict[str, str]:
        token = self.token(api)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def healthy(self) -> bool:
        """True when /ping answers Healthy: TorchServe 0.12 says so once every model has its minimum of workers."""
        # TorchServe 0.12 asks for the inference token even on /ping.
        request = urllib.request.Request(f"{self.inference_url}/ping", headers=self._auth("inference"))
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return json.loads(response.read()).get("status") == "Healthy"
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return False

    def model_ready(self, name: str) -> bool:
        """True when ``name`` is registered and has a READY worker."""
        try:
            workers = self.describe(name, customized=False)["workers"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, KeyError, IndexError):
            return False
        return any(worker["status"] == "READY" for worker in workers)

    def _local_url(self, key: str, default: str) -> str:
        address = self.properties.get(key, default)
        return address.replace("0.0.0.0", "127.0.0.1")


def _stop_group(pid: int, timeout: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(pid, os.WNOHANG)  # reap our own child so the group can vanish
        except ChildProcessError:
            pass
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)


def api_key(run_dir: Path) -> tuple[str, Path | None]:
    """The key the auth proxy asks for and the file keeping it: $HUMANSERVE_API_KEY (no file), else one made once
    and kept in ``run_dir``/api.key."""
    from runtime import pod  # it imports this module

    if pod.API_KEY_ENV in os.environ:
        key = os.environ[pod.API_KEY_ENV]
        pod.require_api_key(key)
        return key, None
    kept = run_dir / API_KEY_FILE
    if not kept.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        # Created owner-only: the key is never readable by others, not even for a moment.
        with os.fdopen(os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(secrets.token_hex(16))
    return kept.read_text().strip(), kept


@dataclass
class AuthProxy:
    """The pod's auth proxy in front of a local TorchServe, started as the pod starts it (``python -m runtime.pod
    proxy``), detached in its own process group like TorchServe, its pid in the run directory."""

    run_dir: Path
    rest_port: int = 8000
    grpc_port: int = 7000
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{PROXY_HOST}:{self.rest_port}"

    def check_ports(self) -> None:
        """Exit, saying how to pick another, where one of the proxy's ports is taken: before TorchServe's long start."""
        for port, variable in ((self.rest_port, PROXY_PORT_VARIABLE), (self.grpc_port, PROXY_GRPC_PORT_VARIABLE)):
            with socket.socket() as probe:
                # As Caddy binds: a closed connection left in TIME_WAIT does not hold the port.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((PROXY_HOST, port))
                except OSError as error:
                    sys.exit(
                        f"the auth proxy cannot listen on {PROXY_HOST}:{port} ({error.strerror}): stop what holds it,"
                        f" or pick another port, e.g. `{variable}={port + 1} make serve`"
                    )

    def start(self, server: TorchServe, key: str, timeout: float = 30) -> None:
        """Publish ``server``'s inference key, start Caddy taking ``key``, and return once both its ports listen."""
        from runtime import pod  # it imports this module

        run_dir = self.run_dir.resolve()
        inference_key = run_dir / INFERENCE_KEY_FILE
        pod.publish_inference_key(server, inference_key)
        # The pod's config layers: where the proxy listens, then TorchServe's settings in force (server.start wrote
        # them), then its addresses as this machine reaches them (a wildcard 0.0.0.0 listener on loopback).
        public, upstream = run_dir / "proxy.properties", run_dir / "upstream.properties"
        write_properties(
            public,
            {
                "inference_address": self.url,
                "grpc_inference_address": PROXY_HOST,
                "grpc_inference_port": str(self.grpc_port),
            },
        )
        grpc_host = server.grpc_target.rpartition(":")[0]
        write_properties(upstream, {"inference_address": server.inference_url, "grpc_inference_address": grpc_host})
        command = [
            sys.executable,
            "-m",
            "runtime.pod",
            "proxy",
            "--config",
            str(public),
            str(run_dir / "config.properties"),
            str(upstream),
            "--caddyfile",
            str(CADDYFILE),
            "--inference-key",
            str(inference_key),
        ]
        # Caddy keeps its state under the XDG folders: here it stays with the run, out of the home folder.
        env = {
            **os.environ,
            pod.API_KEY_ENV: key,
            "XDG_CONFIG_HOME": str(run_dir / "caddy"),
            "XDG_DATA_HOME": str(run_dir / "caddy"),
        }
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        (self.run_dir / PROXY_PID_FILE).write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while not all(_listening(PROXY_HOST, port) for port in (self.rest_port, self.grpc_port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"the auth proxy did not start\n--- {self.log} ---\n{tail}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> None:
        """Stop the proxy this run directory started, if any (Caddy lets the requests it holds finish first)."""
        pid_file = self.run_dir / PROXY_PID_FILE
        if self.process is not None:
            _stop_group(self.process.pid, timeout)
        elif pid_file.exists() and _is_caddy(pid := int(pid_file.read_text())):
            _stop_group(pid, timeout)
        pid_file.unlink(missing_ok=True)
        self.process = None

    @property
    def log(self) -> Path:
        return self.run_dir / "logs" / "proxy.log"


def _is_caddy(pid: int) -> bool:
    """Whether ``pid`` is still a Caddy: a pid file outliving its proxy (a reboot) may name another program since."""
    import psutil  # only here: runtime.pod's probe imports this module

    try:
        return psutil.Process(pid).name() == "caddy"
    except psutil.NoSuchProcess:
        return False


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def archive_config(archive: Path) -> dict:
    """The model-config.yaml inside a ``.mar`` archive."""
    with zipfile.ZipFile(archive) as packed:
        return yaml.safe_load(packed.read("model-config.yaml"))


def show_first_request(server: TorchServe) -> None:
    """Send the astronaut photo to each model; print the command and a summary (pictures are saved in the run
    directory)."""
    image = example_image(server.run_dir)
    token = server.token("inference")
    auth = f' -H "Authorization: Bearer {token}"' if token else ""
    shown_image = image.relative_to(REPO) if image.is_relative_to(REPO) else image
    print("\nhumanserve is ready. First requests:\n")
    for model in server.models:
        url = f"{server.inference_url}/predictions/{model}"
        config = archive_config(server.model_store / f"{model}.mar")
        # A sequence model's photo is a one-frame sequence, ended at once: nothing is left open.
        ending = {"X-Option-End": "true"} if config.get("sequenceBatching") else {}
        headers = {"Content-Type": "image/png", **ending, **server._auth("inference")}
        shown_options = "".join(f" -H '{name}: {value}'" for name, value in ending.items())
        request = urllib.request.Request(url, data=image.read_bytes(), method="POST", headers=headers)
        with urllib.request.urlopen(request, timeout=300) as response:
            content_type, body = response.headers.get("Content-Type", ""), response.read()
        if content_type.startswith("image/"):
            saved = server.run_dir / f"{model}.{content_type.split('/')[1]}"
            saved.write_bytes(body)
            print(f"  curl -s {url}{auth}{shown_options} -T {shown_image} -o {saved.name}")
            print(f"  -> {content_type}, {len(body)} bytes, saved as {saved}")
        else:
            answer = json.loads(body)
            summary = {key: answer[key] for key in ("model", "version", "image", "coverage") if key in answer}
            if "people" in answer:
                summary["people"] = len(answer["people"])
                summary["keypoints_per_person"] = [len(p.get("keypoints", [])) for p in answer["people"]]
                summary["scores"] = [p["score"] for p in answer["people"]]
            print(f"  curl -s {url}{auth}{shown_options} -T {shown_image}")
            print(f"  -> {json.dumps(summary)}")
        # From the archive, not the describe API: TorchServe 0.12 never answers a sequence model's customized describe.
        weights = config.get("handler", {}).get("weights", {})
        untrained = {part: record.get("source") for part, record in weights.items() if not record.get("pretrained")}
        if untrained:
            print(f"  !! {model} serves UNTRAINED weights {untrained}: its answers are meaningless")
        else:
            print(
                "  weights: "
                + ", ".join(
                    f"{part} {record['source']} {record.get('file', '')}".rstrip() for part, record in weights.items()
                )
            )
    print(
        f'\n  Options: JSON {{"image": "<base64>", "flip_test": true}}, multipart -F data=@photo.jpg -F boxes=\'[[x1,y1,x2,y2]]\','
        f"\n  or headers -H 'X-Option-Render: true'. Describe: curl {server.management_url}/models/{server.models[0]}?customized=true"
        + (f' -H "Authorization: Bearer {server.token("management")}"' if token else "")
        + "\n"
    )


def show_playground(server: TorchServe, proxy: AuthProxy, key: str, kept: Path | None) -> None:
    """Print the playground's address and the key it asks for, and a request through the proxy with that key."""
    from runtime import pod  # it imports this module

    shown_key = key if kept else f"${pod.API_KEY_ENV}"  # a key from the environment stays out of the terminal
    where = f", kept in {kept.relative_to(REPO) if kept.is_relative_to(REPO) else kept}" if kept else ""
    image = example_image(server.run_dir)
    shown_image = image.relative_to(REPO) if image.is_relative_to(REPO) else image
    print(
        f"  Playground: {proxy.url}/playground/ (key: {shown_key}{where})\n"
        f"  The same key opens the APIs through its auth proxy, the Kubernetes pod's (REST {proxy.rest_port},"
        f" gRPC {proxy.grpc_port}):\n"
        f'  curl -s {proxy.url}/predictions/{server.models[0]} -H "Authorization: Bearer {shown_key}" -T {shown_image}\n'
    )


def main() -> None:
    from export.registry import DEFAULT_MODELS  # imports torch: only the command line needs it, not runtime.pod's probe
    from runtime.pod import require_token_authorization  # it imports this module

    parser = argparse.ArgumentParser(
        prog="python -m runtime.torchserve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("serve", "start", "stop"))
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help=f"default: {' '.join(DEFAULT_MODELS)}")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    parser.add_argument("--model-store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the models to load")
    parser.add_argument(
        "--config", type=Path, default=PRODUCTION_CONFIG, help="TorchServe's settings (default: config.properties)"
    )
    parser.add_argument(
        "--proxy-port",
        type=int,
        default=int(os.environ.get(PROXY_PORT_VARIABLE, 8000)),
        help=f"the auth proxy's REST port, the playground's (default: ${PROXY_PORT_VARIABLE} or 8000)",
    )
    parser.add_argument(
        "--proxy-grpc-port",
        type=int,
        default=int(os.environ.get(PROXY_GRPC_PORT_VARIABLE, 7000)),
        help=f"the auth proxy's gRPC port (default: ${PROXY_GRPC_PORT_VARIABLE} or 7000)",
    )
    args = parser.parse_args()
    # The proxy injects TorchServe's inference key, published once: as in the pod, it must not expire under it.
    lasting_key = {"token_expiration_min": read_properties(POD_PROPERTIES)["token_expiration_min"]}
    server = TorchServe(args.run_dir, args.models, args.model_store, args.config, lasting_key, terminal=True)
    proxy = AuthProxy(args.run_dir, args.proxy_port, args.proxy_grpc_port)
    if args.action == "stop":
        proxy.stop()  # first: it lets the requests it holds finish, which needs TorchServe
        server.stop()
        print("TorchServe and its auth proxy stopped.")
        return
    proxy.stop()  # a previous instance of this run directory, before its ports are checked
    server.stop()
    require_token_authorization(server.properties)
    key, kept = api_key(args.run_dir)
    proxy.check_ports()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the same way as Ctrl-C when terminated
    try:
        server.start(detach=args.action == "start")
        server.wait_ready(args.timeout)
        proxy.start(server, key)
        show_first_request(server)
        show_playground(server, proxy, key, kept)
    except BaseException as error:
        proxy.stop()
        server.stop()
        sys.exit(f"humanserve did not come up: {error}")
    if args.action == "serve":
        print("Serving in the foreground; Ctrl-C stops TorchServe and its auth proxy.")
        try:
            server.process.wait()
        except KeyboardInterrupt:
            print("\nStopping TorchServe and its auth proxy...")
        finally:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # finish stopping even if the terminal goes away
            proxy.stop()
            server.stop()
    else:
        print(
            f"TorchServe and its auth proxy run in the background (logs in {server.run_dir / 'logs'});"
            " `make stop` stops both."
        )


if __name__ == "__main__":
    main()
