"""Figures of a rollout for papers and slides: self-contained HTML, SVG, LaTeX and JSON (`rmx export`, key X)."""
