"""Training: the loop, the method interface, losses, augmentations, crops, monitoring, DDP."""
