"""The geoseg commands as Processing algorithms, declared as tables of parameters.

Each algorithm is a list of :class:`Arg` rows (QGIS parameter ↔ CLI argument) turned into a
:class:`GeosegAlgorithm`; running it builds the ``geoseg <command> ...`` argument list and
runs it (``command.run``). Adding an option to an algorithm is adding one row here.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from . import command

DEVICES = ["auto", "cpu", "cuda"]


class Arg:
    """One parameter: its QGIS name and kind, the CLI flag (None = positional), and options.

    Kinds: raster, file, folder (inputs); string, int, float, bool, enum (values);
    folder_out, file_out (destinations). ``repeat`` splits a string on ';' into one flag each
    (``--class a=1;b=2`` → ``--class a=1 --class b=2``); an enum's option ``"(default)"``
    passes nothing.
    """

    def __init__(
        self,
        name,
        kind,
        label,
        flag=None,
        *,
        default=None,
        optional=False,
        options=(),
        ext="",
        file_filter="",
        minimum=None,
        repeat=False,
        help="",
    ):
        self.name, self.kind, self.label, self.flag = name, kind, label, flag
        self.default, self.optional, self.options = default, optional, list(options)
        self.ext, self.file_filter, self.minimum = ext, file_filter, minimum
        self.repeat, self.help = repeat, help

    def parameter(self):
        """The QgsProcessingParameter of this row."""
        kind, name, label, opt = self.kind, self.name, self.label, self.optional
        if kind == "raster":
            param = QgsProcessingParameterRasterLayer(name, label, optional=opt)
        elif kind in ("file", "folder"):
            behavior = (
                QgsProcessingParameterFile.Folder
                if kind == "folder"
                else QgsProcessingParameterFile.File
            )
            param = QgsProcessingParameterFile(name, label, behavior, self.ext, optional=opt)
        elif kind == "string":
            param = QgsProcessingParameterString(name, label, self.default, optional=opt)
        elif kind in ("int", "float"):
            number = (
                QgsProcessingParameterNumber.Integer
                if kind == "int"
                else QgsProcessingParameterNumber.Double
            )
            param = QgsProcessingParameterNumber(name, label, number, self.default, opt)
            if self.minimum is not None:
                param.setMinimum(self.minimum)
        elif kind == "bool":
            param = QgsProcessingParameterBoolean(name, label, bool(self.default), opt)
        elif kind == "enum":
            param = QgsProcessingParameterEnum(name, label, self.options, False, 0, opt)
        elif kind == "folder_out":
            param = QgsProcessingParameterFolderDestination(name, label, optional=opt)
        elif kind == "file_out":
            param = QgsProcessingParameterFileDestination(
                name, label, self.file_filter, optional=opt
            )
        else:
            raise ValueError(f"unknown parameter kind {kind!r}")
        if self.help:
            param.setHelp(self.help)
        return param

    def cli(self, value):
        """The CLI arguments of this row's ``value`` (empty when unset)."""
        if value in (None, "", False):
            return []
        if value is True:
            return [self.flag]
        values = [v.strip() for v in str(value).split(";") if v.strip()] if self.repeat else [value]
        if self.flag is None:
            return [str(v) for v in values]
        return [x for v in values for x in (self.flag, str(v))]

    def value(self, alg, parameters, context):
        kind, name = self.kind, self.name
        if kind not in ("bool", "enum") and parameters.get(name) in (None, ""):
            return None
        if kind == "raster":
            layer = alg.parameterAsRasterLayer(parameters, name, context)
            return layer.source() if layer else None
        if kind in ("file", "folder"):
            return alg.parameterAsFile(parameters, name, context) or None
        if kind == "string":
            return alg.parameterAsString(parameters, name, context).strip() or None
        if kind == "int":
            return alg.parameterAsInt(parameters, name, context)
        if kind == "float":
            return alg.parameterAsDouble(parameters, name, context)
        if kind == "bool":
            return alg.parameterAsBool(parameters, name, context)
        if kind == "enum":
            chosen = self.options[alg.parameterAsEnum(parameters, name, context)]
            return None if chosen == "(default)" else chosen
        return alg.parameterAsFileOutput(parameters, name, context) or None


