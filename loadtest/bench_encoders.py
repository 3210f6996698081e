"""Exact (lossless) encoders for our transparent picture answers (issue 37): which one is fastest, measured.

    python -m loadtest.bench_encoders [--sizes 640x480 1920x1080] [--pictures zeroed served]
        [--repeats 20] [--min-seconds 0.5] [--rounds 3] [--only TEXT ...]

A transparent cut-out (segmenter ``background=transparent``) is an RGBA ``uint8`` picture that
we answer as a PNG from ``encode_image`` (handlers/core/images.py: fpng since this benchmark chose it; before,
``cv2.imencode`` at level 1 with the SUB filter and Huffman coding alone, the baseline "x before" compares with).
This times those calls and the exact alternatives (other PNG
writers and zlib levels, a minimal PNG writer over zlib-ng or ISA-L, lossless WebP, and QOI
as a reference that no browser shows) on the astronaut photo with an ellipse-shaped person
covering about 40 % of the frame, as two pictures:

* ``zeroed``: a hard-edged alpha (0 or 255), RGB zeroed where alpha is 0;
* ``served``: what ``composite()`` answers: the alpha softened by ``alpha_matte``'s default
  feather (2 px), RGB zeroed under alpha 0 by ``cut_out`` (until 2026-12-07 the photo's RGB
  stayed there: the first run's "served" table in docs/benchmarks.md).

Every encoder gets the pixels already interleaved in the order it wants (BGRA for OpenCV,
RGBA for the others), so only the encode is timed; the "as served" row times the whole
``encode_image`` call on the ``uint8[4, H, W]`` tensor, interleaving included. Timing: one
thread, one warm-up, then at least ``--repeats`` calls and ``--min-seconds`` per encoder and
picture, spread over ``--rounds`` passes through all encoders so that drift of the machine
falls on all alike; the median is reported. Each answer is decoded again (PNG by OpenCV
and by Pillow, WebP by OpenCV and by Pillow, QOI by imagecodecs) and compared with the
input: "yes" means every RGBA value came back; "visible" means alpha everywhere and RGB
wherever alpha > 0 came back, but RGB under alpha 0 changed (what an image viewer shows
is the same; the bytes are not). Encoders whose package is missing, or that cannot encode,
are rows that say so.
"""

import argparse
import gc
import importlib.metadata
import io
import math
import re
import statistics
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from PIL import Image, features
from skimage import data

from handlers.core.images import encode_image, png_settings
from handlers.segmentation.steps import alpha_matte, composite
from loadtest.machine import describe_machine
from loadtest.results import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BASELINE = "OpenCV PNG level 1, SUB filter, HUFFMAN_ONLY (our PNG writer before fpng)"
BEFORE_FPNG = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_SUB,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
]
DEFAULT_FEATHER = 2.0  # SEGMENTER_OPTIONS["feather"]'s default


@dataclass(frozen=True)
class Picture:
    """One cut-out in every layout an encoder may want."""

    name: str
    rgba: np.ndarray  # [H, W, 4], C-contiguous
    bgra: np.ndarray  # [H, W, 4], C-contiguous, OpenCV's order
    planes: torch.Tensor  # uint8[4, H, W], contiguous: what picture_answer hands to encode_image

    @property
    def size(self) -> str:
        return f"{self.rgba.shape[1]}x{self.rgba.shape[0]}"


@dataclass
class Candidate:
    """An encoder: ``encode(picture) -> bytes`` and the container its answer is in, or why it has no row of numbers."""

    name: str
    container: str  # png | webp | qoi
    encode: Callable[[Picture], bytes] | None = None
    missing: str = ""
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    exact: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


# --- the pictures ---------------------------------------------------------------------------------------------------


