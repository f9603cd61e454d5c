"""Object-level refinement of per-pixel class probabilities (superpixels)."""
