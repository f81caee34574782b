"""``python -m overseer.cli`` — the same as the ``reaper`` script (the Windows task uses it)."""

from overseer.cli import main

main()
