"""``humanserve``: call a humanserve TorchServe from the shell, over REST or gRPC.

    humanserve health
    humanserve models [MODEL]
    humanserve predict MODEL FILE_OR_FOLDER... [-o NAME=VALUE]... [--grpc] [--concurrency N] [--out DIR]
    humanserve track VIDEO [--model pose_tracker] [--every N] [--render OUT.mp4] [--rest] [-o NAME=VALUE]...
    humanserve patches VIDEO... --out DIR [--model keypoint_rcnn] [--every 24] [--look-back 4] [--size 256]
    [--all-people]
    humanserve pair A.csv B.csv [--out pairs.csv] [--top K] [--min-joint-score S] [--unique]
    humanserve contact-sheet pairs.csv --a DIR --b DIR [--out sheet.jpg] [--top N]
    humanserve evaluate ANNOTATIONS.json [IMAGES_DIR] [--model pose_resnet50] [--results out.json] [--report
    report.json] [--alpha 0.2]

Each image (or video frame) gets one JSON line on stdout: its answer, the file an image
answer was saved to, or its error. A bad image is reported and the others go on; the exit
status is 1 if any failed. Connection settings come from flags or HUMANSERVE_* environment
variables.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

from .client import Answer, Client, GrpcClient, RestClient, ServerError
from .progress import Progress

# predict, health and models run on the base install. The other commands import their modules when they run, so the
# libraries they need come with an extra of the package (pyproject.toml's optional-dependencies), named here by the
# modules they provide; main() turns a missing one into a message naming the extra instead of a traceback.
EXTRAS = {"video": ("cv2", "numpy"), "eval": ("numpy", "scipy", "pycocotools")}
# Models that find people themselves; evaluate sends the others the annotations' boxes.
FINDS_PEOPLE = ("pose_pipeline", "pose_tracker", "keypoint_rcnn")
IMAGE_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


def image_files(paths: list[Path]) -> Iterator[Path]:
    """The files named, and every visible file of the folders named (sorted); the server judges what is an image."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            yield path


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def positive(text: str) -> float:
    """An argparse type: a number above zero."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def report_error(kind: str, error: Exception) -> None:
    """A failure that is not the server's, as one JSON line on stderr in the shape of the server's errors."""
    print(json.dumps({"error": {"code": None, "type": kind, "message": str(error)}}), file=sys.stderr)


def parse_option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``; ``NAME=@FILE`` sends the file's bytes (a background image)."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"option {text!r} is not NAME=VALUE")
    return name, Path(value[1:]).read_bytes() if value.startswith("@") else value


def add_option_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``-o NAME=VALUE``, repeatable: request options for every image a command sends."""
    parser.add_argument(
        "-o", "--option", action="append", type=parse_option, default=[], metavar="NAME=VALUE", help=help
    )


def read_key_file(path: str | None) -> dict[str, str]:
    """The keys in TorchServe's key_file.json (written where it runs; `make serve` keeps it in run/)."""
    if not path:
        return {}
    keys = json.loads(Path(path).read_text())
    return {api: keys[api]["key"] for api in ("inference", "management")}


def connect(args: argparse.Namespace) -> Client:
    keys = read_key_file(args.key_file)
    tokens = {
        "token": args.token or keys.get("inference"),
        "management_token": args.management_token or keys.get("management"),
        "timeout_s": args.timeout,
        "retries": args.retries,
        # Named when the server refuses a key.
        "key_source": "--token / HUMANSERVE_TOKEN" if args.token else args.key_file,
    }
    if args.grpc:
        return GrpcClient(args.grpc_target, args.grpc_management_target, **tokens)
    return RestClient(args.url, args.management_url, **tokens)


