"""The container recipe (k8s/image/Dockerfile), checked offline: no image can be built here."""

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from dockerfile_parse import DockerfileParser

from export.archive import REPO
from runtime import pod
from runtime.torchserve import PRODUCTION_CONFIG, named_files, read_properties
from tests.manifests import K8S, render, render_overlay

DOCKERFILE = K8S / "image" / "Dockerfile"
TARGETS = ("cpu", "gpu")


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    parser = DockerfileParser(fileobj=DOCKERFILE.open("rb"))
    return parser.structure


def stage_of(instructions: list[dict]) -> list[tuple[str, dict]]:
    """Each instruction with the name of the stage it belongs to."""
    stage, result = None, []
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            stage = instruction["value"].split()[-1]
        result.append((stage, instruction))
    return result


def values(instructions: list[dict], name: str) -> list[str]:
    return [i["value"] for i in instructions if i["instruction"] == name]


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_targets_build_on_a_base_pinned_by_version(instructions):
    froms = [value.split() for value in values(instructions, "FROM")]
    stages = {parts[-1]: parts[0] for parts in froms}
    assert set(TARGETS) <= set(stages)
    external = [image for image in stages.values() if image not in stages]
    for image in external:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and any(c.isdigit() for c in tag), f"{image} is not pinned by version"
    # The Python of the image is the Python the pins were frozen with.
    (python_image,) = {image for image in external if image.startswith("python:")}
    assert python_image.split(":")[1].startswith(".".join(map(str, sys.version_info[:3])) + "-")


def test_installs_exactly_the_pins_of_make_setup(instructions):
    copies = " ".join(values(instructions, "COPY"))
    assert "requirements.txt constraints.txt" in copies
    (install,) = [run for run in values(instructions, "RUN") if "pip install" in run]
    assert "-r /tmp/pins/requirements.txt -c /tmp/pins/constraints.txt" in install
    makefile = (REPO / "Makefile").read_text()
    assert "install --disable-pip-version-check -r requirements.txt -c constraints.txt" in makefile
    # No other package source: pip is called once, apt only for Java (and the agent's JDK), tini and tcmalloc.
    assert sum("pip install" in run for run in values(instructions, "RUN")) == 1


def test_runs_as_a_numeric_non_root_user_in_every_target(instructions):
    # Each stage's last USER: the gpu stage inherits the first's, gpu-export is root only to install its compiler.
    users = {
        stage: instruction["value"]
        for stage, instruction in stage_of(instructions)
        if instruction["instruction"] == "USER"
    }
    (user,) = set(users.values())
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0  # numeric, so the kubelet can check runAsNonRoot
    for target in TARGETS:
        assert render_overlay(target).pod["spec"]["securityContext"]["runAsUser"] == int(uid)
    job = render(K8S / "jobs" / "export-gpu").one("Job")
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_entrypoint_ports_and_paths_match_the_pod(instructions):
    (entrypoint,) = values(instructions, "ENTRYPOINT")
    assert json.loads(entrypoint)[-3:] == ["python", "-m", "runtime.pod"]
    (command,) = values(instructions, "CMD")
    assert json.loads(command) == ["serve"]
    (workdir,) = values(instructions, "WORKDIR")
    assert workdir == str(pod.POD_ROOT)  # `python -m runtime.pod` resolves from here
    production = read_properties(PRODUCTION_CONFIG)
    metrics = urlsplit(read_properties(K8S / "base" / "pod.properties")["metrics_address"]).port
    expected = {urlsplit(production["inference_address"]).port, int(production["grpc_inference_port"]), metrics}
    (exposed,) = values(instructions, "EXPOSE")
    assert {int(port) for port in exposed.split()} == expected
    (config_copy,) = [c for c in values(instructions, "COPY") if c.endswith(f"{pod.CONFIG_DIR}/")]
    expected_files = (
        {p.name for p in pod.CONFIG_LAYERS} | {pod.CADDYFILE.name} | {path.name for path in named_files(production)}
    )
    assert {Path(source).name for source in config_copy.split()[:-1]} == expected_files


def test_every_copied_source_exists_and_is_in_the_build_context(instructions):
    # The ignore file leaves out everything (venv, archives, run state) but what is named back in.
    allowed = {line[1:] for line in Path(f"{DOCKERFILE}.dockerignore").read_text().splitlines() if line.startswith("!")}
    for copy in values(instructions, "COPY"):
        if copy.startswith("--from="):  # from an earlier stage, not the context
            continue
        for source in copy.split()[:-1]:
            assert (REPO / source).exists(), source
            assert any(source == a or (a.endswith("/") and source.startswith(a)) for a in allowed), (
                f"{source} is left out of the build context"
            )


def test_the_frontend_agent_is_built_and_copied_where_the_server_loads_it(instructions):
    from runtime.torchserve import AGENT_JAR, REPO

    (copy,) = [c for c in values(instructions, "COPY") if c.startswith("--from=agent ")]
    assert copy.split()[-1] == str(AGENT_JAR.relative_to(REPO))  # relative to WORKDIR, the repository's place
    builds = [
        run
        for stage, i in stage_of(instructions)
        if stage == "agent" and i["instruction"] == "RUN"
        for run in [i["value"]]
    ]
    assert any(run.startswith("sh /src/agent/build.sh ") for run in builds)  # the script make setup runs
