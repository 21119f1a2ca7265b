"""``python -m perdure``: the command line."""

from .cli.main import main

main()
