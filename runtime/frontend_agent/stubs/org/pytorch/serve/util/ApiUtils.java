package org.pytorch.serve.util;

/** What the agent calls of TorchServe's ApiUtils, to compile against: the frontend's own class is the one that runs. */
public final class ApiUtils {
    public static String getStreamingInferenceErrorResponseMessage(String modelName, String version) {
        throw new UnsupportedOperationException("stub");
    }

    public static boolean isModelHealthy() {
        throw new UnsupportedOperationException("stub");
    }
}
