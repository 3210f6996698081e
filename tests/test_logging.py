"""The log configuration TorchServe loads (k8s/base/log4j2.xml): INFO, each line once, no lines per batch; JSON and
DEBUG by switch."""

import json
import re

from runtime.torchserve import PRODUCTION_CONFIG, WORKER_ENVIRONMENT, TorchServe, named_files, read_properties
from tests.conftest import server_overrides
from tests.fixtures.serving import SMALL_JPEG

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{3} \[(INFO |WARN |ERROR|DEBUG)\] \S+ \S+ - ")
PER_BATCH = ("Backend response time", "result=[METRICS]", "Backend received inference at")


def log_lines(server: TorchServe, name: str) -> list[str]:
    return (server.run_dir / "logs" / name).read_text(errors="replace").splitlines()


def predict(server: TorchServe, http, requests: int) -> None:
    for _ in range(requests):
        response = http.post(
            f"{server.inference_url}/predictions/pose_oracle", data=SMALL_JPEG, headers={"Content-Type": "image/jpeg"}
        )
        assert response.status_code == 200, response.text


def test_the_production_config_names_the_log_configuration_beside_it():
    files = {path.name: path for path in named_files(read_properties(PRODUCTION_CONFIG))}
    assert files["log4j2.xml"] == PRODUCTION_CONFIG.resolve().parent / "log4j2.xml" and files["log4j2.xml"].exists()


def test_requests_add_no_log_lines_at_info_and_each_line_is_written_once(server, http):
    predict(server, http, 2)  # the model's first answers may log once
    before = {name: len(log_lines(server, name)) for name in ("ts_log.log", "model_log.log", "console.log")}
    predict(server, http, 20)
    after = {name: len(log_lines(server, name)) for name in before}
    assert after == before, "answered requests wrote log lines at INFO"

    frontend = log_lines(server, "ts_log.log")
    starts = [
        line for line in frontend if line[:4].isdigit()
    ]  # the others continue a line (start-up banner, stack traces)
    assert starts and all(TEXT_LINE.match(line) for line in starts), "ts_log.log lines are not in the configured format"
    assert not any(marker in line for line in frontend for marker in PER_BATCH)
    # DEBUG only for the workers' state changes, which runtime/torchserve.py reads to fail fast.
    assert all(" State change " in line for line in starts if "[DEBUG]" in line)
    assert any("State change WORKER_STARTED -> WORKER_MODEL_LOADED" in line for line in starts)
    # TorchServe's own configuration wrote each frontend line twice, and again to the console.
    assert len(set(starts)) > 0.99 * len(starts)
    console = log_lines(server, "console.log")
    assert not any(TEXT_LINE.match(line) for line in console), "frontend lines also reach the console"
    assert not (server.run_dir / "logs" / "access_log.log").exists(), "the access log is off by default"


def test_json_lines_debug_and_access_log_by_switch(model_store, tmp_path, http):
    switches = {"HUMANSERVE_LOG_FORMAT": "json", "HUMANSERVE_LOG_LEVEL": "debug", "HUMANSERVE_ACCESS_LOG": "info"}
    server = TorchServe(
        tmp_path,
        ["pose_oracle"],
        model_store,
        overrides=server_overrides(model_store),
        environment={**WORKER_ENVIRONMENT, **switches},
    )
    with server.running(timeout=120):
        predict(server, http, 3)
    records = [json.loads(line) for line in log_lines(server, "console.log") if line.startswith("{")]
    assert records and all({"time", "level", "thread", "logger", "message"} <= set(record) for record in records)
    loggers = {record["logger"] for record in records}
    assert {"ACCESS_LOG", "MODEL_LOG", "org.pytorch.serve.ModelServer"} <= loggers
    assert (
        sum(
            '"POST /predictions/pose_oracle HTTP/1.1" 200' in r["message"]
            for r in records
            if r["logger"] == "ACCESS_LOG"
        )
        == 3
    )
    assert any(r["level"] == "DEBUG" and "State change" not in r["message"] for r in records)
    assert any(r["message"].startswith("Backend response time") for r in records), "debug keeps the lines per batch"
    assert not any(
        (server.run_dir / "logs" / name).exists() for name in ("ts_log.log", "model_log.log", "access_log.log")
    )
