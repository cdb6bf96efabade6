"""Partner clients: build a request for an operation, send it, turn the answer into a result.

`clients.py` maps each Send operation to its partner module; `outcomes.py` holds the one
retry decision; `http.py` is the single place HTTP calls go through.
"""
