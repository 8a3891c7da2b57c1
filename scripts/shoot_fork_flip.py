"""Remake docs/fork-flip.png: `rmx demo` driven to the README's fork (token 12 → its second choice), screenshotted.

The app `rmx demo` builds is driven by Textual's Pilot as a user would (escape the tour, → twelve times, 2), saved
as SVG, rendered to PNG by headless Chromium and reduced to 128 colours. Usage: python scripts/shoot_fork_flip.py
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = ROOT / "docs" / "fork-flip.png"
SIZE = (160, 48)
PIXELS = "1960,1240"
"""Chromium's window for the SVG Textual saves at SIZE (its viewBox is 1970 × 1221)."""


async def shoot(svg: Path) -> None:
    from tests.tui.harness import demo_app, past_the_tour, until

    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await past_the_tour(pilot)
        root = app.screen.active
        await pilot.press("home", *["right"] * 12, "2")
        await until(pilot, lambda: app.screen.active is not root and app.screen.active.scored, timeout=600)
        app.save_screenshot(str(svg))


def main() -> None:
    try:
        from PIL import Image
    except ImportError:
        sys.exit("shoot_fork_flip.py needs Pillow: pip install pillow")

    with tempfile.TemporaryDirectory() as tmp:
        svg, png = Path(tmp) / "fork.svg", Path(tmp) / "fork.png"
        asyncio.run(shoot(svg))
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={PIXELS}", f"--screenshot={png}", svg.as_uri()], check=True,
                       capture_output=True)
        Image.open(png).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(TARGET, optimize=True)
    print(TARGET)


if __name__ == "__main__":
    main()
