import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the tests import their SIP client helper (import mode: importlib)
    sys.path.insert(0, str(HERE))
