"""``python -m strrnn.train``: the training command line, kept at this address because users type it.

It is :mod:`strrnn.cli.train` (also ``strrnn train``); nothing else lives here.
"""

import sys

from strrnn.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
