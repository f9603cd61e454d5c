"""Few-label heads: a small classifier on frozen unsupervised features, stored in the checkpoint."""