OVERWRITE = Arg("OVERWRITE", "bool", "Replace existing outputs", "--overwrite", default=True)
DEVICE = Arg("DEVICE", "enum", "Torch device", "--device", options=DEVICES)
POLYGONS = [
    Arg(
        "MIN_AREA",
        "float",
        "Drop polygons smaller than (m²)",
        "--min-area",
        default=0.0,
        minimum=0.0,
    ),
    Arg(
        "SIMPLIFY", "float", "Simplification tolerance (m)", "--simplify", default=0.0, minimum=0.0
    ),
    Arg("FILL_HOLES", "bool", "Fill holes in the polygons", "--fill-holes", default=False),
    Arg("REGULARIZE", "bool", "Square off footprints", "--regularize", default=False),
]
GPKG = "GeoPackage (*.gpkg);;GeoJSON (*.geojson);;FlatGeobuf (*.fgb)"

#: algorithm name → (display name, CLI command, arguments, one-line help)
SPECS = {
    "tile": (
        "Tile rasters into a store",
        "tile",
        [
            Arg("INPUT", "raster", "Input raster"),
            Arg("OUTPUT", "folder_out", "Tile store (.zarr folder)", "-o"),
            Arg(
                "BANDS",
                "string",
                "Bands, comma separated (e.g. red,green,blue,nir)",
                "--bands",
                optional=True,
            ),
            Arg("TILE_SIZE", "int", "Tile size (px)", "--tile-size", optional=True, minimum=16),
            Arg("OVERLAP", "int", "Overlap (px)", "--overlap", optional=True, minimum=0),
            Arg(
                "LABELS", "file", "Labels (vector file or label raster)", "--labels", optional=True
            ),
            Arg(
                "MIN_VALID",
                "float",
                "Minimum valid fraction of a tile",
                "--min-valid",
                default=0.0,
                minimum=0.0,
            ),
            OVERWRITE,
        ],
        "Cut a raster into overlapping tiles of a Zarr store with per-band statistics.",
    ),
    "train": (
        "Train a model",
        "train",
        [
            Arg("STORE", "folder", "Tile store (from 'Tile rasters')"),
            Arg("OUTPUT", "folder_out", "Run folder", "-o"),
            Arg("CONFIG", "file", "Training config (YAML)", "-c", optional=True, ext="yaml"),
            Arg(
                "METHOD",
                "enum",
                "Method",
                "--method",
                options=["(default)", "iic", "ac", "kmeans", "kanezaki"],
            ),
            Arg(
                "SET",
                "string",
                "Config overrides KEY=VALUE, separated by ';'",
                "--set",
                optional=True,
                repeat=True,
            ),
            Arg("RESUME", "bool", "Resume the run from its last.pt", "--resume", default=False),
            DEVICE,
            OVERWRITE,
        ],
        "Train IIC / AC or fit k-means / Kanezaki on a tile store; writes best.pt.",
    ),
    "map": (
        "Name clusters from labels",
        "map",
        [
            Arg("CHECKPOINT", "file", "Checkpoint (best.pt)", ext="pt"),
            Arg("LABELS", "file", "Label polygons or label raster", "--labels", optional=True),
            Arg("IMAGE", "raster", "Raster the labels annotate", "--image", optional=True),
            Arg(
                "STORE",
                "folder",
                "Labelled tile store (instead of labels + image)",
                "--store",
                optional=True,
            ),
            Arg("MAX_TILES", "int", "Label budget (tiles)", "--max-tiles", default=50, minimum=1),
            Arg("METHOD", "enum", "Mapping", "--method", options=["majority", "hungarian"]),
            Arg("NAMES", "string", "Class names, e.g. 1=building,2=road", "--names", optional=True),
            Arg("COLUMN", "string", "Class column of vector labels", "--column", optional=True),
            Arg(
                "OUTPUT",
                "file_out",
                "Mapped checkpoint (default: update in place)",
                "-o",
                optional=True,
                file_filter="Checkpoint (*.pt)",
            ),
            DEVICE,
            OVERWRITE,
        ],
        "Learn which clusters are which class from a few labelled tiles; stored in the model.",
    ),
    "predict": (
        "Predict a raster",
        "predict",
        [
            Arg("RASTER", "raster", "Input raster"),
            Arg("MODEL", "file", "Checkpoint (best.pt) or run folder", "-m", ext="pt"),
            Arg("OUTPUT", "folder_out", "Output folder", "-o"),
            Arg(
                "TILE_SIZE",
                "int",
                "Tile size (px; default: the training crop)",
                "--tile-size",
                optional=True,
                minimum=16,
            ),
            Arg(
                "OVERLAP",
                "int",
                "Overlap (px; default: tile size / 8)",
                "--overlap",
                optional=True,
                minimum=0,
            ),
            Arg("BATCH_SIZE", "int", "Tiles per batch", "--batch-size", default=8, minimum=1),
            DEVICE,
            Arg("TTA", "bool", "Test-time augmentation (8x slower)", "--tta", default=False),
            Arg(
                "PROBABILITIES",
                "bool",
                "Also write probabilities",
                "--probabilities",
                default=False,
            ),
            Arg(
                "CLASS",
                "string",
                "Classes NAME=ID,ID separated by ';' (e.g. building=3,17)",
                "--class",
                optional=True,
                repeat=True,
            ),
            *POLYGONS,
            Arg(
                "QGIS_PROJECT",
                "bool",
                "Also write a QGIS project (.qgz) of the outputs",
                "--qgis-project",
                default=False,
            ),
            OVERWRITE,
        ],
        "Segment a raster with a trained model: cluster COG, class COGs and polygons.",
    ),
    "vectorize": (
        "Vectorize a class raster",
        "vectorize",
        [
            Arg("RASTER", "raster", "Class or cluster raster"),
            Arg("OUTPUT", "file_out", "Polygons", "-o", file_filter=GPKG),
            Arg(
                "CLASS",
                "string",
                "Classes NAME=VALUE separated by ';' (default: every value)",
                "--class",
                optional=True,
                repeat=True,
            ),
            Arg(
                "PROBABILITIES",
                "file",
                "Probability raster (polygon score)",
                "--probabilities",
                optional=True,
            ),
            *POLYGONS,
            OVERWRITE,
        ],
        "Polygonise a class raster into GIS polygons, merged across block borders.",
    ),
    "score": (
        "Score building polygons",
        "score",
        [
            Arg("PRED", "file", "Predicted polygons (vector file or SpaceNet CSV)"),
            Arg("TRUTH", "file", "True footprints (vector file or SpaceNet CSV)"),
            Arg(
                "IOU",
                "float",
                "IoU threshold (a match needs more)",
                "--iou",
                default=0.5,
                minimum=0.0,
            ),
            Arg(
                "MIN_AREA",
                "string",
                "Minimum area (e.g. 20px or 20m2)",
                "--min-area",
                optional=True,
            ),
            Arg(
                "PRED_FILTER",
                "string",
                "Only proposals where COLUMN=VALUE",
                "--pred-filter",
                optional=True,
            ),
            Arg(
                "TRUTH_FILTER",
                "string",
                "Only footprints where COLUMN=VALUE",
                "--truth-filter",
                optional=True,
            ),
            Arg(
                "LAYERS",
                "file_out",
                "Error layers (tp, fp, fn)",
                "--layers",
                optional=True,
                file_filter="GeoPackage (*.gpkg)",
            ),
            OVERWRITE,
        ],
        "SpaceNet precision, recall and F1 of building polygons against footprints.",
    ),
}

