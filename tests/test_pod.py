"""A humanserve pod's processes for real: the commands its containers run, with the rendered config.

fetch-models fills a store, `serve` runs TorchServe with the ConfigMap's layers, `proxy` runs
Caddy with the ConfigMap's Caddyfile and an API key as the Secret would give it. Only the ports
differ from the pod (free ones, on loopback), through one more config layer.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psutil
import pytest
import requests
import tritonclient.grpc
import tritonclient.http as triton
from skimage import data
from tritonclient.utils import InferenceServerException

from export.archive import REPO
from handlers.core.metrics import ITEMS_METRIC, STAGE_METRIC
from humanserve_client.client import GrpcClient, RestClient, ServerError
from runtime import pod
from runtime.torchserve import AGENT_JAR, free_ports, loopback_overrides, named_files
from tests.manifests import render_overlay
from tests.test_metrics import scrape_until, total
from tests.test_pose_serving import encode
from tests.test_sequences_serving import SENDERS, check_tracked, interleaved, send_requests
from tests.test_tracking_serving import frames_of, ids

ORACLE = "pose_oracle"
TRACKER = "tracker_oracle"  # REST sequences and gRPC streams through the proxy
# All the pod serves: with a picture-answering pair for the playground's browser tests (tests/test_playground.py).
SERVED = (ORACLE, TRACKER, "segmenter_oracle", "style_oracle", "face_oracle")  # the playground tries them all


def properties_text(properties: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def run_pod_command(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime.pod", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        **kwargs,
    )


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


class Pod:
    """The files the ConfigMap mounts and the volumes the containers share, in one folder."""

    def __init__(self, root: Path):
        rendered = render_overlay("gpu")
        self.root = root
        self.config = root / "etc"
        self.config.mkdir()
        self.store, self.run_dir, self.inference_key = (
            root / "model_store",
            root / "run",
            root / "shared" / "inference.key",
        )
        self.api_key = secrets.token_hex(16)  # what `kubectl create secret` would hold; made up here, never stored
        # Layer 0: the production config with loopback ports, as every server test runs it.
        public = {**rendered.properties("config.properties"), **loopback_overrides(self.store)}
        rest, grpc, metrics = free_ports(3)
        # The pod layer as rendered, then the one test layer: its TorchServe ports, on loopback.
        ports = {
            "inference_address": f"http://127.0.0.1:{rest}",
            "grpc_inference_port": str(grpc),
            "metrics_address": f"http://127.0.0.1:{metrics}",
        }
        for name, text in (
            ("config.properties", properties_text(public)),
            ("pod.properties", rendered.config_file("pod.properties")),
            ("ports.properties", properties_text(ports)),
            ("Caddyfile", rendered.config_file("Caddyfile")),
            # The files config.properties names beside it: metrics declaration, log configuration.
            *[(path.name, rendered.config_file(path.name)) for path in named_files(public)],
        ):
            (self.config / name).write_text(text)
        self.layers = [str(self.config / name) for name in ("config.properties", "pod.properties", "ports.properties")]
        self.rest_url = public["inference_address"]
        self.grpc_port = int(public["grpc_inference_port"])
        self.backend_url = ports["inference_address"]
        self.metrics_url = ports["metrics_address"]
        self.readiness_path = rendered.container("auth-proxy")["readinessProbe"]["httpGet"]["path"]

    def serve(self) -> subprocess.Popen:
        command = [
            "serve",
            "--config",
            *self.layers,
            "--store",
            str(self.store),
            "--run-dir",
            str(self.run_dir),
            "--inference-key",
            str(self.inference_key),
        ]
        log = open(self.root / "serve.log", "wb")
        return subprocess.Popen(
            [sys.executable, "-m", "runtime.pod", *command], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )

    def proxy(self, api_key: str) -> subprocess.Popen:
        command = [
            "proxy",
            "--config",
            *self.layers,
            "--caddyfile",
            str(self.config / "Caddyfile"),
            "--inference-key",
            str(self.inference_key),
        ]
        env = {
            **os.environ,
            pod.API_KEY_ENV: api_key,
            "XDG_CONFIG_HOME": str(self.root),
            "XDG_DATA_HOME": str(self.root),
        }
        log = open(self.root / "proxy.log", "wb")
        return subprocess.Popen(
            [sys.executable, "-m", "runtime.pod", *command], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def log(self, name: str) -> str:
        return (self.root / name).read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def source(model_store, tmp_path_factory) -> Path:
    """A model source holding the served oracles' archives and a file that is no archive."""
    folder = tmp_path_factory.mktemp("model_source")
    for model in SERVED:
        shutil.copy(model_store / f"{model}.mar", folder)
    (folder / "NOTES.txt").write_text("not an archive")
    return folder


