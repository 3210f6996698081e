package org.pytorch.serve.util;

/** What the agent calls of TorchServe's ConfigManager, to compile against: the frontend's own class is the one that runs. */
public final class ConfigManager {
    public static ConfigManager getInstance() {
        throw new UnsupportedOperationException("stub");
    }

    public String getProperty(String key, String defaultValue) {
        throw new UnsupportedOperationException("stub");
    }

    public String getHostName() {
        throw new UnsupportedOperationException("stub");
    }

    public String getTsHeaderKeySequenceId() {
        throw new UnsupportedOperationException("stub");
    }

    public String getVersion() {
        throw new UnsupportedOperationException("stub");
    }
}
