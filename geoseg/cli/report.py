"""``geoseg report DIR``: one self-contained HTML page (wraps :func:`geoseg.report.page.report`)."""

from __future__ import annotations

import click

from geoseg.cli.options import overwrite_opt


@click.command(name="report")
@click.argument("directory", metavar="DIR", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="HTML file to write.  [default: DIR/report.html]",
)
@click.option(
    "--image",
    type=click.Path(),
    default=None,
    help="Source image drawn under classes and errors.  [default: the image of the folder's "
    "tile store, if any]",
)
@overwrite_opt
def cli(directory: str, output: str | None, image: str | None, overwrite: bool) -> None:
    """Write an HTML page of a run or output folder, every image embedded.

    It shows the image, the clusters and classes (titled, with legend and scale bar), the
    score with its error map (true positives, false positives, misses) when score layers are
    present, and the training curves of metrics.csv. Open it in any browser, offline.

    Example: geoseg report geoseg-demo/
    """
    from geoseg.report.page import report

    path = report(directory, output, image=image, overwrite=overwrite)
    click.echo(str(path))
