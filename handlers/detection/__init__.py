"""Person detection (torchvision Faster R-CNN): person boxes and scores; the steps the pipelines reuse."""
