"""The ``vidq`` command line, one module per concern; each command parses its flags, loads
the settings, calls one builder of ``vidq.compose`` and runs what it returns.

``main.py`` assembles the command (``vidq.console`` runs it); ``client.py`` and ``admin.py``
are the commands that speak to a server over HTTP with the SDK alone, so this package's
``__init__`` imports nothing: the SDK-only install imports those two without the server.
"""
