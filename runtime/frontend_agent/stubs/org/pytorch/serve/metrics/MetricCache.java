package org.pytorch.serve.metrics;

/** What the agent calls of TorchServe's MetricCache, to compile against: the frontend's own class is the one that runs. */
public final class MetricCache {
    public static MetricCache getInstance() {
        throw new UnsupportedOperationException("stub");
    }

    /** The frontend metric declared under this name in the metrics configuration, or null. */
    public IMetric getMetricFrontend(String name) {
        throw new UnsupportedOperationException("stub");
    }
}
