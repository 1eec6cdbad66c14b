"""Day-2 operations: log formatting (``logs``), Prometheus metrics (``metrics``) and the
retention collector (``retention``). The API and the workers use them; they use only the
store and storage protocols."""
