package org.pytorch.serve.metrics;

import java.util.List;

/** What the agent calls of TorchServe's IMetric, to compile against: the frontend's own class is the one that runs. */
public abstract class IMetric {
    /** A gauge is set to {@code value}, a counter increased by it. */
    public abstract void addOrUpdate(List<String> dimensionValues, double value);
}
