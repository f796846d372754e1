"""``python -m metaprune.cli``: the ``metaprune`` command."""

from metaprune.cli import main

main()
