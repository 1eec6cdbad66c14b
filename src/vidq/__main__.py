"""``python -m vidq`` is the ``vidq`` command."""

from vidq.console import main

main()
