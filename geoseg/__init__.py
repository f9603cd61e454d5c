"""geoseg: unsupervised segmentation of large multispectral satellite images.

Kept import-light on purpose: ``geoseg --help`` must not pay for torch, dask or geopandas.
"""

__version__ = "0.1.0"
