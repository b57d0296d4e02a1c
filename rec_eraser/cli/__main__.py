"""``python -m rec_eraser.cli``: the same as the ``rec-eraser`` command."""

from rec_eraser.cli import main

main()
