"""Getting verified bytes: OPFS (content-addressed, persistent) first, then HTTP sources.

The bulk bytes live in JS (``app/storage/``: OPFS store, streaming verified fetcher); this
package decides what to fetch, in what order, how much space it may take, and reports
progress. ``errors``, ``eviction``, ``progress`` and ``space`` are pure Python (tested under
CPython); ``http``, ``tier`` and ``cache`` cross into JS and run only in Pyodide.
"""
