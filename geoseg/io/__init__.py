"""Reading the world: rasters, band specs, labels, dataset layouts, the class palette."""
