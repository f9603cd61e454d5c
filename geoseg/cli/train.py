"""``geoseg train STORE -o RUN``: train IIC / AC or fit a k-means / Kanezaki baseline."""

from __future__ import annotations

import click

from geoseg.cli.options import check_train_config, device_opt, output_opt, overwrite_opt


@click.command("train")
@click.argument("store", metavar="STORE")
@output_opt
@click.option(
    "-c",
    "--config",
    type=click.Path(),
    default=None,
    help="YAML training config (see configs/); defaults apply when omitted.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set optim.lr=0.001 --set schedule.steps=500.",
)
@click.option(
    "--method",
    type=click.Choice(["iic", "ac", "kmeans", "kanezaki"]),
    default=None,
    help="Override the config's method.  [default: the config's; iic without a config]",
)
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT from its last.pt.")
@device_opt
@overwrite_opt
def cli(
    store: str,
    output: str,
    config: str | None,
    overrides: tuple[str, ...],
    method: str | None,
    resume: bool,
    device: str,
    overwrite: bool,
) -> None:
    """Train on the tile store STORE (from `geoseg tile`); write the run folder OUTPUT.

    OUTPUT gets config.yaml, last.pt, best.pt (lowest loss), metrics.csv and quicklook PNGs.
    """
    if not resume:
        check_train_config(config, overrides)
    from geoseg.train.loop import train

    best = train(
        store,
        output,
        config=config,
        overrides=overrides,
        method=method,
        resume=resume,
        device=device,
        overwrite=overwrite,
    )
    click.echo(str(best))
