"""Prediction: the model as a function on tiles, blending on one grid, blockwise COG output."""
