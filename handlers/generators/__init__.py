"""Image-to-image generators (pix2pix U-Net, CycleGAN ResNet): the photo, translated."""
