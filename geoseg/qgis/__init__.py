"""geoseg inside QGIS: a Processing provider whose algorithms run the installed ``geoseg``.

The algorithms call the ``geoseg`` command line in a subprocess instead of importing geoseg,
so the plugin runs on QGIS's own Python (which has no torch) and stays independent of
geoseg's internals: the CLI is the contract. Install: README, "geoseg inside QGIS".

This file is also the QGIS plugin entry point (``classFactory``), so the folder can be linked
into QGIS's plugin directory as it is. Only relative imports are used for that reason.
"""


def classFactory(iface):  # noqa: N802 (the name QGIS looks for)
    """QGIS plugin entry point: register the geoseg Processing provider."""
    from .plugin import GeosegPlugin

    return GeosegPlugin(iface)
