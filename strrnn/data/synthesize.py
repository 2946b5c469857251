"""``python -m strrnn.data.synthesize``: speak keyword lists with espeak-ng into the Speech Commands layout.

The implementation is :mod:`strrnn.data.synth`; from Python call ``strrnn.data.synthesize(...)`` — this module
object is callable as that function too, so importing it does not hide the function.
"""

from strrnn.callable_module import make_callable
from strrnn.data.synth import main, synthesize

make_callable(__name__, synthesize)

if __name__ == "__main__":
    main()
