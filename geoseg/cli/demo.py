"""``geoseg demo``: the whole chain on the bundled SpaceNet Vegas sample, on CPU."""

from __future__ import annotations

import click

from geoseg.cli.options import device_opt, overwrite_opt


@click.command(name="demo")
@click.option(
    "-o", "--output", default="geoseg-demo", show_default=True, help="Folder for every output."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override the training config (configs/buildings.yaml, e.g. n_clusters=24).",
)
@device_opt
@overwrite_opt
def cli(output: str, overrides: tuple[str, ...], device: str, overwrite: bool) -> None:
    """Tile, train (k-means on the feature pyramid, no labels), fit a few-label building head
    from 16 labelled tiles, predict, vectorise and score against the real SpaceNet footprints;
    print a short table.
    """
    from geoseg.demo import demo

    result = demo(output, overwrite=overwrite, device=device, overrides=overrides)
    total, paths = result["score"], result["paths"]
    click.echo(
        "\nSpaceNet Vegas img2144 — few-label building head on unsupervised features, "
        f"from {result['mapping']['tiles']} labelled tiles (in-scene)"
    )
    click.echo(f"  {'TP':>4} {'FP':>4} {'FN':>4}  {'precision':>9} {'recall':>7} {'F1':>6}")
    click.echo(
        f"  {total['tp']:>4} {total['fp']:>4} {total['fn']:>4}  {total['precision']:>9.3f} "
        f"{total['recall']:>7.3f} {total['f1']:>6.3f}"
    )
    click.echo("  seconds: " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items()))
    click.echo(f"  reproduce: {result['score_command']}")
    for role in (
        "clusters",
        "building",
        "buildings",
        "quicklook",
        "checkpoint",
        "qgis-project",
        "report",
    ):
        if role in paths:
            click.echo(f"  {role:<16} {paths[role]}")
