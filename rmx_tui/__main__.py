"""`python -m rmx_tui`: the `rmx` command, for child processes that must run this interpreter's rmx."""

from rmx_tui.cli import main

main()
