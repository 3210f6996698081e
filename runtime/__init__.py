"""What runs the models: the TorchServe controller (torchserve.py), the pod's entrypoint and proxy (pod.py), and the
frontend agent that fixes TorchServe 0.12 in its own JVM (frontend_agent/, Java)."""
