"""``python -m vidq`` is the ``vidq`` command."""

from vidq.cli import main

main()
