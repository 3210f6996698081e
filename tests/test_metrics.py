"""Per-stage handler metrics: declared for TorchServe, exported on its Prometheus endpoint, plotted by the dashboard."""

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
import ts
import yaml
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from export.archive import REPO
from handlers.core.metrics import ITEMS_METRIC, REJECTED_METRIC, SLOTS_METRIC, STAGE_METRIC, report_batch
from handlers.core.stages import STAGES
from runtime.torchserve import PRODUCTION_CONFIG, read_properties
from tests.fixtures.serving import SMALL_JPEG, post

ORACLE = "pose_oracle"
ORACLE_BATCH_SIZE = 8  # oracles.oracle_packages
DECLARATION = Path(read_properties(PRODUCTION_CONFIG)["metrics_config"])
DASHBOARD = REPO / "k8s" / "grafana" / "humanserve-dashboard.json"
SCRAPE_CONFIG = REPO / "k8s" / "prometheus" / "scrape-config.yaml"
HANDLER_METRICS = {STAGE_METRIC, ITEMS_METRIC, REJECTED_METRIC, SLOTS_METRIC}
# The worker's metric line as TorchServe 0.12's frontend parses it (org.pytorch.serve.metrics.Metric).
FRONTEND_LINE = re.compile(
    r"\[METRICS\]\s*([\w\s]+)\.([\w\s]+):([0-9\-,.e]+)\|#([^|]*)(\|#type:([^|,]+))?\|#hostname:([^,]+),([^,]+)(,(.*))?"
)


@dataclass(frozen=True)
class Sample:
    """One line of Prometheus' text format."""

    name: str
    labels: dict[str, str]
    value: float


