"""The `brainscan` command line: one group, commands registered from one module per area."""

from __future__ import annotations

import click

from brainscan import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="brainscan")
def main() -> None:
    """Brain MRI tumour screening: train and evaluate the model, score images, run the service."""


def _register() -> None:
    from brainscan.cli import db, labels, model, service, train, web

    for module in (train, model, service, db, web, labels):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
