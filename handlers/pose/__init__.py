"""SimpleBaseline top-down pose (pose_resnet50/101/152): crops given boxes or the whole photo, 17 COCO keypoints."""
