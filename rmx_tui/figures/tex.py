"""A span of a rollout as a LaTeX snippet: one \\colorbox per token, in the heatmap's colours (needs xcolor)."""

from __future__ import annotations

from rmx_tui.figures.marks import HEATMAP, colours, legend_stops, printable
from rmx_tui.figures.rollout_file import MARKED_SOURCES, FigureRollout
from themes.palettes import Heatmap

TEX_ESCAPES = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
               "_": r"\_", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", " ": r"\ "}


def tex_escape(text: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in text)


def _box(text: str, background: str, foreground: str) -> str:
    return (rf"\colorbox[HTML]{{{background[1:].upper()}}}{{\strut\textcolor[HTML]{{{foreground[1:].upper()}}}"
            rf"{{\texttt{{{text}}}}}}}")


def render_tex(rollout: FigureRollout) -> str:
    """The snippet: paste it into a document that loads xcolor; newlines in the rollout become \\newline."""
    parts: list[str] = []
    for token, source in zip(rollout.tokens, rollout.sources):
        background, foreground = colours(token)
        pieces = token.text.split("\n")
        for number, piece in enumerate(pieces):
            if piece or len(pieces) == 1:
                box = _box(tex_escape(printable(piece)) or r"\ ", background, foreground)
                if token.cls == "reranked":
                    box = rf"\underline{{{box}}}"
                elif token.cls == "shifted":
                    box = rf"\underline{{\underline{{{box}}}}}"
                if source in MARKED_SOURCES:
                    box = rf"{{\setlength{{\fboxsep}}{{0pt}}\fcolorbox[HTML]{{E8175D}}{{FFFFFF}}{{{box}}}}}"
                parts.append(box)
            if number < len(pieces) - 1:
                parts.append(r"\newline" + "\n")
    legend = " ".join(_box(f"{low:.1f}", colour, Heatmap.readable_foreground(colour)) for colour, low in legend_stops())
    return ("% rmx export: " + rollout.title.replace("\n", " ") + "\n"
            "% needs \\usepackage{xcolor}; \\setlength{\\fboxsep}{1pt} packs the boxes tightly.\n"
            "{\\setlength{\\fboxsep}{1pt}\\sloppy\n" + "\\allowbreak{}".join(parts) + "\n}\n"
            f"% legend: entropy in nats (saturating at {HEATMAP.ceiling:g}); underline: teacher reranked, double: shifted;"
            " red frame: forced\n% " + legend + "\n")
