"""The CLI's rough edges a new user hit (issue 13), each with the test that would have caught it."""

from __future__ import annotations

import importlib
import json
import logging

import click
import geopandas as gpd
import numpy as np
import pytest
import shapely

from geoseg.cli import COMMANDS, main

SCORING = "scoring"  # under tests/data


def geoseg(capsys, *args) -> tuple[int, str, str]:
    """Run the real entry point: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


# -- -v / -q anywhere ---------------------------------------------------------------------


def test_verbose_works_after_the_subcommand(capsys, caplog, tmp_path):
    def traceback_logged(*args) -> bool:
        caplog.clear()
        code, _, err = geoseg(capsys, "info", tmp_path / "missing.tif", *args)
        assert code == 2 and err.startswith("Error: INPUT:")
        return any(r.exc_info for r in caplog.records)

    assert traceback_logged("-v")  # -v logs the traceback, wherever it is typed
    assert not traceback_logged()


def test_quiet_works_after_the_subcommand(capsys, caplog, fixtures, tmp_path):
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        code, _, err = geoseg(
            capsys, "vectorize", fixtures["labels"], "-o", tmp_path / "a.gpkg", "-q"
        )
    assert code == 0 and not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "%|" not in err  # no progress bar either


# -- help: defaults, units, names ----------------------------------------------------------

#: options whose absence means "not used" (an optional input, output or filter), so there is
#: no default value to show
NOT_USED_WHEN_OMITTED = {
    "--json",
    "--csv",
    "--layers",
    "--confusion",
    "--labels",
    "--image",
    "--store",
    "--probabilities",
    "--pred-filter",
    "--truth-filter",
    "--merge",
    "--names",
    "--set",
    "--class",
    "--config",
}


def test_every_option_shows_its_default():
    missing = []
    for name, (module, _) in COMMANDS.items():
        command = importlib.import_module(module).cli
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_flag or param.required:
                continue
            if set(param.opts) & NOT_USED_WHEN_OMITTED or param.name == "help":
                continue
            if not (param.show_default or "default" in (param.help or "")):
                missing.append(f"{name} {param.opts[-1]}")
    assert not missing, f"options without a default in --help: {missing}"


def test_numeric_options_say_their_unit():
    units = ("pixel", "px", "metre", "m²", "m2", "fraction", "tiles", "iou", "seconds")
    unitless = {"--seed", "--head", "--max-tiles", "--iou", "--fill"}  # ids, counts, ratios
    missing = []
    for name, (module, _) in COMMANDS.items():
        for param in importlib.import_module(module).cli.params:
            numeric = isinstance(param.type, click.types._NumberParamTypeBase)
            if not isinstance(param, click.Option) or not numeric or set(param.opts) & unitless:
                continue
            text = f"{param.help} {param.metavar}".lower()
            if not any(unit in text for unit in units):
                missing.append(f"{name} {param.opts[-1]}")
    assert not missing, f"numeric options without a unit: {missing}"


def test_predict_help_shows_tile_defaults_and_batch_size(capsys):
    code, out, _ = geoseg(capsys, "predict", "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "--tile-size PX Tile edge in pixels. [default: 256 for tile; the training crop" in text
    assert "tile size / 8 for predict" in text
    assert "--batch-size INTEGER RANGE Tiles per forward pass" in text and "default: 8" in text


def test_info_names_its_argument_as_its_help_does(capsys, tmp_path):
    _, out, _ = geoseg(capsys, "info", "--help")
    assert "Usage: geoseg info [OPTIONS] INPUT" in out
    for missing in (tmp_path / "nope.tif", tmp_path / "nope.zarr"):
        code, _, err = geoseg(capsys, "info", missing)
        assert code == 2 and err.startswith("Error: INPUT: "), err


def test_bands_with_spaces_asks_for_commas(capsys, fixtures, tmp_path):
    code, _, err = geoseg(
        capsys,
        "tile",
        fixtures["rgbn"],
        "-o",
        tmp_path / "s.zarr",
        "--bands",
        "red",
        "green",
        "blue",
    )
    assert code == 2
    assert err.strip() == (
        "Error: --bands: separate bands with commas, not spaces: --bands red,green,blue"
    )
    assert not (tmp_path / "s.zarr").exists()


# -- one --json grammar ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["info", "score", "evaluate"])
def test_json_bare_is_stdout_and_with_a_file_writes_it(
    command, capsys, fixtures, data_dir, tmp_path
):
    args = {
        "info": [fixtures["rgbn"], "--no-stats"],
        "score": [data_dir / SCORING / "pred.geojson", data_dir / SCORING / "gt.geojson"],
        "evaluate": [fixtures["labels"], fixtures["labels"]],
    }[command]
    code, out, _ = geoseg(capsys, command, *args, "--json")
    assert code == 0 and isinstance(json.loads(out), dict)  # only JSON on stdout
    code, out, _ = geoseg(capsys, command, *args, "--json", tmp_path / "r.json")
    assert code == 0 and out.strip() and not out.lstrip().startswith("{")  # the table
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(
        geoseg(capsys, command, *args, "--json", "-")[1]
    )


# -- vectorize -------------------------------------------------------------------------------


def test_vectorize_without_class_warns_with_the_count(capsys, caplog, fixtures, tmp_path):
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        code, _, _ = geoseg(capsys, "vectorize", fixtures["labels"], "-o", tmp_path / "a.gpkg")
    n = len(gpd.read_file(tmp_path / "a.gpkg"))
    assert code == 0 and n > 0
    assert any(
        f"{n} polygons" in r.getMessage() and "--class" in r.getMessage() for r in caplog.records
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        geoseg(capsys, "vectorize", fixtures["labels"], "-o", tmp_path / "b.gpkg", "--class", "b=1")
    assert not caplog.records


# -- score -----------------------------------------------------------------------------------


def test_score_warns_when_pred_and_truth_look_swapped(capsys, caplog, data_dir):
    preds = data_dir / SCORING / "sample_preds_competition.csv"  # has Confidence
    truth = data_dir / SCORING / "sample_truth_competition.csv"
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        assert geoseg(capsys, "score", preds, truth)[0] == 0
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        assert geoseg(capsys, "score", truth, preds)[0] == 0
    assert any("swapped" in r.getMessage() for r in caplog.records)


def test_score_min_area_units(capsys, data_dir, tmp_path, fixtures):
    preds = data_dir / SCORING / "sample_preds_competition.csv"
    truth = data_dir / SCORING / "sample_truth_competition.csv"

    def total(*extra):
        code, out, err = geoseg(capsys, "score", *extra, "--json")
        assert code == 0, err
        return json.loads(out)["total"]

    bare, px = total(preds, truth, "--min-area", "20"), total(preds, truth, "--min-area", "20px")
    assert bare == px and px["area_unit"] == "px2"
    code, _, err = geoseg(capsys, "score", preds, truth, "--min-area", "20m2")
    assert code == 2 and "--min-area" in err and "20px" in err
    code, _, err = geoseg(capsys, "score", preds, truth, "--min-area", "twenty")
    assert code == 2 and "--min-area" in err

    pred, gt = data_dir / SCORING / "pred.geojson", data_dir / SCORING / "gt.geojson"
    code, _, err = geoseg(capsys, "score", pred, gt, "--min-area", "20px")
    assert code == 2 and "--image" in err and "m2" in err


def _raster_over(path, bounds, crs, res):
    import rasterio
    from rasterio.transform import from_origin

    width = int((bounds[2] - bounds[0]) / res)
    height = int((bounds[3] - bounds[1]) / res)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        crs=crs,
        transform=from_origin(bounds[0], bounds[3], res, res),
    ) as dst:
        dst.write(np.ones((1, height, width), np.uint8))
    return path


def test_score_image_clips_truth_and_converts_px(capsys, data_dir, tmp_path):
    gt = gpd.read_file(data_dir / SCORING / "gt.geojson")
    metric = gt.to_crs(gt.estimate_utm_crs())
    left, bottom, right, top = metric.total_bounds
    half = (left, bottom, (left + right) / 2, top)  # the image covers the west half
    image = _raster_over(tmp_path / "west.tif", half, metric.crs, 0.5)
    inside = metric[metric.intersects(shapely.box(*half))]
    pred = inside.copy()
    pred["geometry"] = inside.intersection(shapely.box(*half))
    pred.to_crs(gt.crs).to_file(tmp_path / "pred.geojson")

    def total(*extra):
        code, out, err = geoseg(
            capsys,
            "score",
            tmp_path / "pred.geojson",
            data_dir / SCORING / "gt.geojson",
            "--json",
            *extra,
        )
        assert code == 0, err
        return json.loads(out)["total"]

    plain = total("--min-area", "0")
    assert plain["fn"] >= len(metric) - len(inside)  # the east half counts as missed
    clipped = total("--min-area", "0", "--image", image)
    assert clipped["fn"] == 0 and clipped["fp"] == 0 and clipped["tp"] == len(pred)
    # 80 px of 0.5 m = 20 m²: the same as --min-area 20m2
    assert total("--min-area", "80px", "--image", image) == total(
        "--min-area", "20m2", "--image", image
    )


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ('a,2,"POLYGON ((0 0, 1 0",1', "line 3: PolygonWKT_Pix"),
        ('a,2,"POLYGON ((0 0, 5 0, 5 5, 0 0))",high', "line 3: Confidence 'high'"),
    ],
)
def test_score_names_the_bad_csv_row(row, expected, capsys, tmp_path):
    good = 'a,1,"POLYGON ((0 0, 9 0, 9 9, 0 0))",1'
    path = tmp_path / "pred.csv"
    path.write_text(f"ImageId,BuildingId,PolygonWKT_Pix,Confidence\n{good}\n{row}\n")
    code, _, err = geoseg(capsys, "score", path, path)
    assert code == 2 and err.startswith("Error: PRED: pred.csv ") and expected in err


# -- evaluate --------------------------------------------------------------------------------


def test_evaluate_refuses_a_trivially_perfect_mapping(capsys, fixtures, tmp_path):
    import rasterio
    from rasterio.features import shapes

    with rasterio.open(fixtures["labels"]) as src:
        lab, transform, crs = src.read(1), src.transform, src.crs
    buildings = [
        shapely.geometry.shape(g) for g, _ in shapes(lab, mask=lab == 1, transform=transform)
    ]
    polygons = tmp_path / "buildings.geojson"
    gpd.GeoDataFrame(geometry=buildings, crs=crs).to_file(polygons)
    code, _, err = geoseg(capsys, "evaluate", fixtures["labels"], polygons)
    assert code == 2 and "LABELS" in err and "trivial" in err and "--fill" in err
    code, out, _ = geoseg(capsys, "evaluate", fixtures["labels"], polygons, "--fill", "2", "--json")
    assert code == 0 and json.loads(out)["pixels"] == lab.size  # two classes: scored


# -- progress ---------------------------------------------------------------------------------


def test_kmeans_fitting_shows_progress(capsys, fixtures, tmp_path):
    store = tmp_path / "s.zarr"
    assert geoseg(capsys, "-q", "tile", fixtures["rgbn"], "-o", store, "--tile-size", "32")[0] == 0
    code, _, err = geoseg(
        capsys,
        "train",
        store,
        "-o",
        tmp_path / "run",
        "--method",
        "kmeans",
        "--set",
        "n_clusters=3",
        "--device",
        "cpu",
    )
    assert code == 0 and "k-means: tiles" in err and "tile/s" in err


def test_a_geos_error_names_the_vector_inputs():
    """shapely's GEOSException from a broken polygon: exit 2, the vector files named."""
    import shapely

    from geoseg.cli import _explain

    try:
        shapely.from_wkt("POLYGON ((0 0, 1 1, 0))")
    except Exception as exc:  # shapely.errors.GEOSException
        error = exc
    argv = ["score", "pred.geoparquet", "truth.csv", "--image", "scene.tif"]
    code, message = _explain(error, argv)
    assert code == 2 and message.startswith("pred.geoparquet, truth.csv: invalid geometry")
