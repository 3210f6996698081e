package org.pytorch.serve.util.messages;

/** TorchServe's WorkerCommands, to compile against: the frontend's own enum is the one that runs. */
public enum WorkerCommands { PREDICT }