SCORE_NUMBERS = ("tp", "fp", "fn", "precision", "recall", "f1")


class GeosegAlgorithm(QgsProcessingAlgorithm):
    """A geoseg command as a Processing algorithm (one per entry of :data:`SPECS`)."""

    def __init__(self, name, command_line=None):
        super().__init__()
        self._name = name
        self._title, self._command, self._args, self._help = SPECS[name]
        self._command_line = command_line

    def createInstance(self):  # noqa: N802 (QGIS API)
        return GeosegAlgorithm(self._name, self._command_line)

    def name(self):
        return self._name

    def displayName(self):  # noqa: N802 (QGIS API)
        return self._title

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        return f"{self._help}\n\nRuns: geoseg {self._command} (see geoseg {self._command} --help)"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        for arg in self._args:
            self.addParameter(arg.parameter())
        if self._name == "train":
            self.addOutput(QgsProcessingOutputFile("CHECKPOINT", "Checkpoint (best.pt)"))
        elif self._name == "map":
            self.addOutput(QgsProcessingOutputFile("CHECKPOINT", "Mapped checkpoint"))
        elif self._name == "predict":
            self.addOutput(QgsProcessingOutputRasterLayer("CLUSTERS", "Clusters"))
            self.addOutput(QgsProcessingOutputFolder("FOLDER", "Output folder"))
        elif self._name == "vectorize":
            self.addOutput(QgsProcessingOutputVectorLayer("POLYGONS", "Polygons"))
        elif self._name == "score":
            for key in SCORE_NUMBERS:
                self.addOutput(QgsProcessingOutputNumber(key.upper(), key))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        argv = [self._command]
        values = {}
        for arg in self._args:
            values[arg.name] = arg.value(self, parameters, context)
            if arg.kind == "folder_out" and values[arg.name]:
                os.makedirs(os.path.dirname(values[arg.name]) or ".", exist_ok=True)
            if self._name == "tile" and arg.name == "OUTPUT":
                # a tile store is a *.zarr folder; temporary outputs come without the suffix
                store = values[arg.name].rstrip("/")
                values[arg.name] = store if store.endswith(".zarr") else f"{store}.zarr"
            argv += arg.cli(values[arg.name])
        scratch = None
        if self._name == "score":  # the numbers come back through a JSON file
            scratch = str(Path(tempfile.mkdtemp(prefix="geoseg_score_")) / "score.json")
            argv += ["--json", scratch]
        lines = command.run(command.resolve_command(self._command_line), argv, feedback)
        return self._outputs(values, lines, scratch, context)

    def _outputs(self, values, lines, scratch, context):
        out = {k: v for k, v in values.items() if k in ("OUTPUT", "LAYERS") and v}
        if self._name == "train":
            out["CHECKPOINT"] = str(Path(values["OUTPUT"]) / "best.pt")
        elif self._name == "map":
            out["CHECKPOINT"] = values.get("OUTPUT") or values["CHECKPOINT"]
        elif self._name == "predict":
            written = dict(line.split("\t", 1) for line in lines if "\t" in line)
            out.update({_key(role): path for role, path in written.items()})
            out["FOLDER"] = values["OUTPUT"]
            for role, path in written.items():
                if not path.endswith((".tif", ".gpkg")):
                    continue
                details = QgsProcessingContext.LayerDetails(role, context.project(), role)
                context.addLayerToLoadOnCompletion(path, details)
        elif self._name == "vectorize":
            out["POLYGONS"] = values["OUTPUT"]
        elif self._name == "score":
            total = json.loads(Path(scratch).read_text())["total"]
            shutil.rmtree(Path(scratch).parent, ignore_errors=True)
            out.update({key.upper(): total[key] for key in SCORE_NUMBERS})
        return out


def _key(role):
    """predict's output role as a Processing output name (``building:vector`` → BUILDING_VECTOR)."""
    return role.upper().replace(":", "_").replace("-", "_")
