"""A progress line on the terminal, for the commands that send many images or frames (track, patches, evaluate).

Its own module, free of OpenCV and NumPy, so that ``evaluate`` needs only the ``[eval]`` extra.
"""

import sys
from typing import TextIO


class Progress:
    """One line on ``stream`` showing ``unit`` done (of the total when known), rewritten in place."""

    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr, unit: str = "frames"):
        self.label, self.total, self.stream, self.unit, self.done = label, total, stream, unit, 0

    def step(self) -> None:
        self.done += 1
        of = f"/{self.total}" if self.total else ""
        self.stream.write(f"\r{self.label}: {self.done}{of} {self.unit}")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
