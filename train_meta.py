"""Train the graph metanetwork: ``python train_meta.py zoo ...`` then ``python train_meta.py train ...``.

The same commands as ``metaprune meta zoo`` / ``metaprune meta train``; see ``--help``.
"""

import sys

from metaprune.cli import main

if __name__ == "__main__":
    main(["meta", *sys.argv[1:]])
