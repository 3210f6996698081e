from handlers.core.entry import handle  # noqa: F401  (TorchServe calls it; model-config.yaml names the family)
