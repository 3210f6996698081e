package org.pytorch.serve.wlm;

/** TorchServe's ModelVersionName, to compile against: the frontend's own class is the one that runs. */
public class ModelVersionName {}
