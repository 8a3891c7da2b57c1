"""Heatmap palettes: perceptual, colour-blind-safe ramps that map entropy to a colour."""

from __future__ import annotations

from dataclasses import dataclass

# Stops sampled from matplotlib's viridis and cividis (CC0) and a high-contrast ramp.
PALETTES: dict[str, tuple[str, ...]] = {
    "viridis": ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
                "#b5de2b", "#fde725"),
    "cividis": ("#00224e", "#123570", "#3b496c", "#575d6d", "#707173", "#8a8779", "#a69d75", "#c4b56c",
                "#e4cf5b", "#fee838"),
    "high-contrast": ("#000000", "#1a1a66", "#0000cc", "#0066ff", "#00cccc", "#00ff66", "#ccff00",
                      "#ffcc00", "#ff6600", "#ffffff"),
}


@dataclass(frozen=True)
class Heatmap:
    """Maps an entropy in nats onto a palette stop, saturating at `ceiling`."""

    palette: tuple[str, ...]
    """Colour stops from low to high entropy."""
    ceiling: float = 4.0
    """Entropy (nats) that maps to the last stop."""

    def __post_init__(self) -> None:
        if len(self.palette) < 2:
            raise ValueError("a palette needs at least two stops")
        if self.ceiling <= 0:
            raise ValueError("the heatmap ceiling must be positive")

    def index(self, entropy: float) -> int:
        fraction = min(max(entropy / self.ceiling, 0.0), 1.0)
        return min(int(fraction * len(self.palette)), len(self.palette) - 1)

    def colour(self, entropy: float) -> str:
        return self.palette[self.index(entropy)]

    @staticmethod
    def readable_foreground(background: str) -> str:
        """Black or white, whichever contrasts more with `background` (WCAG: at least 4.58:1 for any colour)."""
        return "#000000" if contrast("#000000", background) >= contrast("#ffffff", background) else "#ffffff"


def _channels(colour: str) -> tuple[float, float, float]:
    return tuple(int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def relative_luminance(colour: str) -> float:
    """WCAG 2.x relative luminance of an sRGB `#rrggbb` colour."""
    red, green, blue = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in _channels(colour))
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast(foreground: str, background: str) -> float:
    """WCAG contrast ratio between two colours, from 1 to 21 (body text needs 4.5)."""
    high, low = sorted((relative_luminance(foreground), relative_luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def blend(colour: str, under: str, alpha: float) -> str:
    """`colour` at opacity `alpha` over `under`, as one opaque `#rrggbb`."""
    mixed = (alpha * top + (1 - alpha) * bottom for top, bottom in zip(_channels(colour), _channels(under)))
    return "#" + "".join(f"{round(255 * channel):02x}" for channel in mixed)
