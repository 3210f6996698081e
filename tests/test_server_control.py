"""The server controller that make start / make serve use: failing fast when a model cannot load, and the pod's
auth proxy in front of it for the playground."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest
import requests
import torch
import yaml

from runtime.pod import API_KEY_ENV
from runtime.torchserve import (
    POD_PROPERTIES,
    PRODUCTION_CONFIG,
    PROXY_GRPC_PORT_VARIABLE,
    PROXY_PID_FILE,
    PROXY_PORT_VARIABLE,
    REPO,
    THREADS_VARIABLE,
    WORKER_ENVIRONMENT,
    TorchServe,
    available_cores,
    cpu_workers,
    free_ports,
    loopback_overrides,
    read_properties,
    thread_share,
    write_properties,
)
from tests.conftest import server_overrides


@pytest.mark.parametrize(
    ("oracle", "model_file", "cause"),
    [
        ("detector_oracle", "model.pt", "PytorchStreamReader failed"),
        ("pose_oracle", "model.pt2", "model.pt2 (compiled for cpu with torch"),
    ],
)
def test_a_model_that_cannot_load_fails_start_with_the_log_tail(model_store, tmp_path, oracle, model_file, cause):
    store = tmp_path / "store"
    store.mkdir()
    with zipfile.ZipFile(model_store / f"{oracle}.mar") as good, zipfile.ZipFile(store / "broken.mar", "w") as bad:
        assert model_file in good.namelist()
        for item in good.infolist():
            bad.writestr(item, b"not a model file" if item.filename == model_file else good.read(item.filename))
    server = TorchServe(tmp_path / "run", ["broken"], store, overrides=server_overrides(store))
    server.start()
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError) as failure:
            server.wait_ready(timeout=120)
        assert time.monotonic() - started < 60, "waited for the timeout instead of noticing the failure"
        message = str(failure.value)
        assert "model broken failed to load" in message
        assert cause in message  # the log tail names the cause
    finally:
        pid = server.process.pid
        server.stop()
    assert not any(
        p.info["cmdline"] and str(tmp_path) in " ".join(p.info["cmdline"]) for p in psutil.process_iter(["cmdline"])
    ), f"processes of the stopped server (group {pid}) are still running"


def test_first_requests_summarise_json_answers_and_save_pictures(server, capsys):
    from dataclasses import replace

    from runtime.torchserve import show_first_request

    # A sequence model too: TorchServe makes up its sequence, and its weights come from the archive, not the
    # describe API.
    show_first_request(replace(server, models=["pose_oracle", "style_oracle", "tracker_oracle"], process=None))
    printed = capsys.readouterr().out
    assert '"people": 1, "keypoints_per_person": [17]' in printed
    assert "tracker_oracle serves UNTRAINED weights {'detector': 'oracle', 'pose': 'oracle'}" in printed
    assert "image/jpeg" in printed and (server.run_dir / "style_oracle.jpeg").stat().st_size > 1000
    assert "pose_oracle serves UNTRAINED weights {'model': 'oracle'}" in printed


def test_workers_run_with_the_tuned_allocator_and_passive_openmp_threads(server):
    """What make bench-stack measured as cheaper per request reaches the worker processes themselves."""
    for pid in server.worker_pids("pose_oracle"):
        environment = psutil.Process(pid).environ()
        assert {name: environment.get(name) for name in WORKER_ENVIRONMENT} == WORKER_ENVIRONMENT


@pytest.mark.parametrize(("cores", "workers", "share"), [(2, 12, 1), (16, 3, 5), (16, 16, 1), (8, 1, 8), (4, 0, 4)])
def test_cpu_workers_share_the_cores(cores, workers, share):
    assert thread_share(cores, workers) == share


def test_cpu_workers_are_counted_from_the_archives_and_cuda_archives_do_not_count(tmp_path):
    def archive(name: str, config: dict) -> Path:
        path = tmp_path / f"{name}.mar"
        with zipfile.ZipFile(path, "w") as packed:
            packed.writestr("model-config.yaml", yaml.safe_dump(config))
        return path

    cpu = archive("cpu", {"minWorkers": 2, "handler": {"compiled": {"model": {"device": "cpu"}}}})
    gpu = archive("gpu", {"minWorkers": 1, "handler": {"compiled": {"model": {"device": "cuda"}}}})
    mixed = archive(
        "mixed", {"minWorkers": 1, "handler": {"compiled": {"detector": {"device": "cuda"}, "pose": {"device": "cpu"}}}}
    )
    assert cpu_workers([cpu, gpu, mixed]) == 3
    assert 1 <= available_cores() <= os.cpu_count()


def test_workers_keep_torch_threads_by_default_and_take_their_share_of_the_cores_on_request(
    server, model_store, tmp_path
):
    assert THREADS_VARIABLE not in psutil.Process(server.worker_pids("pose_oracle")[0]).environ()
    assert server.describe("pose_oracle")["customizedMetadata"]["torch_threads"] == torch.get_num_threads()
    models = ["pose_oracle", "segmenter_oracle", "style_oracle"]
    sharing = TorchServe(
        tmp_path,
        models,
        model_store,
        overrides=server_overrides(model_store),
        environment={**WORKER_ENVIRONMENT, THREADS_VARIABLE: "share"},
    )
    with sharing.running(timeout=120):
        share = thread_share(available_cores(), cpu_workers(sharing.archives))
        assert psutil.Process(sharing.worker_pids("pose_oracle")[0]).environ()[THREADS_VARIABLE] == str(share)
        assert sharing.describe("pose_oracle")["customizedMetadata"]["torch_threads"] == share


def test_tcmalloc_is_preloaded_only_where_the_system_has_it(tmp_path, monkeypatch):
    import runtime.torchserve as server_module

    monkeypatch.setattr(server_module, "LIBRARY_FOLDERS", (str(tmp_path / "lib"),))
    assert server_module.tcmalloc_preload() == {}
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / server_module.TCMALLOC).write_bytes(b"")
    assert server_module.tcmalloc_preload() == {"LD_PRELOAD": str(tmp_path / "lib" / server_module.TCMALLOC)}


def test_benchmark_rows_name_the_workers_allocator():
    from runtime.torchserve import ALLOCATOR_ENVIRONMENT, allocator_in

    assert (
        allocator_in({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", **ALLOCATOR_ENVIRONMENT})
        == "allocator libtcmalloc_minimal.so.4"
    )
    assert allocator_in(dict(ALLOCATOR_ENVIRONMENT)) == "allocator glibc with tuned thresholds"
    assert allocator_in({}) == "allocator glibc"


def test_jvm_options_come_after_the_settings_vmargs_with_its_log_configuration_kept_absolute(tmp_path):
    config = tmp_path / "config.properties"
    config.write_text("vmargs=-Xms512m -XX:+AlwaysPreTouch -Dlog4j.configurationFile=log4j2.xml\n")
    configured = f"-Xms512m -XX:+AlwaysPreTouch -Dlog4j.configurationFile={tmp_path / 'log4j2.xml'}"
    assert TorchServe(tmp_path / "run", [], config=config).vmargs.startswith(configured)
    options = ["-Xms128m", "-XX:-AlwaysPreTouch"]
    assert TorchServe(tmp_path / "run", [], config=config, jvm_options=options).vmargs.startswith(
        f"{configured} -Xms128m -XX:-AlwaysPreTouch"
    )
    overridden = TorchServe(tmp_path / "run", [], config=config, overrides={"vmargs": "-Xmx1g"}, jvm_options=options)
    assert overridden.vmargs.startswith("-Xmx1g -Xms128m -XX:-AlwaysPreTouch")  # on top of an override too


class Controller:
    """``python -m runtime.torchserve`` as make serve/start/stop run it: the production config with free loopback
    ports (token authorization on: the proxy needs TorchServe's inference key), free ports for the auth proxy too,
    and no API key in the environment, so the controller makes one."""

    def __init__(self, root: Path, store: Path):
        self.root, self.run_dir, self.store, self.config = root, root / "run", store, root / "config.properties"
        self.settings = {**read_properties(PRODUCTION_CONFIG), **loopback_overrides(store)}
        write_properties(self.config, self.settings)
        self.proxy_ports = free_ports(2)
        self.env = {
            **{name: value for name, value in os.environ.items() if name != API_KEY_ENV},
            PROXY_PORT_VARIABLE: str(self.proxy_ports[0]),
            PROXY_GRPC_PORT_VARIABLE: str(self.proxy_ports[1]),
        }

    def command(self, action: str) -> list[str]:
        models = [] if action == "stop" else ["--models", "pose_oracle", "--model-store", str(self.store)]
        arguments = ["--run-dir", str(self.run_dir), "--config", str(self.config), "--timeout", "120"]
        return [sys.executable, "-m", "runtime.torchserve", action, *models, *arguments]

    def run(self, action: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(action), cwd=REPO, env=env or self.env, capture_output=True, text=True, timeout=300
        )

    def caddies(self) -> list[int]:
        """The live Caddy processes of this run directory (their state lives there)."""
        found = []
        for process in psutil.process_iter(["name", "status"]):
            if process.info["name"] != "caddy" or process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                if process.environ().get("XDG_DATA_HOME", "").startswith(str(self.run_dir)):
                    found.append(process.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def proxy_ports_free(self) -> bool:
        for port in self.proxy_ports:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a new listener binds
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    return False
        return True


PLAYGROUND_LINE = re.compile(r"Playground: (http://127\.0\.0\.1:\d+)/playground/ \(key: (\w+), kept in (\S+)\)")


def test_start_serves_the_playground_through_the_pods_auth_proxy_and_stop_leaves_no_proxy(model_store, tmp_path):
    controller = Controller(tmp_path, model_store)
    try:
        started = controller.run("start")
        assert started.returncode == 0, started.stdout + started.stderr
        proxy, key, kept = PLAYGROUND_LINE.search(started.stdout).groups()
        assert proxy == f"http://127.0.0.1:{controller.proxy_ports[0]}"
        assert Path(kept).read_text() == key and len(key) == 32 and Path(kept).stat().st_mode & 0o777 == 0o600
        assert f'curl -s {proxy}/predictions/pose_oracle -H "Authorization: Bearer {key}"' in started.stdout
        # TorchServe's own first request, with its own key, is still shown.
        assert f"curl -s {controller.settings['inference_address']}/predictions/pose_oracle -H" in started.stdout

        page = requests.get(f"{proxy}/playground/", timeout=10)
        assert page.status_code == 200 and page.content == (REPO / "playground" / "index.html").read_bytes()
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        photo = (controller.run_dir / "astronaut.png").read_bytes()
        url = f"{proxy}/predictions/pose_oracle"
        assert requests.post(url, data=photo, timeout=60).status_code == 401
        wrong = {"Authorization": f"Bearer {'0' * 32}"}
        assert requests.post(url, data=photo, headers=wrong, timeout=60).status_code == 401
        answer = requests.post(url, data=photo, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["people"]) == 1
        # The key the proxy injects lasts as long as TorchServe, as in the pod (not TorchServe's 60 minutes).
        in_force = read_properties(controller.run_dir / "config.properties")
        assert in_force["token_expiration_min"] == read_properties(POD_PROPERTIES)["token_expiration_min"]

        # A second start replaces the first, its proxy included, and keeps the key the playground holds.
        (first,) = controller.caddies()
        restarted = controller.run("start")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert PLAYGROUND_LINE.search(restarted.stdout).group(2) == key
        (second,) = controller.caddies()
        assert second != first and second == int((controller.run_dir / PROXY_PID_FILE).read_text())
        assert requests.post(url, data=photo, headers={"Authorization": f"Bearer {key}"}, timeout=60).ok
    finally:
        stopped = controller.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert controller.caddies() == [] and controller.proxy_ports_free()
    assert not (controller.run_dir / PROXY_PID_FILE).exists()


def test_serve_stops_its_auth_proxy_with_torchserve_on_sigterm(model_store, tmp_path):
    controller = Controller(tmp_path, model_store)
    output = tmp_path / "serve.log"  # a file, not a pipe: TorchServe's console, unread, could fill a pipe and block
    with open(output, "w") as log:
        serving = subprocess.Popen(controller.command("serve"), cwd=REPO, env=controller.env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 200
        while "Serving in the foreground" not in output.read_text():
            assert serving.poll() is None and time.monotonic() < deadline, output.read_text()[-4000:]
            time.sleep(0.5)
        assert PLAYGROUND_LINE.search(output.read_text()) and len(controller.caddies()) == 1
        serving.send_signal(signal.SIGTERM)
        assert serving.wait(timeout=90) == 0, output.read_text()[-4000:]
    finally:
        if serving.poll() is None:
            serving.kill()
            controller.run("stop")
    assert controller.caddies() == [] and controller.proxy_ports_free()


def test_start_refuses_a_short_api_key_before_starting_torchserve(tmp_path):
    controller = Controller(tmp_path, tmp_path / "store")  # no archive: it never gets as far as TorchServe
    result = controller.run("start", env={**controller.env, API_KEY_ENV: "too-short"})
    assert result.returncode == 1
    assert f"{API_KEY_ENV} holds 9 characters; the auth proxy needs at least 32" in result.stderr
    assert not (controller.run_dir / "api.key").exists()


def test_start_refuses_a_taken_proxy_port_saying_how_to_pick_another(tmp_path):
    controller = Controller(tmp_path, tmp_path / "store")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", controller.proxy_ports[0]))
        holder.listen()
        result = controller.run("start")
    port = controller.proxy_ports[0]
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and f"{PROXY_PORT_VARIABLE}=" in result.stderr
    assert not (controller.run_dir / "server.pid").exists()
