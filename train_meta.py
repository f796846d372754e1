"""Train the graph metanetwork: ``python train_meta.py population ...`` then ``python train_meta.py train ...``.

The same commands as ``metaprune meta population`` / ``metaprune meta train`` (the population is
the set of small trained networks the metanetwork learns from); see ``--help``.
"""

import sys

from metaprune.cli import main

if __name__ == "__main__":
    main(["meta", *sys.argv[1:]])
