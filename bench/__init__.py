"""mcpfs benchmarks: ``python -m bench`` (see bench/README.md).

Timings live here, never in tests/. Each module measures one thing side by side with a peer
and returns plain dicts; ``__main__`` runs them in one go, ``report`` prints and saves them.
"""
