"""Per-batch handler metrics, sent through TorchServe's metrics cache to its Prometheus endpoint.

Counters, so that a dashboard divides rates: mean ms of a stage per request is
``rate(HandlerStageMilliseconds) / rate(HandlerItems)``, mean batch fill is
``rate(HandlerItems) / rate(HandlerBatchSlots)``. They are declared in
``k8s/base/metrics.yaml``; TorchServe exports only declared metrics, with their declared
dimensions as labels (plus Hostname), under these very names.
"""

from typing import Any

from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes

STAGE_METRIC = "HandlerStageMilliseconds"
ITEMS_METRIC = "HandlerItems"
REJECTED_METRIC = "HandlerRejectedItems"
SLOTS_METRIC = "HandlerBatchSlots"


def report_batch(metrics: Any, stages: dict[str, float], size: int, limit: int, rejected: int) -> None:
    """Add one batch: ms per stage, requests in it, requests answered with an error, and the batch's capacity."""
    # add_metric appends ModelName and Level to the list it is given (a fresh one each call: its
    # default list is shared), and the worker pairs the values with the declared names by position.
    for stage, milliseconds in stages.items():
        metrics.add_metric(
            STAGE_METRIC,
            round(milliseconds, 3),
            "ms",
            dimensions=[Dimension("Stage", stage)],
            metric_type=MetricTypes.COUNTER,
        )
    metrics.add_metric(ITEMS_METRIC, size, "count", dimensions=[], metric_type=MetricTypes.COUNTER)
    metrics.add_metric(REJECTED_METRIC, rejected, "count", dimensions=[], metric_type=MetricTypes.COUNTER)
    metrics.add_metric(SLOTS_METRIC, max(limit, size), "count", dimensions=[], metric_type=MetricTypes.COUNTER)
