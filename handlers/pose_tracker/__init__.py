"""Pose tracking over video: the pose pipeline on each frame, then a tracker per sequence (OKS matching)."""
