package org.pytorch.serve.util;

/** TorchServe's ConnectorType, to compile against: the frontend's own enum is the one that runs. */
public enum ConnectorType { INFERENCE_CONNECTOR }
