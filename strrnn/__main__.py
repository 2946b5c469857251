"""``python -m strrnn <command> ...``: the ``strrnn`` console script without installing it (:mod:`strrnn.cli`)."""

import sys

from strrnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
