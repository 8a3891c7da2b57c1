"""rmx's terminal front: the Textual workbench and the `rmx` command line."""
