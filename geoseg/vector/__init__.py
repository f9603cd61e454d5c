"""Vector outputs: polygons from class rasters, footprint clean-up, formats, QGIS styles."""
