"""The client as a package of its own: `pip install .` of the repository's tracked files into a fresh virtual
environment, base dependencies only, answers `humanserve health` and `humanserve predict` over REST and gRPC from a
real TorchServe, and the commands that need an extra say which; the committed message modules and the service stubs
the client makes are what the pinned grpcio-tools generates, and the declared versions agree with them and the pins."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib.metadata import packages_distributions, version
from pathlib import Path

import google.rpc
import pytest
import skimage.data
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from humanserve_client.cli import EXTRAS
from humanserve_client.protocol.stub import ServiceStub
from tests.fixtures.serving import run_cli

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = Path("humanserve_client", "protocol")
# The handlers' own messages (the Open Inference Protocol's, read and written in the worker), generated alike.
PROTOCOL_DIRECTORIES = [PROTOCOL, Path("handlers", "core")]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
HEAVY_LIBRARIES = sorted({module for modules in EXTRAS.values() for module in modules})
# pip's words when it cannot reach the package index: then the install is skipped, any other failure fails the test.
UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Network is unreachable|Could not fetch URL|ConnectTimeout|ReadTimeoutError|ProxyError"
)
# Each command beyond predict, health and models, run without its libraries, and the extra it must name.
HEAVY_COMMANDS = [
    (["track", "video.mp4"], "video"),
    (["patches", "video.mp4", "--out", "patches"], "video"),
    (["contact-sheet", "pairs.csv", "--a", "a", "--b", "b"], "video"),
    (["pair", "a.csv", "b.csv"], "eval"),
    (["evaluate", "annotations.json"], "eval"),
]


def pins() -> dict[str, str]:
    """constraints.txt's pinned versions, by canonical name."""
    lines = (line.split("#")[0].strip() for line in (REPO / "constraints.txt").read_text().splitlines())
    return {canonicalize_name(name): version for name, _, version in (line.partition("==") for line in lines if line)}


def declared() -> list[Requirement]:
    """The package's requirements: base and every extra's, but for extras that name the package itself."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    every = [*PYPROJECT["project"]["dependencies"], *(text for texts in optional.values() for text in texts)]
    return [requirement for requirement in map(Requirement, every) if requirement.name != PYPROJECT["project"]["name"]]


def floor(name: str) -> str:
    """The version after ``>=`` in the base requirement on ``name``."""
    (requirement,) = [
        Requirement(text) for text in PYPROJECT["project"]["dependencies"] if Requirement(text).name == name
    ]
    (version,) = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    return version


def tracked_protocol_files() -> list[str]:
    return subprocess.run(
        [
            "git",
            "ls-files",
            "--",
            *(f"{d}/*.proto" for d in PROTOCOL_DIRECTORIES),
            *(f"{d}/*_pb2.py" for d in PROTOCOL_DIRECTORIES),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def protoc(kind: str, out: Path) -> list[str]:
    """What the pinned grpcio-tools writes for the tracked .proto files with ``--{kind}_out``, as `make stubs` runs it,
    into ``out``: the files' paths, relative to it."""
    assert version("grpcio-tools") == pins()["grpcio-tools"], "the venv's grpcio-tools is not the pinned one"
    protos = sorted(name for name in tracked_protocol_files() if name.endswith(".proto"))
    google_protos = Path(google.rpc.__path__[0]).parents[1]  # google/rpc/status.proto, as the Makefile finds it
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "-I", str(google_protos), f"--{kind}_out={out}"]
    subprocess.run(command + protos, cwd=REPO, check=True)
    return sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())


def test_committed_message_modules_are_what_the_pinned_grpcio_tools_makes_of_the_protos(tmp_path):
    generated = protoc("python", tmp_path)
    tracked = tracked_protocol_files()
    protos = [name for name in tracked if name.endswith(".proto")]
    assert len(protos) >= 2 and generated == sorted(name.replace(".proto", "_pb2.py") for name in protos)
    # Tracked (a clone has them), and byte for byte what `make stubs` would write.
    assert set(generated) <= set(tracked), "generated message modules not committed: git add them"
    stale = [name for name in generated if (REPO / name).read_bytes() != (tmp_path / name).read_bytes()]
    assert not stale, f"committed message modules differ from a fresh generation, run `make stubs`: {stale}"


class RecordingChannel:
    """Stands for a ``grpc.Channel``: what a stub asks of it (``unary_unary(path, ...)`` and the like) comes back as
    the name and arguments of the request, to compare."""

    def __getattr__(self, kind: str):
        return lambda *args, **kwargs: (kind, args, kwargs)


def test_the_service_stubs_are_what_grpcio_tools_would_generate(tmp_path):
    generated = protoc("grpc_python", tmp_path)
    assert len(generated) >= 2
    for name in generated:
        spec = importlib.util.spec_from_file_location(Path(name).stem, tmp_path / name)
        generated_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generated_module)
        messages = importlib.import_module(name.removesuffix("_grpc.py").replace("/", "."))
        for service in messages.DESCRIPTOR.services_by_name.values():
            # Each method under its name, with the same path, streaming, message classes and options.
            made = vars(ServiceStub(RecordingChannel(), service))
            assert len(made) == len(service.methods)
            assert made == vars(getattr(generated_module, f"{service.name}Stub")(RecordingChannel())), service.name


