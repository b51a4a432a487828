"""``python -m tvmech.figures.readme``: ``python -m tvmech.pipeline.readme`` under its former name."""

import sys

from tvmech.pipeline.readme import main

if __name__ == "__main__":
    sys.exit(main())
