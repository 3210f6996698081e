"""BlazePose (MediaPipe, converted from TFLite): a person detector, then 33 landmarks on each person's rotated crop."""