def test_the_protobuf_floor_is_the_version_the_message_modules_were_generated_for():
    versions = {
        re.search(r"# Protobuf Python Version: (\S+)", path.read_text())[1]
        for directory in PROTOCOL_DIRECTORIES
        for path in (REPO / directory).glob("*_pb2.py")
    }
    # A message module refuses a runtime older than its generator: an older floor would let pip install a broken client.
    assert versions == {floor("protobuf")}


def test_the_pinned_versions_fall_in_the_declared_ranges():
    pinned = pins()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {requirement}"


def test_each_extra_brings_the_libraries_the_cli_names_for_it():
    optional = PYPROJECT["project"]["optional-dependencies"]
    providers = packages_distributions()
    for extra, modules in EXTRAS.items():
        names = {canonicalize_name(Requirement(text).name) for text in optional[extra]}
        for module in modules:
            assert {canonicalize_name(name) for name in providers[module]} & names, f"[{extra}] lacks {module}"
    assert set(HEAVY_LIBRARIES) == {"cv2", "numpy", "scipy", "pycocotools"}
    (everything,) = map(Requirement, optional["all"])
    assert everything.name == PYPROJECT["project"]["name"] and everything.extras == set(optional) - {"all"}


def clean_environment() -> dict[str, str]:
    """This environment without what would let the fresh venv see the repository's or the project venv's code."""
    return {
        name: value for name, value in os.environ.items() if name not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin folder of a fresh venv holding the client, installed from a copy of the tracked files alone."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the repository's git checkout, to copy its tracked files")
    root = tmp_path_factory.mktemp("client_install")
    copy = root / "copy"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (REPO / name).is_file():  # a tracked file deleted in the worktree is not copied
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    assert not (copy / ".venv").exists() and (copy / "pyproject.toml").exists()
    venv = root / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=clean_environment())
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--timeout", "60", str(copy)],
        capture_output=True,
        text=True,
        cwd=root,
        env=clean_environment(),
        timeout=900,
    )
    seconds = time.monotonic() - started
    if install.returncode != 0 and UNREACHABLE.search(install.stdout + install.stderr):
        pytest.skip(f"pip cannot reach the package index: {install.stderr.strip().splitlines()[-1]}")
    assert install.returncode == 0, install.stdout + install.stderr
    print(f"\nfresh venv and `pip install .` (base dependencies): {seconds:.1f} s")
    return venv / "bin"


def test_the_installed_client_is_the_copy_with_base_dependencies_only(installed):
    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import importlib.util, json, humanserve_client;"
            f"print(json.dumps([humanserve_client.__file__, [importlib.util.find_spec(m) is not None for m in {HEAVY_LIBRARIES}]]))",
        ],
        capture_output=True,
        text=True,
        cwd=installed,
        env=clean_environment(),
        check=True,
    )
    location, found = json.loads(where.stdout)
    assert Path(location).is_relative_to(installed.parent / "lib"), location  # installed, not the repository's
    assert not any(found), dict(zip(HEAVY_LIBRARIES, found))


@pytest.mark.parametrize("protocol", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_the_installed_client_answers_health_and_predict(installed, server, tmp_path, protocol):
    photo = tmp_path / "astronaut.png"
    shutil.copy(Path(skimage.data.__file__).parent / "astronaut.png", photo)
    humanserve = (str(installed / "humanserve"),)
    health = run_cli(server, "health", *protocol, program=humanserve, cwd=tmp_path, env=clean_environment())
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "Healthy"}
    answered = run_cli(
        server,
        "predict",
        "pose_oracle",
        str(photo),
        *protocol,
        program=humanserve,
        cwd=tmp_path,
        env=clean_environment(),
    )
    assert answered.returncode == 0, answered.stderr
    (line,) = map(json.loads, answered.stdout.splitlines())
    assert line["file"] == str(photo) and line["answer"]["image"] == {"width": 512, "height": 512}
    assert len(line["answer"]["people"][0]["keypoints"]) == 17
    assert "1 of 1 answered, 0 failed" in answered.stderr


@pytest.mark.parametrize(("command", "extra"), HEAVY_COMMANDS, ids=[command[0] for command, _ in HEAVY_COMMANDS])
def test_a_command_without_its_extra_names_it(installed, tmp_path, command, extra):
    done = subprocess.run(
        [str(installed / "humanserve"), *command], capture_output=True, text=True, cwd=tmp_path, env=clean_environment()
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    error = json.loads(done.stderr)["error"]
    assert error["type"] == "MissingExtra"
    assert f"humanserve {command[0]} needs the client's [{extra}] extra" in error["message"]
    assert f"pip install 'humanserve-client[{extra}]'" in error["message"]
