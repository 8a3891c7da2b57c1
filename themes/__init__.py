"""Textual themes and heatmap palettes for rmx."""
