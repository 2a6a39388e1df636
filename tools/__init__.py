"""Build-time and test-time tools that run under CPython only (never shipped to the browser)."""
