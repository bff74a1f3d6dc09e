"""``edgeprune models``: the architecture names ``--arch`` takes."""

from __future__ import annotations

import json

import typer

from edgeprune.cli.app import command, console


@command("models")
def models_cmd(
    pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'tv:mobilenet*'."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead."),
) -> None:
    """List the architectures `train --arch` builds and `--arch` loads plain state_dicts into:
    edgeprune's zoo, then tv:NAME for every torchvision classification builder (random init,
    nothing is downloaded)."""
    import fnmatch

    from edgeprune.errors import EdgepruneError
    from edgeprune.models import list_architectures

    names = [n for n in list_architectures() if fnmatch.fnmatch(n, pattern)]
    if not names:
        raise EdgepruneError(f"no architecture matches {pattern!r}; run `edgeprune models` for "
                             "all names")
    if as_json:
        console.print_json(json.dumps(names))
        return
    for name in names:
        console.print(name, highlight=False)
