"""geoseg.io.crs: the one rule for the frame areas and IoU are measured in (score, vectorize)."""

from __future__ import annotations

import math

import geopandas as gpd
import pytest
import shapely
from rasterio.crs import CRS as RioCRS

from geoseg.io.crs import metric_crs


def test_metre_projections_are_kept_degrees_and_feet_go_to_utm():
    assert metric_crs("EPSG:32611", (6e5, 4e6, 6.1e5, 4.01e6)) is None
    assert metric_crs(RioCRS.from_epsg(26986), (2e5, 9e5, 2.1e5, 9.1e5)) is None
    # Las Vegas in degrees (rasterio CRS, as vectorize passes it): UTM 11 N
    assert metric_crs(RioCRS.from_epsg(4326), (-115.31, 36.16, -115.30, 36.17)) == "EPSG:32611"
    # Southern hemisphere: Zanzibar, UTM 37 S
    assert metric_crs("EPSG:4326", (39.19, -6.17, 39.20, -6.16)) == "EPSG:32737"
    # New York State Plane in US feet (geopandas' pyproj CRS, as score passes it): UTM 18 N
    ft = gpd.GeoSeries([shapely.Point(-73.98, 40.75)], crs=4326).to_crs(2263)
    x, y = ft.iloc[0].x, ft.iloc[0].y
    assert metric_crs(ft.crs, (x - 100, y - 100, x + 100, y + 100)) == "EPSG:32618"


def test_no_crs_or_no_data_leaves_the_frame_alone():
    assert metric_crs(None, (0, 0, 10, 10)) is None
    assert metric_crs("EPSG:4326", (math.nan,) * 4) is None


def test_a_square_in_feet_measures_its_metres():
    """100 m × 100 m drawn in State Plane feet is 1 ha once measured in the chosen frame."""
    square = gpd.GeoSeries([shapely.box(5.8e5, 4.5e6, 5.801e5, 4.5001e6)], crs=32618).to_crs(2263)
    target = metric_crs(square.crs, square.total_bounds)
    assert abs(square.to_crs(target).area.iloc[0] - 1e4) < 1.0


def test_web_mercator_metres_are_not_ground_metres():
    """EPSG:3857 (web map exports) inflates areas by 1/cos²(lat): measured in UTM instead, a
    100 m square at 52.5° N is 1 ha again (2.7 ha in 3857 units)."""
    square = gpd.GeoSeries([shapely.box(3.9e5, 5.817e6, 3.901e5, 5.8171e6)], crs=32633)
    web = square.to_crs(3857)
    assert web.area.iloc[0] > 2.5e4  # the trap: 3857 "metres"
    target = metric_crs(web.crs, web.total_bounds)
    assert target == "EPSG:32633"
    assert abs(web.to_crs(target).area.iloc[0] - 1e4) < 1.0
    assert metric_crs("EPSG:3395", (1e6, 6e6, 1.001e6, 6.001e6)) is not None
    # transverse and oblique Mercator grids are kept as they are
    assert metric_crs("EPSG:2949", (3e5, 5e6, 3.01e5, 5.01e6)) is None


def test_report_scale_bar_measures_ground_metres_in_web_mercator():
    """The report's scale bar: a 1-unit 3857 pixel at 52.4° N is 0.61 m on the ground, a
    0.5 m UTM pixel stays 0.5 m, a degree-based pixel is measured on the ellipsoid."""
    from affine import Affine

    from geoseg.report.panels import metres_per_px

    lat = math.degrees(2 * math.atan(math.exp(6.9e6 / 6378137.0)) - math.pi / 2)
    web = metres_per_px(RioCRS.from_epsg(3857), Affine(1, 0, 1.5e6, 0, -1, 6.9e6), 100, 100)
    # (the ellipsoid adds 0.2 % to the spherical cos(latitude) at this latitude)
    assert web == pytest.approx(math.cos(math.radians(lat)), rel=4e-3)
    utm = metres_per_px(RioCRS.from_epsg(32611), Affine(0.5, 0, 6e5, 0, -0.5, 4e6), 100, 100)
    assert utm == 0.5
    deg = metres_per_px(RioCRS.from_epsg(4326), Affine(1e-5, 0, -115.3, 0, -1e-5, 36.2), 10, 10)
    assert deg == pytest.approx(0.9, abs=0.01)


@pytest.mark.parametrize(
    "epsg, bounds",
    [
        (32611, (6e5, 4e6, 6.1e5, 4.01e6)),  # UTM
        (26986, (2e5, 9e5, 2.1e5, 9.1e5)),  # Lambert conformal conic, metres
        (2154, (6.5e5, 6.86e6, 6.6e5, 6.87e6)),  # Lambert 93
        (27700, (5.3e5, 1.8e5, 5.4e5, 1.9e5)),  # British National Grid (transverse Mercator)
        (3857, (1.49e6, 6.89e6, 1.5e6, 6.9e6)),  # Web Mercator: not ground metres
        (3395, (1.49e6, 6.8e6, 1.5e6, 6.81e6)),  # World Mercator: not ground metres
        (2263, (9.8e5, 2.1e5, 9.9e5, 2.2e5)),  # US feet
        (4326, (-115.31, 36.16, -115.30, 36.17)),  # degrees
    ],
)
def test_rasterio_shortcut_gives_the_pyproj_answer(epsg, bounds):
    """A rasterio CRS projected in metres is answered without importing pyproj; the answer
    must be the one the full rule gives for the same CRS as pyproj reads it."""
    from pyproj import CRS as ProjCRS

    assert metric_crs(RioCRS.from_epsg(epsg), bounds) == metric_crs(ProjCRS.from_epsg(epsg), bounds)
