"""Speed benchmark: dlexp's trainer against a plain DataLoader loop, per tutorial protocol.

Run ``python -m bench`` (``--help`` for options); results go to bench/RESULTS.md.
"""
