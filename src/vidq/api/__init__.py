"""The HTTP API: ``vidq.api.app.create_app(settings, store, storage)``.

The package imports nothing itself, so a command that needs one of its modules (the
``vidq token`` commands use ``auth``) does not load the web framework and every route."""
