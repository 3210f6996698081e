"""Detect then pose in one worker (detector + SimpleBaseline), and the TorchServe workflow alternative."""
