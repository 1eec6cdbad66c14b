"""The worker protocol, ``/worker/v1``: remote workers' routes (worker tokens only)."""