def photo(width: int, height: int) -> np.ndarray:
    """The astronaut (512x512 RGB) cropped about its centre to width:height, resized by OpenCV to width x height."""
    pixels = data.astronaut()
    rows, columns = pixels.shape[:2]
    if columns * height > rows * width:
        keep = round(rows * width / height)
        pixels = pixels[:, (columns - keep) // 2 :][:, :keep]
    else:
        keep = round(columns * height / width)
        pixels = pixels[(rows - keep) // 2 :][:keep]
    shrink = pixels.shape[1] > width
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def person_mask(width: int, height: int) -> np.ndarray:
    """``uint8[H, W]`` 255 on a person-like blob (an ellipse for the body, one for the head), about 40 % of the frame."""
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(
        mask, (width // 2, round(0.72 * height)), (round(0.26 * width), round(0.46 * height)), 0, 0, 360, 255, -1
    )
    cv2.ellipse(
        mask, (width // 2, round(0.25 * height)), (round(0.10 * width), round(0.17 * height)), 0, 0, 360, 255, -1
    )
    return mask


def picture(kind: str, width: int, height: int) -> Picture:
    """``zeroed``: hard edge, RGB 0 under alpha 0; ``served``: the handler's own ``alpha_matte`` and ``composite``."""
    rgb, mask = photo(width, height), person_mask(width, height)
    if kind == "zeroed":
        rgba = np.dstack([rgb * (mask[..., None] > 0), mask])
    else:
        # Log-odds of +-10 at the photo's size: alpha_matte's resize is then the identity and its threshold the mask.
        log_odds = torch.from_numpy(np.where(mask > 0, 10.0, -10.0).astype(np.float32))
        alpha = alpha_matte(log_odds, (height, width), 0.5, DEFAULT_FEATHER)
        planes = composite(torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), alpha, "transparent")
        rgba = planes.permute(1, 2, 0).numpy()
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    planes = torch.from_numpy(rgba).permute(2, 0, 1).contiguous()
    return Picture(kind, rgba, cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), planes)


# --- a minimal PNG writer, to try other deflate libraries behind it -------------------------------------------------

FILTERS = {"none": 0, "sub": 1, "up": 2}


def scanlines(rgba: np.ndarray, row_filter: str) -> np.ndarray:
    """PNG's filtered scanlines ``uint8[H, 1 + 4W]``: a filter byte, then the row (uint8 differences wrap mod 256)."""
    height, width = rgba.shape[:2]
    rows = rgba.reshape(height, width * 4)
    lines = np.empty((height, width * 4 + 1), np.uint8)
    lines[:, 0] = FILTERS[row_filter]
    if row_filter == "none":
        lines[:, 1:] = rows
    elif row_filter == "sub":  # each byte minus the same channel one pixel to the left
        lines[:, 1:5] = rows[:, :4]
        np.subtract(rows[:, 4:], rows[:, :-4], out=lines[:, 5:])
    else:  # "up": each byte minus the one above
        lines[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=lines[1:, 1:])
    return lines


def png_writer(
    compressor: Callable[[], object], crc32: Callable[[bytes, int], int], row_filter: str
) -> Callable[[Picture], bytes]:
    """An RGBA PNG encoder: signature, IHDR, one IDAT of ``compressor()``'s zlib stream, IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc32(body, crc32(kind, 0)))

    def encode(picture: Picture) -> bytes:
        height, width = picture.rgba.shape[:2]
        deflate = compressor()
        stream = deflate.compress(scanlines(picture.rgba, row_filter)) + deflate.flush()
        header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, deflate, no interlace
        return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")

    return encode


# --- the candidates -------------------------------------------------------------------------------------------------


def opencv_png(params: list[int]) -> Callable[[Picture], bytes]:
    def encode(picture: Picture) -> bytes:
        ok, encoded = cv2.imencode(".png", picture.bgra, params)
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        return encoded.tobytes()

    return encode


def opencv_webp(mode: int) -> Callable[[Picture], bytes]:
    def encode(picture: Picture) -> bytes:
        ok, encoded = cv2.imencode(".webp", picture.bgra, [cv2.IMWRITE_WEBP_LOSSLESS_MODE, mode])
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        return encoded.tobytes()

    return encode


def pillow(image_format: str, **settings: object) -> Callable[[Picture], bytes]:
    """Pillow's encoder; ``Image.fromarray`` is timed with it, as a handler would have to pay it."""

    def encode(picture: Picture) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(picture.rgba).save(buffer, image_format, **settings)
        return buffer.getvalue()

    return encode


def opencv_candidates() -> list[Candidate]:
    level1 = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    strategies = {
        "RLE": cv2.IMWRITE_PNG_STRATEGY_RLE,
        "FILTERED": cv2.IMWRITE_PNG_STRATEGY_FILTERED,
        "HUFFMAN_ONLY": cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
    }
    return [
        Candidate(
            "as served: encode_image(uint8[4, H, W], 'png') incl. interleave",
            "png",
            lambda picture: encode_image(picture.planes, "png", 90, 1),
        ),
        Candidate(BASELINE, "png", opencv_png(BEFORE_FPNG)),
        Candidate("OpenCV PNG level 0 (png_compression=0: stored, no filter)", "png", opencv_png(png_settings(0))),
        Candidate("OpenCV PNG level 1, OpenCV's default filter and strategy", "png", opencv_png(level1)),
        *(
            Candidate(
                f"OpenCV PNG level 1, strategy {name}", "png", opencv_png([*level1, cv2.IMWRITE_PNG_STRATEGY, value])
            )
            for name, value in strategies.items()
        ),
        Candidate(
            "OpenCV PNG level 1, UP filter, strategy RLE",
            "png",
            opencv_png(
                [
                    *level1,
                    cv2.IMWRITE_PNG_FILTER,
                    cv2.IMWRITE_PNG_FILTER_UP,
                    cv2.IMWRITE_PNG_STRATEGY,
                    cv2.IMWRITE_PNG_STRATEGY_RLE,
                ]
            ),
        ),
        Candidate("OpenCV PNG level 3 (png_compression=3)", "png", opencv_png(png_settings(3))),
        Candidate("OpenCV PNG level 6 (png_compression=6)", "png", opencv_png(png_settings(6))),
        Candidate("OpenCV WebP lossless (LOSSLESS_ON)", "webp", opencv_webp(cv2.IMWRITE_WEBP_LOSSLESS_ON)),
        Candidate(
            "OpenCV WebP lossless (LOSSLESS_PRESERVE_COLOR)",
            "webp",
            opencv_webp(cv2.IMWRITE_WEBP_LOSSLESS_PRESERVE_COLOR),
        ),
    ]


def fpng_candidates() -> list[Candidate]:
    try:
        import fpng
    except ImportError:
        return [Candidate("fpng", "png", missing="not installed")]
    return [Candidate("fpng from_ndarray", "png", lambda picture: fpng.from_ndarray(picture.rgba))]


def imagecodecs_candidates() -> list[Candidate]:
    try:
        import imagecodecs
    except ImportError:
        return [
            Candidate(f"imagecodecs {what}", container, missing="not installed")
            for what, container in (("PNG", "png"), ("WebP", "webp"), ("QOI", "qoi"))
        ]
    png, webp = imagecodecs.PNG, imagecodecs.WEBP
    return [
        Candidate(
            "imagecodecs png_encode level 1, SUB, RLE (its 'fast' hint)",
            "png",
            lambda picture: imagecodecs.png_encode(picture.rgba, 1, strategy=png.STRATEGY.RLE, filter=png.FILTER.SUB),
        ),
        Candidate(
            "imagecodecs png_encode level 1, SUB, HUFFMAN_ONLY (our settings)",
            "png",
            lambda picture: imagecodecs.png_encode(
                picture.rgba, 1, strategy=png.STRATEGY.HUFFMAN_ONLY, filter=png.FILTER.SUB
            ),
        ),
        Candidate(
            "imagecodecs spng_encode level 1 (libspng)", "png", lambda picture: imagecodecs.spng_encode(picture.rgba, 1)
        ),
        Candidate(
            "imagecodecs webp_encode lossless, level 0, method 0",
            "webp",
            lambda picture: imagecodecs.webp_encode(picture.rgba, 0, lossless=True, method=0, numthreads=1),
            missing="" if webp.available else "no WebP in this build",
        ),
        Candidate(
            "imagecodecs qoi_encode",
            "qoi",
            lambda picture: imagecodecs.qoi_encode(picture.rgba),
            note="not a browser format",
        ),
    ]


def pyspng_candidates() -> list[Candidate]:
    try:
        import pyspng
    except ImportError:
        return [Candidate("pyspng", "png", missing="not installed")]
    if not hasattr(pyspng, "encode"):
        return [Candidate("pyspng", "png", missing="cannot encode (a decoder only)")]
    return [Candidate("pyspng encode", "png", lambda picture: pyspng.encode(picture.rgba))]


def deflate_candidates() -> list[Candidate]:
    """The minimal PNG writer over stdlib zlib (a control: the writer's own cost), zlib-ng and ISA-L."""
    rows = [
        Candidate(
            "minimal PNG writer, stdlib zlib level 1, UP",
            "png",
            png_writer(lambda: zlib.compressobj(1), zlib.crc32, "up"),
        )
    ]
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        rows.append(Candidate("minimal PNG writer, zlib-ng", "png", missing="not installed"))
    else:
        for row_filter in FILTERS:
            rows.append(
                Candidate(
                    f"minimal PNG writer, zlib-ng level 1, {row_filter.upper()}",
                    "png",
                    png_writer(lambda: zlib_ng.compressobj(1), zlib_ng.crc32, row_filter),
                )
            )
        rows.append(
            Candidate(
                "minimal PNG writer, zlib-ng level 1, SUB, HUFFMAN_ONLY (our settings)",
                "png",
                png_writer(
                    lambda: zlib_ng.compressobj(1, zlib_ng.DEFLATED, 15, 8, zlib_ng.Z_HUFFMAN_ONLY),
                    zlib_ng.crc32,
                    "sub",
                ),
            )
        )
    try:
        from isal import isal_zlib
    except ImportError:
        rows.append(Candidate("minimal PNG writer, ISA-L", "png", missing="not installed"))
    else:
        for level, row_filter in ((0, "none"), (0, "sub"), (0, "up"), (1, "up")):
            rows.append(
                Candidate(
                    f"minimal PNG writer, ISA-L level {level}, {row_filter.upper()}",
                    "png",
                    png_writer(lambda level=level: isal_zlib.compressobj(level), isal_zlib.crc32, row_filter),
                )
            )
    return rows


def pillow_candidates() -> list[Candidate]:
    webp = features.check("webp")
    rows = [Candidate("Pillow PNG compress_level 1", "png", pillow("PNG", compress_level=1))]
    for quality, method, exact in ((0, 0, False), (0, 0, True), (50, 0, False), (80, 4, False)):
        name = f"Pillow WebP lossless, quality {quality}, method {method}" + (", exact" if exact else "")
        settings = {"lossless": True, "quality": quality, "method": method, "exact": exact}
        rows.append(Candidate(name, "webp", pillow("WEBP", **settings), missing="" if webp else "no WebP in Pillow"))
    return rows


def candidates() -> list[Candidate]:
    return [
        *opencv_candidates(),
        *fpng_candidates(),
        *imagecodecs_candidates(),
        *pyspng_candidates(),
        *deflate_candidates(),
        *pillow_candidates(),
    ]


def versions() -> dict[str, str]:
    """Each library's version, and the codec libraries inside it where it says."""
    build = cv2.getBuildInformation()

    def built_with(name: str) -> str:
        found = re.search(rf"^\s*{name}:\s*(.+)$", build, re.MULTILINE)
        return found.group(1).strip() if found else "?"

    found = {
        "opencv": f"{cv2.__version__} (PNG: {built_with('PNG')}; ZLib: {built_with('ZLib')}; WEBP: {built_with('WEBP')})",
        "Pillow": f"{importlib.metadata.version('pillow')} (zlib {features.version('zlib')}, zlib-ng "
        f"{features.version('zlib_ng') if 'zlib_ng' in features.features else 'n/a'}, libwebp {features.version('webp')})",
        "numpy": np.__version__,
        "stdlib zlib": zlib.ZLIB_RUNTIME_VERSION,
    }
    for package in ("fpng", "imagecodecs", "pyspng", "zlib-ng", "isal"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    try:
        import imagecodecs

        libraries = (
            imagecodecs.png_version(),
            imagecodecs.spng_version(),
            imagecodecs.webp_version(),
            imagecodecs.qoi_version(),
        )
        found["imagecodecs"] += f" ({', '.join(libraries)})"
    except ImportError:
        pass
    try:
        from zlib_ng import zlib_ng

        found["zlib-ng"] += f" (zlib-ng {zlib_ng.ZLIBNG_VERSION})"
    except ImportError:
        pass
    try:
        import isal

        found["isal"] += f" (ISA-L {isal.ISAL_VERSION})"
    except ImportError:
        pass
    return found


# --- measuring ------------------------------------------------------------------------------------------------------


def decoded(container: str, encoded: bytes) -> list[tuple[str, np.ndarray]]:
    """``encoded`` decoded to RGBA by every decoder we check it with."""
    if container == "qoi":
        import imagecodecs

        return [("imagecodecs", imagecodecs.qoi_decode(encoded))]
    by_opencv = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    with Image.open(io.BytesIO(encoded)) as image:
        image.load()  # PNG: Pillow checks each chunk's CRC
        by_pillow = np.asarray(image)
    if by_opencv is None or by_opencv.ndim != 3 or by_opencv.shape[2] != 4:
        by_opencv = np.zeros(0, np.uint8)
    else:
        by_opencv = cv2.cvtColor(by_opencv, cv2.COLOR_BGRA2RGBA)
    return [("OpenCV", by_opencv), ("Pillow", by_pillow)]


def exactness(original: np.ndarray, container: str, encoded: bytes) -> str:
    """yes (every RGBA value), visible (alpha, and RGB where alpha > 0), or no; the worst over the decoders."""
    verdicts = []
    for decoder, pixels in decoded(container, encoded):
        if pixels.shape != original.shape:
            verdicts.append(f"no ({decoder}: shape {pixels.shape})")
        elif np.array_equal(pixels, original):
            verdicts.append("yes")
        else:
            shown = original[..., 3] > 0
            same = np.array_equal(pixels[..., 3], original[..., 3]) and np.array_equal(pixels[shown], original[shown])
            verdicts.append("visible" if same else f"no ({decoder})")
    for verdict in ("no", "visible", "yes"):
        worst = next((v for v in verdicts if v.startswith(verdict)), None)
        if worst:
            return worst
    return "?"


def time_calls(encode: Callable[[], object], count: int) -> list[float]:
    """``count`` wall times of ``encode()`` in ms."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        encode()
        times.append((time.perf_counter() - start) * 1000)
    return times


def measure(pictures: list[Picture], rows: list[Candidate], repeats: int, min_seconds: float, rounds: int) -> None:
    """Fill each row's samples, sizes and exactness, picture by picture."""
    for picture in pictures:
        key = f"{picture.name} {picture.size}"
        counts: dict[int, int] = {}
        for index, row in enumerate(rows):
            if row.missing:
                continue
            try:
                encoded = row.encode(picture)  # the warm-up, and the answer checked
                row.sizes[key], row.exact[key] = len(encoded), exactness(picture.rgba, row.container, encoded)
                once = min(time_calls(lambda row=row: row.encode(picture), 2))
            except Exception as error:  # an encoder that fails is a row that says so, not a failed run
                row.errors[key] = f"{type(error).__name__}: {error}"[:120]
                continue
            counts[index] = max(repeats, min(2000, math.ceil(min_seconds * 1000 / max(once, 1e-3))))
            row.samples[key] = []
        gc.collect()
        for round_ in range(rounds):
            for index, count in counts.items():
                row = rows[index]
                share = count // rounds + (round_ < count % rounds)
                row.samples[key] += time_calls(lambda row=row: row.encode(picture), share)
        print(f"measured {key}", flush=True)


# --- the report -----------------------------------------------------------------------------------------------------


def table(kind: str, sizes: list[str], rows: list[Candidate]) -> str:
    """One markdown table for one picture kind: ms, speed-up against the baseline, and bytes at each size."""
    head = "| encoder | format | " + " | ".join(f"{s} ms | {s} x before | {s} KB" for s in sizes) + " | exact |"
    lines = [head, "|---|---|" + "---:|---:|---:|" * len(sizes) + "---|"]
    baseline = next(row for row in rows if row.name == BASELINE)
    for row in rows:
        cells = [row.name + (f" ({row.note})" if row.note else ""), row.container.upper()]
        verdicts = set()
        for size in sizes:
            key = f"{kind} {size}"
            if row.missing or key in row.errors:
                cells += ["-", "-", "-"]
                continue
            ms = statistics.median(row.samples[key])
            base = statistics.median(baseline.samples[key]) if key in baseline.samples else math.nan
            cells += [f"{ms:.2f}", f"{base / ms:.2f}", f"{row.sizes[key] / 1000:.0f}"]
            verdicts.add(row.exact[key])
        if row.missing:
            verdict = row.missing
        elif row.errors:
            verdict = "failed: " + "; ".join(sorted(set(row.errors.values())))
        else:
            verdict = ", ".join(sorted(verdicts))
        lines.append("| " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1920x1080"])
    parser.add_argument("--pictures", nargs="+", choices=("zeroed", "served"), default=["zeroed", "served"])
    parser.add_argument(
        "--repeats", type=int, default=20, help="at least this many timed calls per encoder and picture"
    )
    parser.add_argument("--min-seconds", type=float, default=0.5, help="and at least this long in timed calls")
    parser.add_argument("--rounds", type=int, default=3, help="passes through all encoders the calls are spread over")
    parser.add_argument("--only", nargs="+", default=[], help="only encoders whose name contains one of these")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rows = candidates()
    if args.only:
        rows = [row for row in rows if row.name == BASELINE or any(text in row.name for text in args.only)]
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes]
    pictures = [picture(kind, width, height) for kind in args.pictures for width, height in sizes]
    measure(pictures, rows, args.repeats, args.min_seconds, args.rounds)

    coverage = {f"{p.name} {p.size}": round(float((p.rgba[..., 3] > 0).mean()), 3) for p in pictures}
    library_versions = versions()
    header = (
        f"Machine: {describe_machine(torch.device('cpu'))}; OpenCV with {cv2.getNumThreads()} thread.\n"
        f"Median encode ms over at least {args.repeats} calls and {args.min_seconds} s per encoder and picture "
        f"({args.rounds} interleaved rounds); 'x before' is {BASELINE!r}'s median over this row's; "
        f"KB = 1000 bytes. Person coverage (alpha > 0): {coverage}.\n"
        "Versions: " + "; ".join(f"{name} {version}" for name, version in library_versions.items())
    )
    sections = [header]
    for kind in args.pictures:
        title = {
            "zeroed": "Cut-out with a hard edge, RGB zeroed under alpha 0",
            "served": f"Cut-out as composite() answers it: RGB kept under alpha 0, feather {DEFAULT_FEATHER}",
        }[kind]
        sections.append(f"{title}:\n\n" + table(kind, args.sizes, rows))
    report = "\n\n".join(sections) + "\n"
    print("\n" + report)
    results = {
        "header": header,
        "versions": library_versions,
        "coverage": coverage,
        "rows": [
            {
                "name": row.name,
                "container": row.container,
                "missing": row.missing,
                "errors": row.errors,
                "median_ms": {key: statistics.median(times) for key, times in row.samples.items()},
                "calls": {key: len(times) for key, times in row.samples.items()},
                "bytes": row.sizes,
                "exact": row.exact,
            }
            for row in rows
        ],
    }
    print(f"written to {write_report('bench-encoders', results, report)} and its .md")


if __name__ == "__main__":
    main()
