"""Tests of the Textual workbench."""
