"""The frontend agent's fix of TorchServe 0.12's answer decoding (runtime/frontend_agent/ResponseDecoderFix.java), through a real
TorchServe.

The frontend reads a batch's answers from the worker's socket in chunks of at most 64 KB and decodes
once all of them are there. A mistake in walking the message would hang the batch or garble it:
these batches mix answers of several megabytes, one byte, none and a per-item error with headers.
"""

import pytest

from export.archive import Serving, write_archive
from runtime.torchserve import AGENT_JAR, TorchServe
from tests.conftest import server_overrides
from tests.fixtures.serving import send_together
from tests.fixtures.sized_answers_handler import sized_answer
from tests.fixtures.standins import SIZED_ANSWERS as MODEL
from tests.fixtures.standins import sized_answers_package


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not AGENT_JAR.exists():
        pytest.skip(f"{AGENT_JAR} was not built: make setup needs a JDK (javac, jar) for it")
    store = tmp_path_factory.mktemp("sized_answers_store")
    write_archive(
        sized_answers_package(Serving(batch_size=4, max_batch_delay_ms=2000)), store
    )  # batches of four, always
    instance = TorchServe(tmp_path_factory.mktemp("sized_answers"), [MODEL], store, overrides=server_overrides(store))
    with instance.running(timeout=300):
        yield instance


def ask(served, http, request: dict):
    return http.post(f"{served.inference_url}/predictions/{MODEL}", json=request, timeout=120)


@pytest.mark.parametrize(
    "sizes",
    [
        [3_000_000, 1, 2_500_000, 5_000_000],  # the first answers complete long before the last
        [0, 4_000_000, 70_000, 65_536],  # an empty answer, and ones ending at a chunk's edge
    ],
)
def test_a_batch_of_large_answers_arrives_whole_and_in_order(served, http, sizes):
    requests = [{"bytes": size, "seed": seed, "status": 200} for seed, size in enumerate(sizes)]
    answers = send_together(requests, lambda request: ask(served, http, request))
    for request, answer in zip(requests, answers):
        assert answer.status_code == 200
        assert answer.headers["X-Answer-Bytes"] == str(request["bytes"])
        assert answer.content == sized_answer(request["bytes"], request["seed"])
    console = (served.run_dir / "logs" / "console.log").read_text()
    assert "ModelResponseDecoder.decode waits for a worker's whole answer" in console


def test_a_refused_item_among_large_answers_keeps_its_own_status(served, http):
    requests = [
        {"bytes": 2_000_000, "seed": 7, "status": 200},
        {"bytes": 300, "seed": 8, "status": 400},
        {"bytes": 1_500_000, "seed": 9, "status": 200},
    ]
    answers = send_together(requests, lambda request: ask(served, http, request))
    assert [answer.status_code for answer in answers] == [200, 400, 200]
    assert [answer.content for answer in answers] == [sized_answer(r["bytes"], r["seed"]) for r in requests]


def test_answers_keep_coming_after_many_batches(served, http):
    """The decoder's buffer holds one message at a time: nothing of one batch leaks into the next."""
    for round_ in range(5):
        requests = [{"bytes": 600_000 + 1000 * n, "seed": 100 * round_ + n, "status": 200} for n in range(4)]
        answers = send_together(requests, lambda request: ask(served, http, request))
        assert [answer.content for answer in answers] == [sized_answer(r["bytes"], r["seed"]) for r in requests]
