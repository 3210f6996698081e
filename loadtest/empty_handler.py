"""A TorchServe handler that answers ``{}`` without reading the request: what TorchServe itself costs (``make bench-stack``)."""


def handle(data, context):
    """One empty JSON object per request of the batch."""
    return ["{}"] * len(data) if data else None
