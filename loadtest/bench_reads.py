"""The worker's share of TorchServe's protocol (issue 37, item 2): what reading one request costs, and whether larger
socket reads, fewer copies or another framing would lower it. Measured, not assumed.

    python -m loadtest.bench_reads [--messages 2000] [--rounds 3]

TorchServe 0.12's Python worker reads each batch from the frontend's Unix socket with
``ts.protocol.otf_message_handler.retrieve_msg``: a ``recv`` per field (a 4-byte length, then
the bytes), each body appended to a ``bytearray``. A sender process writes the frames the
frontend writes for one ``/predictions`` request (the astronaut as a JPEG body, the headers
curl and our client send, the key) as fast as the socket takes them; this process reads them
back, timing its own thread's CPU per message (``time.thread_time``, so the sender's work is
not counted), by:

* ``torchserve``: ``retrieve_msg`` as the worker calls it;
* ``buffered``: the same parser over a socket wrapper that reads at least 1 MiB per ``recv_into``
  (fewer system calls for the small fields);
* ``large_buffer``: as ``torchserve``, with the socket's receive buffer raised to 4 MiB (bodies in
  fewer, larger reads);
* ``one_copy``: the frame read once into a preallocated buffer and parsed from a memoryview
  (the least copying a Python reader can do: one copy from the kernel, then one per field).

Each reader gets ``--messages`` messages per round, in ``--rounds`` interleaved rounds; medians of
the per-round means. Also printed: the photo's full decode (OpenCV, one thread), to express the
costs in full decodes as bench-stack does.
"""

import argparse
import json
import multiprocessing
import socket
import statistics
import struct
import time
from collections.abc import Callable

import cv2
import torch
from ts.protocol import otf_message_handler

from loadtest.bench_stack import full_decode_ms
from loadtest.machine import describe_machine
from loadtest.photos import photo

HEADERS = {  # what a client's POST brings, as TorchServe forwards it to the worker
    "host": "127.0.0.1:8080",
    "user-agent": "python-requests/2.32.3",
    "accept-encoding": "gzip, deflate",
    "accept": "*/*",
    "connection": "keep-alive",
    "authorization": "Bearer " + "k" * 8,
    "content-type": "image/jpeg",
}


def predict_frame(body: bytes, content_type: str) -> bytes:
    """One batch of one request as TorchServe 0.12's frontend writes it (``otf_message_handler``'s reading order)."""

    def sized(value: bytes) -> bytes:
        return struct.pack("!i", len(value)) + value

    frame = bytearray(b"I")
    frame += sized(b"c0ffee00-0000-4000-8000-000000000000")
    for name, value in {**HEADERS, "content-length": str(len(body))}.items():
        frame += sized(name.encode()) + sized(value.encode())
    frame += struct.pack("!i", -1)
    frame += sized(b"body") + sized(content_type.encode()) + sized(body)
    frame += struct.pack("!i", -1)  # end of the request's inputs
    frame += struct.pack("!i", -1)  # end of the batch
    return bytes(frame)


def send_frames(connection: socket.socket, frame: bytes, count: int) -> None:
    """The frontend's side: ``count`` frames, back to back."""
    for _ in range(count):
        connection.sendall(frame)
    connection.close()


class BufferedSocket:
    """A socket's ``recv`` served from reads of at least ``chunk`` bytes."""

    def __init__(self, connection: socket.socket, chunk: int = 1 << 20):
        self.connection, self.view = connection, memoryview(bytearray(chunk))
        self.start = self.end = 0

    def recv(self, length: int) -> bytes:
        if self.start == self.end:
            self.start, self.end = 0, self.connection.recv_into(self.view)
            if self.end == 0:
                return b""
        taken = min(length, self.end - self.start)
        piece = bytes(self.view[self.start : self.start + taken])
        self.start += taken
        return piece


def read_one_copy(connection: socket.socket, frame_size: int) -> Callable[[], dict]:
    """A reader that takes each frame whole into one buffer, then parses it from a memoryview."""
    buffer = bytearray(frame_size)
    view = memoryview(buffer)

    def read() -> dict:
        received = 0
        while received < frame_size:
            got = connection.recv_into(view[received:], frame_size - received)
            if got == 0:
                raise EOFError
            received += got
        position = 1

        def take() -> memoryview:
            nonlocal position
            (length,) = struct.unpack_from("!i", buffer, position)
            position += 4
            if length < 0:
                return None
            piece = view[position : position + length]
            position += length
            return piece

        request = {"requestId": bytes(take()), "headers": [], "parameters": []}
        while (name := take()) is not None:
            request["headers"].append({"name": bytes(name), "value": bytes(take())})
        while (name := take()) is not None:
            content_type = bytes(take()).decode()
            request["parameters"].append({"name": bytes(name).decode(), "contentType": content_type, "value": take()})
        return {"batch": [request]}

    return read


def timed(read: Callable[[], object], count: int) -> float:
    """Mean thread CPU ms per message over ``count`` reads."""
    start = time.thread_time()
    for _ in range(count):
        read()
    return (time.thread_time() - start) / count * 1000


def one_round(reader: str, frame: bytes, count: int) -> float:
    """One reader over ``count`` frames from a sender process."""
    receiving, sending = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if reader == "large_buffer":
        receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sender = multiprocessing.Process(target=send_frames, args=(sending, frame, count + 20))
    sender.start()
    sending.close()
    if reader == "one_copy":
        read = read_one_copy(receiving, len(frame))
    else:
        source = BufferedSocket(receiving) if reader == "buffered" else receiving
        read = lambda: otf_message_handler.retrieve_msg(source)  # noqa: E731
    for _ in range(20):  # warm-up
        read()
    mean_ms = timed(read, count)
    sender.join()
    receiving.close()
    return mean_ms


READERS = ("torchserve", "buffered", "large_buffer", "one_copy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    otf_message_handler.logging.disable()  # the worker logs each message at INFO; timed apart below
    results = {}
    for width, height in ((640, 480), (1920, 1080)):
        shot = photo("astronaut", width, height)
        frame = predict_frame(shot.data, shot.content_type)
        rounds = {reader: [] for reader in READERS}
        for _ in range(args.rounds):
            for reader in READERS:
                rounds[reader].append(one_round(reader, frame, args.messages))
        decode_ms = full_decode_ms(shot)
        results[f"{width}x{height}"] = {
            "body_kb": round(len(shot.data) / 1000, 1),
            "full_decode_ms": round(decode_ms, 3),
            "readers": {
                reader: {
                    "ms_per_message": round(statistics.median(times), 4),
                    "x_full_decode": round(statistics.median(times) / decode_ms, 4),
                }
                for reader, times in rounds.items()
            },
        }
    record = logging_cost_ms()
    machine = describe_machine(torch.device("cpu"))
    print(json.dumps({"machine": machine, **results, "log_line_ms": record}, indent=1))


def logging_cost_ms(count: int = 20000) -> float:
    """What the worker's INFO line per message ("Backend received inference at") costs, as TorchServe configures
    logging for its worker (a stream handler with a formatter), written to /dev/null."""
    import logging

    logging.disable(logging.NOTSET)
    logger = logging.getLogger("bench_reads")
    with open("/dev/null", "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(threadName)s %(name)s - %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        start = time.thread_time()
        for _ in range(count):
            logger.info("Backend received inference at: %d", time.time())
        logger.removeHandler(handler)
    return round((time.thread_time() - start) / count * 1000, 4)


if __name__ == "__main__":
    main()
