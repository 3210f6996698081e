"""torchvision Keypoint R-CNN: boxes, 17 keypoints and a view class (front, back, side) per person."""
