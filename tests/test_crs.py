"""geoseg.io.crs: the one rule for the frame areas and IoU are measured in (score, vectorize)."""

from __future__ import annotations

import math

import geopandas as gpd
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
