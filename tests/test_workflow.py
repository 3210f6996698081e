"""The pose pipeline as a TorchServe workflow (.war): registered on the server, it finds the same people."""

import numpy as np

from export.pose_pipeline import write_workflow
from tests.fixtures.serving import encode, post
from tests.test_people_serving import PHOTOS, check_boxes


def test_workflow_answers_like_the_single_handler_pipeline(server, http, model_store):
    write_workflow(model_store, detector="detector_oracle", pose="pose_oracle", name="oracle_workflow")
    server.register_workflow("oracle_workflow")
    photo = PHOTOS[2]
    painted = photo.paint(seed=7)
    data = encode(painted.image, "PNG")
    response = http.post(
        f"{server.inference_url}/wfpredict/oracle_workflow",
        data=data,
        headers={"Content-Type": "image/png"},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    workflow = response.json()
    pipeline = post(server, http, "pipeline_oracle", data).json()
    check_boxes(pipeline, photo)
    # The workflow's last node is the pose model: same people and keypoints, scored by mean joint score.
    by_box = {tuple(person["box"]): person for person in workflow["people"]}
    assert set(by_box) == {tuple(person["box"]) for person in pipeline["people"]}
    for person in pipeline["people"]:
        assert np.allclose(by_box[tuple(person["box"])]["keypoints"], person["keypoints"], atol=0.02)
