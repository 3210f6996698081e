"""A TorchServe handler whose answers are as large as each request asks: what large answers cost the frontend
(loadtest/bench_answers.py, tests/test_frontend_agent.py).

Each request is JSON ``{"bytes": N, "seed": S, "status": CODE}``; its answer is N pseudo-random bytes
from seed S (``sized_answer``), with the header ``X-Answer-Bytes: N`` and status CODE.
"""

import random


def sized_answer(size: int, seed: int) -> bytes:
    """The answer to a request for ``size`` bytes from ``seed``."""
    return random.Random(seed).randbytes(size)


def handle(data, context):
    """One answer per request of the batch, each of the size, status and header it asked for."""
    if not data:
        return None
    answers = []
    for index, request in enumerate(data):
        asked = request.get("body") or request.get("data")
        answers.append(sized_answer(asked["bytes"], asked["seed"]))
        context.set_response_header(index, "X-Answer-Bytes", str(asked["bytes"]))
        if asked["status"] != 200:
            context.set_response_status(asked["status"], "asked for", index)
    return answers
