"""Person segmentation (torchvision DeepLabV3 / LR-ASPP): masks, cut-outs and new backgrounds."""
