"""The "geoseg" Processing provider: the algorithms of :mod:`.algorithms` under one id."""

from qgis.core import QgsProcessingProvider

from . import command
from .algorithms import SPECS, GeosegAlgorithm


class GeosegProvider(QgsProcessingProvider):
    """Processing provider ``geoseg`` (algorithms ``geoseg:tile`` ... ``geoseg:score``).

    Args:
        command_line: the geoseg command to run (a string or argv list); default from the
            environment, the Processing setting, or PATH (see :mod:`.command`).
    """

    def __init__(self, command_line=None):
        super().__init__()
        self._command_line = command_line

    def id(self):
        return "geoseg"

    def name(self):
        return "geoseg"

    def longName(self):  # noqa: N802 (QGIS API)
        return "geoseg: unsupervised segmentation of satellite images"

    def load(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting
        except ImportError:  # no Processing GUI plugin: the environment / PATH still work
            return super().load()
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(
            Setting(self.name(), command.SETTING, "geoseg command (path or 'python -m geoseg')", "")
        )
        ProcessingConfig.readSettings()
        return super().load()

    def unload(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig
        except ImportError:
            return
        ProcessingConfig.removeSetting(command.SETTING)

    def loadAlgorithms(self):  # noqa: N802 (QGIS API)
        for name in SPECS:
            self.addAlgorithm(GeosegAlgorithm(name, self._command_line))
