"""Shared vision helpers of the families: geometry, heatmaps, keypoints, people and drawing."""
