"""``python -m strrnn.data.synthesize`` -- see :mod:`strrnn.data.synth` (use ``strrnn.data.synthesize(...)``
from Python: the package attribute is the function)."""

from strrnn.data.synth import main

if __name__ == "__main__":
    main()