def start_pod(the_pod: Pod, source: Path) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Fetch the models, start `serve` and `proxy`, and return them once ready as the kubelet sees it."""
    fetched = run_pod_command("fetch-models", "--source", source.as_uri(), "--store", str(the_pod.store))
    assert fetched.returncode == 0, fetched.stderr
    server, proxy = the_pod.serve(), the_pod.proxy(the_pod.api_key)
    deadline = time.monotonic() + 300
    # Ready as the kubelet sees it: the proxy's readiness path and the torchserve container's exec probe.
    while (
        requests_status(f"{the_pod.rest_url}{the_pod.readiness_path}") != 200
        or run_pod_command("ping", "--run-dir", str(the_pod.run_dir)).returncode != 0
    ):
        if server.poll() is not None or proxy.poll() is not None or time.monotonic() > deadline:
            stop(proxy)
            stop(server)
            pytest.fail("the pod did not become ready\n" + the_pod.log("serve.log") + the_pod.log("proxy.log"))
        time.sleep(0.5)
    return server, proxy


@pytest.fixture(scope="module")
def running_pod(source, tmp_path_factory):
    the_pod = Pod(tmp_path_factory.mktemp("pod"))
    server, proxy = start_pod(the_pod, source)
    try:
        yield the_pod
    finally:
        stop(proxy)
        assert stop(server) == 0, the_pod.log("serve.log")  # SIGTERM from the kubelet is a clean stop
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and str(the_pod.root) in " ".join(p.info["cmdline"])
    ]
    assert not leftovers, f"TorchServe processes outlived `serve`: {leftovers}"


def requests_status(url: str) -> int:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.ConnectionError:
        return 0


def test_fetch_models_copies_only_the_archives(running_pod):
    assert sorted(p.name for p in running_pod.store.iterdir()) == sorted(f"{model}.mar" for model in SERVED)


def test_fetch_models_fails_on_a_source_without_archives(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_pod_command(
        "fetch-models", "--source", (tmp_path / "empty").as_uri(), "--store", str(tmp_path / "store")
    )
    assert result.returncode != 0 and "no .mar archives" in result.stderr


def test_fetch_models_from_an_s3_compatible_store(source, tmp_path):
    # rclone itself serves a folder over the S3 protocol: bucket "models", prefix "pose/gpu".
    prefix = tmp_path / "s3" / "models" / "pose" / "gpu"
    shutil.copytree(source, prefix)
    (port,) = free_ports(1)
    key_id, secret = "humanserve-test", secrets.token_hex(16)
    rclone = Path(sys.executable).parent / "rclone"
    server = subprocess.Popen(
        [
            str(rclone),
            "serve",
            "s3",
            str(tmp_path / "s3"),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{key_id},{secret}",
            "--config",
            "/dev/null",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        credentials = {
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }
        result = run_pod_command(
            "fetch-models", "--source", "s3://models/pose/gpu", "--store", str(tmp_path / "store"), env=credentials
        )
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(f"{model}.mar" for model in SERVED)
        wrong = {**credentials, "AWS_SECRET_ACCESS_KEY": "wrong"}
        assert (
            run_pod_command(
                "fetch-models", "--source", "s3://models/pose/gpu", "--store", str(tmp_path / "other"), env=wrong
            ).returncode
            != 0
        )
    finally:
        stop(server)


def test_ping_through_the_proxy_needs_no_key(running_pod):
    answer = requests.get(f"{running_pod.rest_url}/ping", timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "Healthy"


def test_inference_through_the_proxy_needs_the_key_from_the_secret(running_pod):
    url = f"{running_pod.rest_url}/predictions/{ORACLE}"
    photo = encode(data.astronaut(), "PNG")
    headers = {"Content-Type": "image/png"}
    inner_key = running_pod.inference_key.read_text()
    for refused in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {inner_key}"}):
        answer = requests.post(url, data=photo, headers={**headers, **refused}, timeout=60)
        assert answer.status_code == 401 and answer.json()["code"] == 401, refused
    answer = requests.post(
        url, data=photo, headers={**headers, "Authorization": f"Bearer {running_pod.api_key}"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == ORACLE


def test_v2_through_the_proxy_needs_the_key_and_its_health_routes_none(running_pod):
    client = triton.InferenceServerClient(urlsplit(running_pod.rest_url).netloc, network_timeout=60)
    try:
        assert client.is_server_live() and client.is_server_ready()  # no key: health only
        image = triton.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([encode(data.astronaut(), "PNG")], dtype=np.object_))
        with pytest.raises(InferenceServerException) as refused:
            client.infer(ORACLE, [image])
        assert refused.value.status() == "401"
        result = client.infer(ORACLE, [image], headers={"Authorization": f"Bearer {running_pod.api_key}"})
        assert json.loads(result.as_numpy("answer")[0])["model"] == ORACLE
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_repository_index()
        assert refused.value.status() == "401"
        index = client.get_model_repository_index(headers={"Authorization": f"Bearer {running_pod.api_key}"})
        assert {"name": ORACLE, "version": "1.0", "state": "READY"} in index
    finally:
        client.close()


def test_v2_grpc_through_the_proxy_needs_the_key(running_pod):
    client = tritonclient.grpc.InferenceServerClient(f"127.0.0.1:{running_pod.grpc_port}")
    key = {"authorization": f"Bearer {running_pod.api_key}"}
    try:
        image = tritonclient.grpc.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([encode(data.astronaut(), "PNG")], dtype=np.object_))
        with pytest.raises(InferenceServerException) as refused:
            client.infer(ORACLE, [image])
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.is_server_ready(headers=key) and client.is_model_ready(ORACLE, headers=key)
        result = client.infer(ORACLE, [image], headers=key)
        assert json.loads(result.as_numpy("answer")[0])["model"] == ORACLE
        assert ORACLE in [model.name for model in client.get_model_repository_index(headers=key).models]
    finally:
        client.close()


def test_metrics_endpoint_shows_the_handler_metrics_the_config_map_declares(running_pod):
    answer = requests.post(
        f"{running_pod.rest_url}/predictions/{ORACLE}",
        data=encode(data.astronaut(), "PNG"),
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {running_pod.api_key}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    samples = scrape_until(running_pod.metrics_url, lambda now: total(now, ITEMS_METRIC, ModelName=ORACLE) > 0)
    assert total(samples, STAGE_METRIC, ModelName=ORACLE, Stage="model") > 0


def test_torchserve_in_the_pod_still_asks_for_its_own_key(running_pod):
    url = f"{running_pod.backend_url}/predictions/{ORACLE}"
    photo = encode(data.astronaut(), "PNG")
    assert (
        requests.post(
            url,
            data=photo,
            headers={"Content-Type": "image/png", "Authorization": f"Bearer {running_pod.api_key}"},
            timeout=60,
        ).status_code
        == 400
    )


def test_requests_over_the_size_limit_stop_at_the_proxy(running_pod):
    limit = int((running_pod.config / "config.properties").read_text().split("max_request_size=")[1].split()[0])
    answer = requests.post(
        f"{running_pod.rest_url}/predictions/{ORACLE}",
        data=b"\0" * (limit + 1),
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {running_pod.api_key}"},
        timeout=60,
    )
    assert answer.status_code == 413


def test_grpc_through_the_proxy_needs_the_key_from_the_secret(running_pod):
    # A real gRPC client: curl 7.88 sometimes reads the proxy's early 401 (sent before the request body is read)
    # as a broken stream.
    target = f"127.0.0.1:{running_pod.grpc_port}"
    with closing(GrpcClient(target)) as keyless, pytest.raises(ServerError) as refused:
        keyless.health()
    assert refused.value.code == 401
    with closing(GrpcClient(target, token=running_pod.api_key)) as client:
        assert client.health()["status"] == "Healthy"


needs_agent = pytest.mark.skipif(
    not AGENT_JAR.exists(), reason=f"{AGENT_JAR} was not built: make setup needs a JDK (javac, jar) for it"
)


@needs_agent
def test_sequences_through_the_proxy_keep_their_ids_when_named_by_the_hyphenated_header(running_pod):
    url = f"{running_pod.rest_url}/predictions/{TRACKER}"
    key = {"Authorization": f"Bearer {running_pod.api_key}"}
    with closing(RestClient(running_pod.rest_url, token=running_pod.api_key, retries=0)) as rest:
        alone = {
            scene: ids(
                [answer.json() for answer in rest.stream(TRACKER, [(image, {}) for image in frames_of(scene)[1][:10]])]
            )
            for scene in ("apart", "crossing")
        }
        streams = {
            f"{scene}-{uuid.uuid4().hex}": rest.stream(TRACKER, [(image, {}) for image in frames_of(scene)[1][:10]])
            for scene in ("apart", "crossing")
        }
        ours = {name: [] for name in streams}
        for _ in range(10):
            for name, stream in streams.items():
                ours[name].append(next(stream).json())
        for answers in ours.values():  # named by the client (hs-...): keyed here by scene for the check
            assert [answer["frame"] for answer in answers] == list(range(10)) and len(
                {answer["sequence_id"] for answer in answers}
            ) == 1
        assert [ids(answers) for answers in ours.values()] == list(alone.values())
    for name, send in SENDERS.items():
        check_tracked(
            interleaved(lambda url, image, headers: send(url, image, {**headers, **key}), url, "X-Sequence-Id"), alone
        )
    # TorchServe's own name has an underscore, and Caddy drops such headers: each frame opens a sequence of its own.
    first, second = (
        send_requests(url, image, {**key, "ts_request_sequence_id": "underscored"})[1]
        for image in frames_of("apart")[1][:2]
    )
    assert (first["frame"], second["frame"]) == (0, 0) and first["sequence_id"] != "underscored" != second[
        "sequence_id"
    ]


@needs_agent
def test_grpc_streams_through_the_proxy_keep_their_ids(running_pod):
    images = frames_of("apart")[1][:10]
    with closing(GrpcClient(f"127.0.0.1:{running_pod.grpc_port}", token=running_pod.api_key, retries=0)) as remote:
        answers = [answer.json() for answer in remote.stream(TRACKER, [(image, {}) for image in images])]
    assert [answer["frame"] for answer in answers] == list(range(10))
    assert ids(answers)[2:] == [[0, 1]] * 8 or ids(answers)[2:] == [[1, 0]] * 8, ids(answers)


def test_exec_probe_pings_with_the_generated_key(running_pod, tmp_path):
    assert run_pod_command("ping", "--run-dir", str(running_pod.run_dir)).returncode == 0
    # A run directory whose server is gone (its config names a port nothing listens on) fails.
    (tmp_path / "config.properties").write_text(
        (running_pod.run_dir / "config.properties")
        .read_text()
        .replace(running_pod.backend_url, f"http://127.0.0.1:{free_ports(1)[0]}")
    )
    assert run_pod_command("ping", "--run-dir", str(tmp_path)).returncode == 1


def test_proxy_refuses_to_start_with_a_short_key(running_pod):
    result = run_pod_command("proxy", "--config", *running_pod.layers, env={pod.API_KEY_ENV: "too-short"}, timeout=30)
    assert result.returncode != 0 and "needs at least" in result.stderr


def test_a_rollouts_stop_under_load_loses_no_request(source, tmp_path):
    """The kubelet's stop: the pod leaves the endpoints, the proxy gets SIGTERM and drains, TorchServe's preStop waits
    for it."""
    the_pod = Pod(tmp_path)
    server, proxy = start_pod(the_pod, source)
    photo = encode(data.astronaut(), "PNG")
    url, headers = f"{the_pod.rest_url}/predictions/{ORACLE}", {"Authorization": f"Bearer {the_pod.api_key}"}
    outcomes: list[tuple[float, float, int]] = []  # (start, end, status); 0: no connection
    clients_count = 6
    in_flight, counting = [0], threading.Lock()
    all_sent = threading.Event()  # every client has a request in flight: a batch has just begun to gather
    no_new_requests = threading.Event()

    def client():
        with requests.Session() as session:
            while True:
                with counting:
                    if no_new_requests.is_set():
                        return
                    in_flight[0] += 1
                    if in_flight[0] == clients_count:
                        all_sent.set()
                start = time.monotonic()
                try:
                    status = session.post(url, data=photo, headers=headers, timeout=60).status_code
                except requests.ConnectionError:
                    status = 0
                with counting:
                    in_flight[0] -= 1
                outcomes.append((start, time.monotonic(), status))

    clients = [threading.Thread(target=client) for _ in range(clients_count)]
    for thread in clients:
        thread.start()
    time.sleep(2)
    # Both preStops start together: TorchServe's drain waits while the proxy still listens.
    drain = subprocess.Popen(
        [sys.executable, "-m", "runtime.pod", "drain", "--config", *the_pod.layers, "--timeout", "50"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    # Out of the Service's endpoints just as six requests start a batch (the oracle gathers for 300 ms, up to 8),
    # so they are still in flight when the proxy's preStop ends 50 ms later: the last new request reached it by then.
    all_sent.clear()
    assert all_sent.wait(timeout=30), "the clients never had six requests in flight"
    no_new_requests.set()
    time.sleep(0.05)
    stopped_at = time.monotonic()
    proxy.send_signal(signal.SIGTERM)
    drained_output, _ = drain.communicate(timeout=60)
    assert drain.returncode == 0 and "drained after" in drained_output, drained_output
    assert proxy.poll() is not None, "drain returned while the proxy still ran"
    assert stop(server) == 0, the_pod.log("serve.log")
    for thread in clients:
        thread.join(timeout=60)
    assert outcomes and [status for *_, status in outcomes if status != 200] == [], the_pod.log("proxy.log")
    # Requests were in flight when the proxy was told to stop, and were answered.
    assert any(start < stopped_at < end for start, end, _ in outcomes)
