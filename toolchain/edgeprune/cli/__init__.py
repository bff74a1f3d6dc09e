"""The ``edgeprune`` command line: a thin layer that parses, shows progress and prints errors.

Each subcommand lives in its own module and registers itself on ``app`` when imported.
"""

from edgeprune.cli import (  # noqa: F401  (imported for their commands)
    build,
    engine,
    export,
    inspect,
    models,
    profile,
    prune,
    quantize,
    report,
    targets,
    train,
)
from edgeprune.cli.app import app


def main() -> None:
    app()
