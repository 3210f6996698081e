"""The server controller that make start / make serve use: failing fast when a model cannot load."""

import os
import time
import zipfile
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from runtime.torchserve import (
    THREADS_VARIABLE,
    WORKER_ENVIRONMENT,
    TorchServe,
    available_cores,
    cpu_workers,
    thread_share,
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
