"""DOPPLER: browser-native LLM inference.

Importing this package must stay cheap and numpy-free: it runs inside Pyodide, where only
pure Python is available. CPython-only tools (converter, oracles) live in
``doppler.convert`` and import numpy themselves.
"""

__version__ = "0.1.0"
