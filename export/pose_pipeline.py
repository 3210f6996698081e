"""The pose pipeline: detect then pose in one worker (``pose_pipeline``), and the same the TorchServe way, a workflow
archive (.war) chaining a detector and a pose model.

    python -m export.pose_pipeline [--detector person_detector] [--pose pose_resnet50] [--store model_store]

writes the workflow archive. Its models are the store's own archives; register the workflow on a running server with
``curl -X POST "127.0.0.1:8081/workflows?url=pose_pipeline_workflow.war"`` (management token).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml

from handlers.pose_pipeline.schema import PipelineConfig

from .archive import HANDLERS, REPO, Serving
from .detection import DETECTOR, PERSON_DETECTOR
from .pose import POSE, pose_part
from .recipe import DETECTION_SERVING, IMAGE_LIMITS, Recipe

# Detect then pose, in one worker: pose_pipeline, and pose_tracker on top of it.
PIPELINE_PARTS = (replace(PERSON_DETECTOR, name="detector"), pose_part(50, name="pose"))
PIPELINE_CONFIG = PipelineConfig(detector=DETECTOR, pose=POSE, limits=IMAGE_LIMITS)

RECIPES = (
    Recipe(
        name="pose_pipeline",
        parts=PIPELINE_PARTS,
        handler="handlers.pose_pipeline.handler",
        config=PIPELINE_CONFIG,
        serving=DETECTION_SERVING,
        served_by_default=True,
    ),
)

# The workflow's function nodes; staged under a name of its own, as TorchServe imports it by file name.
WORKFLOW_HANDLER = HANDLERS / "pose_pipeline" / "workflow.py"


def workflow_spec(detector: str, pose: str, serving: Serving) -> dict:
    """The workflow specification: both models with the detector's serving settings, and the DAG."""
    return {
        "models": {
            "min-workers": serving.workers,
            "max-workers": serving.workers,
            "batch-size": serving.batch_size,
            "max-batch-delay": serving.max_batch_delay_ms,
            "retry-attempts": 1,
            "timeout-ms": serving.response_timeout_s * 1000,
            "detector": {"url": f"{detector}.mar"},
            "pose": {"url": f"{pose}.mar"},
        },
        "dag": {
            "pre_processing": ["detector", "to_pose_request"],
            "detector": ["to_pose_request"],
            "to_pose_request": ["pose"],
        },
    }


def write_workflow(
    store: Path, detector: str, pose: str, name: str = "pose_pipeline_workflow", serving: Serving = DETECTION_SERVING
) -> Path:
    """Write ``store/NAME.war`` for the detector and pose archives found in ``store``."""
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"export-{name}-") as stage_dir:
        stage = Path(stage_dir)
        shutil.copy(WORKFLOW_HANDLER, stage / "pose_pipeline_workflow.py")
        (stage / "workflow.yaml").write_text(yaml.safe_dump(workflow_spec(detector, pose, serving), sort_keys=False))
        command = [
            str(Path(sys.executable).parent / "torch-workflow-archiver"),
            "--workflow-name",
            name,
            "--spec-file",
            str(stage / "workflow.yaml"),
            "--handler",
            str(stage / "pose_pipeline_workflow.py"),
            "--export-path",
            str(store),
            "--force",
        ]
        subprocess.run(command, check=True, env={**os.environ, "TMPDIR": str(stage)})
    return store / f"{name}.war"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m export.pose_pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--detector", default="person_detector", help="detector archive in the store")
    parser.add_argument("--pose", default="pose_resnet50", help="pose archive in the store")
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    args = parser.parse_args()
    print(f"wrote {write_workflow(args.store, args.detector, args.pose)}")


if __name__ == "__main__":
    main()
