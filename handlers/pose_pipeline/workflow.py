"""Function nodes of the pose pipeline as a TorchServe workflow (detector, then pose, as separate models).

DAG (export/pose_pipeline.py): pre_processing -> [detector, to_pose_request];
detector -> [to_pose_request]; to_pose_request -> [pose]. Workflow nodes pass each other
bytes; both models read the JSON these nodes send like any JSON request. The single-handler
pipeline (pipeline_handler.py) is the default; docs/benchmarks.md compares the two.

Self-contained: a workflow archive carries one handler file and no packages.
"""

import base64
import json


def pre_processing(data, context):
    """The request's image (raw body, form field ``data``, or JSON ``image``) as JSON for the next nodes.

    Options are not forwarded: the workflow answers with each model's defaults.
    """
    if data is None:
        return None
    images = []
    for row in data:
        body = row.get("data") or row.get("body")
        images.append(body["image"] if isinstance(body, dict) else base64.b64encode(bytes(body)).decode())
    return [{"image": image} for image in images]


def to_pose_request(data, context):
    """Join each request's image with the people the detector found: a pose request with their boxes."""
    if data is None:
        return None
    requests = []
    for row in data:
        image = json.loads(bytes(row["pre_processing"]))["image"]
        people = json.loads(bytes(row["detector"]))["people"]
        requests.append({"image": image, "boxes": [person["box"] for person in people]})
    return requests