SAMPLE_LINE = re.compile(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL_PAIR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(metrics_url: str) -> list[Sample]:
    """Every sample the metrics endpoint at ``metrics_url`` serves now."""
    text = requests.get(f"{metrics_url}/metrics", timeout=10).text
    samples = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, labels, value = SAMPLE_LINE.fullmatch(line).groups()
            samples.append(Sample(name, dict(LABEL_PAIR.findall(labels or "")), float(value)))
    return samples


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the ``name`` samples with these label values."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def scrape_until(metrics_url: str, ready: Callable[[list[Sample]], bool], timeout: float = 30) -> list[Sample]:
    """Scrape until ``ready`` holds: the frontend reads handler metrics from the worker's stdout, apart from the
    answer."""
    deadline = time.monotonic() + timeout
    while not ready(samples := scrape(metrics_url)):
        assert time.monotonic() < deadline, "the metrics endpoint never showed the handler's counts"
        time.sleep(0.2)
    return samples


def test_declaration_keeps_torchserve_defaults_and_declares_the_handler_counters():
    declared = yaml.safe_load(DECLARATION.read_text())
    defaults = yaml.safe_load((Path(ts.__file__).parent / "configs" / "metrics.yaml").read_text())
    for section in ("ts_metrics", "model_metrics"):
        for kind, specs in defaults[section].items():
            missing = [spec["name"] for spec in specs if spec not in declared[section][kind]]
            assert not missing, f"TorchServe's default {section} {kind} {missing} would vanish from /metrics"
    counters = {spec["name"]: spec["dimensions"] for spec in declared["model_metrics"]["counter"]}
    assert HANDLER_METRICS <= counters.keys()
    # add_metric appends ModelName and Level to the handler's dimensions: they must come last.
    assert all(counters[name][-2:] == ["ModelName", "Level"] for name in HANDLER_METRICS)


def test_file_settings_are_relative_to_their_properties_file(tmp_path):
    (tmp_path / "config.properties").write_text("metrics_config=metrics.yaml\nmodel_store=model_store\n")
    assert read_properties(tmp_path / "config.properties") == {
        "metrics_config": str(tmp_path / "metrics.yaml"),
        "model_store": "model_store",  # given on the command line, never read from the file
    }
    # The repository's config.properties is a link into k8s/base/, beside the declaration the ConfigMap carries.
    assert DECLARATION == REPO / "k8s" / "base" / "metrics.yaml" and DECLARATION.is_file()


def test_worker_sends_lines_the_frontend_labels_right(caplog):
    cache = MetricsCacheYamlImpl(config_file_path=str(DECLARATION))  # as TorchServe's worker builds it
    cache.initialize_cache()
    cache.model_name = ORACLE
    cache.set_request_ids({0: "request-a", 1: "request-b", 2: "request-c"})
    with caplog.at_level(logging.INFO):
        report_batch(cache, {stage: 1.5 for stage in STAGES}, size=3, limit=8, rejected=1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    declared = {
        spec["name"]: spec["dimensions"] for spec in yaml.safe_load(DECLARATION.read_text())["model_metrics"]["counter"]
    }
    sent = {}
    for record in caplog.records:
        name, _, value, dimensions, _, kind, *_ = FRONTEND_LINE.fullmatch(record.getMessage()).groups()
        pairs = [pair.split(":") for pair in dimensions.split(",")]
        # The frontend takes the label names from the declaration and the values from the line, by position.
        assert [key for key, _ in pairs] == declared[name], record.getMessage()
        labels = dict(pairs)
        assert (kind, labels["ModelName"], labels["Level"]) == ("COUNTER", ORACLE, "Model")
        sent[(name, labels.get("Stage"))] = float(value)
    assert sent == {
        **{(STAGE_METRIC, stage): 1.5 for stage in STAGES},
        (ITEMS_METRIC, None): 3,
        (REJECTED_METRIC, None): 1,
        (SLOTS_METRIC, None): 8,
    }


def test_metrics_endpoint_counts_each_stage_and_request(server, http):
    before = scrape(server.metrics_url)
    good = [post(server, http, ORACLE, SMALL_JPEG, image_format="JPEG") for _ in range(3)]
    not_an_image = post(server, http, ORACLE, b"definitely not an image", image_format="JPEG")  # refused while reading
    truncated = post(server, http, ORACLE, SMALL_JPEG[:700], image_format="JPEG")  # refused while decoding
    assert [r.status_code for r in good] == [200] * 3 and not_an_image.status_code == truncated.status_code == 400

    def added(after: list[Sample], name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    after = scrape_until(server.metrics_url, lambda now: added(now, ITEMS_METRIC, ModelName=ORACLE) >= 5)
    assert added(after, ITEMS_METRIC, ModelName=ORACLE) == 5 and added(after, REJECTED_METRIC, ModelName=ORACLE) == 2
    # Each batch adds its capacity, 8 slots, however few requests it held.
    slots = added(after, SLOTS_METRIC, ModelName=ORACLE)
    assert slots >= 5 and slots % ORACLE_BATCH_SIZE == 0
    for stage in STAGES:
        (sample,) = [
            s
            for s in after
            if s.name == STAGE_METRIC and s.labels["Stage"] == stage and s.labels["ModelName"] == ORACLE
        ]
        assert sample.labels.keys() == {"Stage", "ModelName", "Level", "Hostname"}
    for stage in ("read", "decode", "preprocess", "model", "postprocess"):
        assert added(after, STAGE_METRIC, ModelName=ORACLE, Stage=stage) > 0, stage
    # TorchServe's own counter, which the dashboard divides by, saw the same requests.
    assert added(after, "ts_inference_requests_total", model_name=ORACLE) == 5


def test_each_answer_carries_its_batchs_stage_times_as_server_timing(server, http):
    started = time.perf_counter()
    answer = post(server, http, ORACLE, SMALL_JPEG, image_format="JPEG")
    took_ms = (time.perf_counter() - started) * 1000
    stages = dict(entry.split(";dur=") for entry in answer.headers["Server-Timing"].split(", "))
    assert {"read", "decode", "preprocess", "model", "postprocess", "encode"} >= stages.keys() >= {"decode", "model"}
    assert 0 < sum(map(float, stages.values())) < took_ms
    refused = post(server, http, ORACLE, b"definitely not an image", image_format="JPEG")
    assert refused.status_code == 400 and "read;dur=" in refused.headers["Server-Timing"]


SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|on|ignoring|without)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\(([A-Za-z_:][\w:]*)(?:\{([^}]*)\})?,\s*(\w+)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def metric_references(query: str) -> dict[str, set[str]]:
    """The metrics a PromQL query or a Grafana ``label_values`` reads, each with the labels it names on them."""
    variable = LABEL_VALUES.fullmatch(query)
    if variable:
        name, matchers, label = variable.groups()
        return {name: set(MATCHER.findall(matchers or "")) | {label}}
    references: dict[str, set[str]] = {}
    for name, matchers in SELECTOR.findall(query):
        references.setdefault(name, set()).update(MATCHER.findall(matchers))
    return references


def test_dashboard_queries_only_what_the_server_exports(server, http):
    assert post(server, http, ORACLE, SMALL_JPEG, image_format="JPEG").status_code == 200
    samples = scrape_until(server.metrics_url, lambda now: HANDLER_METRICS <= {s.name for s in now})
    exported: dict[str, set[str]] = {}
    for sample in samples:
        exported.setdefault(sample.name, set()).update(sample.labels)
    # Labels Prometheus adds when it scrapes a pod.
    (job,) = yaml.safe_load(SCRAPE_CONFIG.read_text())
    scraped = {r["target_label"] for r in job["relabel_configs"] if not r.get("target_label", "__").startswith("__")}
    dashboard = json.loads(DASHBOARD.read_text())
    (source,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    variables = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(
        item["datasource"]["uid"] == f"${{{source['name']}}}" for item in variables + dashboard["panels"] + targets
    )

    queried = set()
    for query, legend in [(v["definition"], "") for v in variables] + [(t["expr"], t["legendFormat"]) for t in targets]:
        references = metric_references(query)
        assert references, f"no metric in {query}"
        for name, labels in references.items():
            assert name in exported, f"{name} is not on the metrics endpoint: {query}"
            assert labels <= exported[name] | scraped, f"{name} has no labels {labels - exported[name] - scraped}"
        grouped = {label.strip() for group in GROUPING.findall(query) for label in group.split(",")}
        assert grouped <= scraped.union(*(exported[name] for name in references)), query
        assert set(LEGEND_LABEL.findall(legend)) <= grouped, legend
        queried |= references.keys()
    assert HANDLER_METRICS | {"ts_inference_requests_total", "ts_queue_latency_microseconds"} <= queried