def predict_one(client: Client, args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Send one file; the JSON line that reports it."""
    try:
        answer = client.predict(args.model, path.read_bytes(), dict(args.option))
    except ServerError as error:
        return {"file": str(path), "error": error.as_dict()}
    except OSError as error:
        return {"file": str(path), "error": {"code": None, "type": "UnreadableFile", "message": str(error)}}
    return {"file": str(path), **save_or_inline(answer, path, args)}


def save_or_inline(answer: Answer, source: Path, args: argparse.Namespace) -> dict[str, Any]:
    if not answer.is_image:
        return {"answer": answer.json()}
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{source.stem}.{args.model}{IMAGE_EXTENSIONS.get(answer.content_type, '.img')}"
    target.write_bytes(answer.body)
    return {"saved": str(target), "content_type": answer.content_type}


def predict(args: argparse.Namespace) -> int:
    files = list(image_files(args.paths))
    if not files:
        print("no files to send", file=sys.stderr)
        return 2
    failed = 0
    with connect(args) as client, ThreadPoolExecutor(args.concurrency) as pool:
        for line in pool.map(lambda path: predict_one(client, args, path), files):
            failed += "error" in line
            print(json.dumps(line), flush=True)
    print(f"{len(files) - failed} of {len(files)} answered, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def track(args: argparse.Namespace) -> int:
    from .tracking import VideoError, draw_tracks, track_video, video_facts, video_writer

    args.grpc = not args.rest  # streams are gRPC's strength: the default here
    writer, failed, done = None, 0, 0
    frames, fps = video_facts(args.video)
    progress = Progress(args.video.name, -(-frames // args.every))
    try:
        # closing(): a run stopped early (Ctrl-C) ends its sequence on the server while the client is still open.
        with (
            connect(args) as client,
            closing(
                track_video(
                    client, args.model, args.video, args.every, dict(args.option), args.sequence_id, args.image_format
                )
            ) as tracked,
        ):
            for frame, record in tracked:
                failed += "error" in record
                done += 1
                print(json.dumps(record), flush=True)
                if args.render:
                    writer = writer or video_writer(args.render, frame, fps / args.every)
                    writer.write(draw_tracks(frame, record))
                progress.step()
    except VideoError as error:
        report_error("UnreadableVideo", error)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted after {done} frames answered; its sequence was ended on the server", file=sys.stderr)
        return 130
    finally:
        progress.close()
        if writer is not None:
            writer.release()
    print(f"{done - failed} of {done} frames answered, {failed} failed", file=sys.stderr)
    return 1 if failed or not done else 0


def models(args: argparse.Namespace) -> int:
    with connect(args) as client:
        print(json.dumps(client.describe(args.model) if args.model else client.models(), indent=2))
    return 0


def health(args: argparse.Namespace) -> int:
    with connect(args) as client:
        answer = client.health()
    print(json.dumps(answer))
    return 0 if answer.get("status") == "Healthy" else 1


def patches(args: argparse.Namespace) -> int:
    from .patches import PatchSettings, extract_patches
    from .tracking import VideoError

    settings = PatchSettings(args.every, args.look_back, args.score_threshold, args.padding, args.size, args.all_people)
    failed = 0
    with connect(args) as client:
        for video in args.videos:
            try:
                frames, written = extract_patches(
                    client, args.model, video, args.out, settings, dict(args.option), args.concurrency
                )
            except VideoError as error:
                report_error("UnreadableVideo", error)
                failed += 1
                continue
            print(json.dumps({"video": str(video), "frames": frames, "patches": written}), flush=True)
    return 1 if failed else 0


def sheet(args: argparse.Namespace) -> int:
    from .contact_sheet import contact_sheet

    try:
        count = contact_sheet(args.pairs, args.a, args.b, args.out, args.top, args.padding)
    except (OSError, KeyError, ValueError) as error:
        report_error(type(error).__name__, error)
        return 2
    print(f"{count} pairs drawn into {args.out}" if count else "no rank-1 pairs to draw", file=sys.stderr)
    return 0 if count else 1


def pair(args: argparse.Namespace) -> int:
    from .pairing import PatchFileError, pair_files

    try:
        count = pair_files(args.a, args.b, args.out, args.top, args.min_joint_score, args.unique)
    except (PatchFileError, ValueError) as error:
        report_error(type(error).__name__, error)
        return 2
    print(f"{count} pairs written to {args.out}", file=sys.stderr)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from .evaluation import AnnotationError, collect_results, read_ground_truth, read_results, score, summary, table_row

    try:
        truth = read_ground_truth(args.annotations)
        if args.images is None:
            if args.results is None:
                raise AnnotationError(
                    "give the images folder (to ask the server) or --results FILE (to score a results file)"
                )
            results, made_for, failures, send_boxes = read_results(args.results, truth), None, [], False
        else:
            send_boxes = args.boxes == "annotations" or (
                args.boxes == "auto" and not args.model.startswith(FINDS_PEOPLE)
            )
            progress = Progress(args.model, len(truth.image_ids), unit="images")
            try:
                with connect(args) as client:
                    collected = collect_results(
                        client,
                        args.model,
                        truth,
                        args.images,
                        send_boxes,
                        dict(args.option),
                        args.concurrency,
                        progress.step,
                    )
            finally:
                progress.close()
            results, made_for, failures = collected.results, collected.made_for, collected.failures
            if args.results:
                args.results.write_text(json.dumps(results))
    except AnnotationError as error:
        report_error("InvalidAnnotations", error)
        return 2
    for failure in failures:
        print(json.dumps(failure), file=sys.stderr)
    report = score(truth, results, made_for, args.alpha)
    report["failed_images"] = len(failures)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    if args.table:
        boxes = (
            "from the results file"
            if args.images is None
            else ("the annotations'" if send_boxes else "the model's own")
        )
        row = table_row(
            report,
            args.model if args.images else args.results.name,
            args.annotations,
            boxes,
            dict(args.option),
            time.strftime("%Y-%m-%d"),
        )
        with args.table.open("a") as table:
            table.write(row + "\n")
    print(json.dumps(report))
    print(summary(report), file=sys.stderr)
    return 1 if failures else 0


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    shared = argparse.ArgumentParser(add_help=False)  # connection flags, accepted after any command
    connection = shared.add_argument_group("connection")
    connection.add_argument("--grpc", action="store_true", help="use gRPC instead of REST")
    connection.add_argument("--url", default=env("HUMANSERVE_URL", "http://127.0.0.1:8080"), help="REST inference API")
    connection.add_argument(
        "--management-url",
        default=env("HUMANSERVE_MANAGEMENT_URL", "http://127.0.0.1:8081"),
        help="REST management API",
    )
    connection.add_argument(
        "--grpc-target", default=env("HUMANSERVE_GRPC_TARGET", "127.0.0.1:7070"), help="gRPC inference API"
    )
    connection.add_argument(
        "--grpc-management-target",
        default=env("HUMANSERVE_GRPC_MANAGEMENT_TARGET", "127.0.0.1:7071"),
        help="gRPC management API",
    )
    connection.add_argument("--token", default=env("HUMANSERVE_TOKEN"), help="inference API key (token authorization)")
    connection.add_argument("--management-token", default=env("HUMANSERVE_MANAGEMENT_TOKEN"), help="management API key")
    connection.add_argument(
        "--key-file",
        default=env("HUMANSERVE_KEY_FILE"),
        help="TorchServe's key_file.json, for both keys (e.g. run/key_file.json)",
    )
    connection.add_argument("--timeout", type=float, default=120, help="seconds to wait for each answer")
    connection.add_argument(
        "--retries",
        type=int,
        default=3,
        help="tries again, with backoff, when the server is busy (503 / UNAVAILABLE) or the worker died (507)",
    )
    root = argparse.ArgumentParser(
        prog="humanserve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("predict", parents=[shared], help="send images to a model")
    run.add_argument("model")
    run.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_FOLDER")
    add_option_argument(run, "a request option, e.g. render=true, boxes='[[10,20,200,400]]', background=@beach.jpg")
    run.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (the server batches them)")
    run.add_argument("--out", type=Path, default=Path("humanserve_answers"), help="folder for image answers")
    run.set_defaults(run=predict)

    follow = commands.add_parser(
        "track", parents=[shared], help="track the people of a video: one sequence, a JSON line per frame"
    )
    follow.add_argument("video", type=Path)
    follow.add_argument("--model", default="pose_tracker", help="a sequence model (default pose_tracker)")
    follow.add_argument("--every", type=int, default=1, help="send every N-th frame (1: all)")
    follow.add_argument(
        "--render", type=Path, help="also write the video (MP4) with boxes, skeletons and track IDs drawn"
    )
    follow.add_argument("--rest", action="store_true", help="REST with the sequence header instead of a gRPC stream")
    follow.add_argument("--sequence-id", help="the sequence's name (default: a new one)")
    follow.add_argument(
        "--image-format", choices=("jpeg", "png"), default="jpeg", help="how frames travel (png: lossless, larger)"
    )
    add_option_argument(follow, "a request option for every frame, e.g. score_threshold=0.6")
    follow.set_defaults(run=track, extra="video")

    listing = commands.add_parser("models", parents=[shared], help="list the models, or describe one")
    listing.add_argument("model", nargs="?")
    listing.set_defaults(run=models)

    commands.add_parser("health", parents=[shared], help="is the server healthy").set_defaults(run=health)

    cutting = commands.add_parser(
        "patches", parents=[shared], help="square person patches from videos, a CSV row each, through a served model"
    )
    cutting.add_argument("videos", nargs="+", type=Path, metavar="VIDEO")
    cutting.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for patches/*.jpg, patches.csv and frames.csv (what a rerun skips)",
    )
    cutting.add_argument(
        "--model",
        default="keypoint_rcnn",
        help="a model answering people with keypoints (and views): keypoint_rcnn, pose_pipeline",
    )
    cutting.add_argument("--every", type=at_least(1), default=24, help="send every N-th frame")
    cutting.add_argument(
        "--look-back",
        type=at_least(0),
        default=4,
        help="frames over the second before a sampled frame that shows someone",
    )
    cutting.add_argument(
        "--score-threshold", type=float, default=0.5, help="people below this score give no patch (and no look-back)"
    )
    cutting.add_argument(
        "--padding",
        type=float,
        default=0.1,
        help="grow the box by this share of its longer side each way before squaring",
    )
    cutting.add_argument("--size", type=at_least(8), default=256, help="patch side in pixels")
    cutting.add_argument("--all-people", action="store_true", help="a patch for every person, not only the best")
    cutting.add_argument("--concurrency", type=at_least(1), default=4, help="frames in flight at once")
    add_option_argument(cutting, "a request option for every frame")
    cutting.set_defaults(run=patches, extra="video")

    pairing = commands.add_parser(
        "pair", help="pair the patches of two sets by pose, within the same view (no server needed)"
    )
    pairing.add_argument("a", type=Path, metavar="A.csv", help="patches CSV (humanserve patches)")
    pairing.add_argument("b", type=Path, metavar="B.csv")
    pairing.add_argument(
        "--out", type=Path, default=Path("pairs.csv"), help="the pairs CSV: a_patch, b_patch, view, similarity, rank"
    )
    pairing.add_argument("--top", type=at_least(1), default=1, help="best matches of B per patch of A")
    pairing.add_argument(
        "--min-joint-score", type=float, default=0.0, help="joints scoring below this are left out of both poses"
    )
    pairing.add_argument(
        "--unique",
        action="store_true",
        help="a one-to-one assignment per view instead of best matches (sets up to a few thousand)",
    )
    pairing.set_defaults(run=pair, extra="eval")

    checking = commands.add_parser(
        "contact-sheet", help="the best pairs side by side with skeletons drawn (no server needed)"
    )
    checking.add_argument("pairs", type=Path, metavar="pairs.csv")
    checking.add_argument(
        "--a", type=Path, required=True, help="set A's humanserve patches folder (patches.csv, patches/)"
    )
    checking.add_argument("--b", type=Path, required=True, help="set B's folder")
    checking.add_argument("--out", type=Path, default=Path("contact_sheet.jpg"))
    checking.add_argument("--top", type=at_least(1), default=20, help="how many pairs, most similar first")
    checking.add_argument("--padding", type=float, default=0.1, help="the --padding the patches were cut with")
    checking.set_defaults(run=sheet, extra="video")

    scoring = commands.add_parser(
        "evaluate",
        parents=[shared],
        help="COCO keypoint AP and PCK of a served pose model, or of a results file (no server needed)",
    )
    scoring.add_argument("annotations", type=Path, metavar="ANNOTATIONS.json", help="COCO keypoints ground truth")
    scoring.add_argument(
        "images",
        type=Path,
        nargs="?",
        metavar="IMAGES_DIR",
        help="the annotated images; without it, --results FILE is scored",
    )
    scoring.add_argument(
        "--model",
        default="pose_resnet50",
        help="a pose model: top-down (sent the annotations' boxes) or one that finds people",
    )
    scoring.add_argument(
        "--results",
        type=Path,
        help="with IMAGES_DIR, also write the answers here as COCO results; without, the results to score",
    )
    scoring.add_argument(
        "--report", type=Path, help="write every figure as JSON (AP, AP50, AP75, APm, APl, AR, PCK, PCK_per_joint, ...)"
    )
    scoring.add_argument(
        "--table", type=Path, help="append the figures as a row to this markdown table (docs/accuracy.md)"
    )
    scoring.add_argument(
        "--alpha", type=positive, default=0.2, help="PCK: correct within alpha x the longer side of the person's box"
    )
    scoring.add_argument(
        "--boxes",
        choices=("auto", "annotations", "none"),
        default="auto",
        help=f"send the annotations' person boxes (auto: except to {', '.join(FINDS_PEOPLE)}, which find people themselves)",
    )
    scoring.add_argument("--concurrency", type=at_least(1), default=4, help="images in flight at once")
    add_option_argument(scoring, "a request option for every image, e.g. flip_test=true")
    scoring.set_defaults(run=evaluate, extra="eval")
    return root


def missing_extra(args: argparse.Namespace, error: ModuleNotFoundError) -> str | None:
    """What to install when ``error`` is a library of the command's extra that is not there; None for any other."""
    extra = getattr(args, "extra", None)
    library = (error.name or "").partition(".")[0]
    if extra is None or library not in EXTRAS[extra]:
        return None
    return (
        f"humanserve {args.command} needs the client's [{extra}] extra, and {library} is not installed: "
        f"pip install 'humanserve-client[{extra}]' (from a clone of the repository: pip install '.[{extra}]')"
    )


def main() -> None:
    args = parser().parse_args()
    try:
        sys.exit(args.run(args))
    except ServerError as error:
        print(json.dumps({"error": error.as_dict()}), file=sys.stderr)
        sys.exit(1)
    except ModuleNotFoundError as error:
        message = missing_extra(args, error)
        if message is None:
            raise
        report_error("MissingExtra", ModuleNotFoundError(message))
        sys.exit(2)
