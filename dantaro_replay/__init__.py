"""Offline Upbit quotation API (simulated or recorded market, REST and WebSocket) for tests, the offline demo and benchmarks.

A package of its own, beside the code location: ``dantaro_assets`` never imports it except to start
it as a subprocess (``dantaro dev`` offline, ``dantaro replay``), so Dagster's code server does not load it.
"""
