"""The QGIS plugin object: adds the provider on load, removes it on unload."""

from qgis.core import QgsApplication

from .provider import GeosegProvider


class GeosegPlugin:
    """What ``classFactory`` returns; QGIS calls ``initProcessing``/``initGui``/``unload``."""

    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API)
        self.provider = GeosegProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API)
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
