"""k8s/kserve: the ServingRuntime and InferenceServices as kustomize renders them, validated against KServe's own CRD
schemas (tests/data/kserve: config/crd/full/ of kserve/kserve at aaac4e294dae2c7b1aa1886447793f3aa1c30912, v0.20.0),
and the storage layout the image reads there."""

import copy
import gzip
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from runtime import pod
from tests.manifests import K8S, render, render_overlay
from tests.test_k8s_manifests import KUBERNETES_VERSIONS

CRDS = K8S.parent / "tests" / "data" / "kserve"
MOUNT = "/mnt/models"  # where KServe's storage initializer puts the storageUri's files


def strict(schema):
    """The CRD's structural schema with unknown fields refused, as ``kubectl apply --validate=strict`` does (the API
    server would drop them silently)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    found = {}
    for path in CRDS.glob("*.yaml.gz"):
        crd = yaml.safe_load(gzip.decompress(path.read_bytes()))
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                found[key] = jsonschema.Draft7Validator(schema)
    return found


@pytest.fixture(scope="module")
def rendered():
    return render(K8S / "kserve")


def kserve_objects(rendered) -> list[dict]:
    return [o for o in rendered.objects if o["apiVersion"].startswith("serving.kserve.io/")]


def runtime_container(rendered, name: str) -> dict:
    (found,) = [c for c in rendered.one("ServingRuntime")["spec"]["containers"] if c["name"] == name]
    return found


def test_the_kserve_objects_validate_against_kserve_s_crds(rendered, validators):
    assert sorted(o["kind"] for o in kserve_objects(rendered)) == [
        "InferenceService",
        "InferenceService",
        "ServingRuntime",
    ]
    for resource in kserve_objects(rendered):
        errors = [e.message for e in validators[resource["apiVersion"], resource["kind"]].iter_errors(resource)]
        assert not errors, (resource["metadata"]["name"], errors)
    broken = copy.deepcopy(rendered.one("ServingRuntime"))
    broken["spec"]["containers"][0]["volumeMount"] = []  # misspelt: the schema must refuse it
    assert list(validators[broken["apiVersion"], "ServingRuntime"].iter_errors(broken))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_only_the_config_is_kept_from_base_and_it_validates(rendered, version):
    others = [o for o in rendered.objects if o not in kserve_objects(rendered)]
    assert [o["kind"] for o in others] == ["ConfigMap"]  # KServe makes the Deployment, Service and autoscaler
    for resource in others:
        kubernetes_validate.validate(resource, version, strict=True)
    volumes = {v["name"]: v for v in rendered.one("ServingRuntime")["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == others[0]["metadata"]["name"]  # the generator's hashed name


def test_the_runtime_runs_the_deployment_s_containers_on_the_storage_layout(rendered):
    deployment = render_overlay("cpu")
    torchserve, proxy = runtime_container(rendered, "kserve-container"), runtime_container(rendered, "auth-proxy")
    for ours, theirs in ((torchserve, deployment.container("torchserve")), (proxy, deployment.container("auth-proxy"))):
        for field in ("startupProbe", "lifecycle", "resources", "securityContext"):
            assert ours.get(field) == theirs.get(field), (ours["name"], field)
        assert ours["image"] == theirs["image"]
    assert [e for e in proxy["env"] if e["name"] == "HUMANSERVE_API_KEY"] == [
        e for e in deployment.container("auth-proxy")["env"] if e["name"] == "HUMANSERVE_API_KEY"
    ]
    # KServe's Service takes its ports from kserve-container: the proxy's, as config.properties names them.
    public = pod.read_properties(K8S / "base" / "config.properties")
    ports = {p["containerPort"] for p in torchserve["ports"]}
    assert ports == pod.inference_ports(public)
    args = torchserve["args"]
    assert args[0] == "serve" and args[args.index("--store") + 1] == f"{MOUNT}/model-store"
    layers = args[args.index("--config") + 1 : args.index("--store")]
    assert layers == [str(pod.CONFIG_LAYERS[0]), f"{MOUNT}/config/config.properties", str(pod.CONFIG_LAYERS[1])]


def test_the_storage_s_config_is_a_layer_under_the_pod_s(rendered, tmp_path):
    """The layout KServe's TorchServe runtime reads (config/config.properties, model-store/*.mar), merged as the
    container's arguments say: the storage's settings over the production config, the pod's over both."""
    files = rendered.config_map("humanserve-config")["data"]
    etc = tmp_path / "etc"
    etc.mkdir()
    for name, text in files.items():
        (etc / name).write_text(text)
    storage = tmp_path / "mnt"
    (storage / "config").mkdir(parents=True)
    (storage / "model-store").mkdir()
    (storage / "config" / "config.properties").write_text(
        "default_response_timeout=77\ninference_address=http://0.0.0.0:1\n"
    )
    args = runtime_container(rendered, "kserve-container")["args"]
    layers = args[args.index("--config") + 1 : args.index("--store")]
    local = [layer.replace(str(pod.CONFIG_DIR), str(etc)).replace(MOUNT, str(storage)) for layer in layers]
    merged = pod.merge_layers([Path(layer) for layer in local])
    assert merged["default_response_timeout"] == "77"  # the storage's own setting
    assert merged["inference_address"] == pod.read_properties(etc / "pod.properties")["inference_address"]
    assert merged["max_request_size"] == pod.read_properties(etc / "config.properties")["max_request_size"]


def test_the_gpu_service_asks_for_a_gpu_on_gpu_nodes_with_the_gpu_image(rendered):
    services = {
        o["metadata"]["name"]: o["spec"]["predictor"] for o in rendered.objects if o["kind"] == "InferenceService"
    }
    gpu, cpu = services["humanserve-gpu"], services["humanserve-cpu"]
    assert gpu["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1" and "resources" not in cpu["model"]
    assert gpu["model"]["runtimeVersion"].endswith("-gpu") and gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    for predictor in services.values():
        assert predictor["model"]["runtime"] == rendered.one("ServingRuntime")["metadata"]["name"]
        assert predictor["securityContext"]["runAsNonRoot"] is True
