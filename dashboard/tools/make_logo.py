"""Draw the infoscope logo (a magnifier over a grid of images) as PNG and SVG into ``assets/``.

Run: ``python -m dashboard.tools.make_logo``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

BLUE = (59, 91, 219)
LIGHT = (208, 217, 248)
MID = (140, 160, 235)
DARK = (31, 36, 48)
ASSETS = Path(__file__).resolve().parents[2] / "assets"
# grid cells lit in the project colour (the "informative" ones the magnifier finds)
LIT = {(1, 1), (0, 2), (2, 0)}


def _icon(draw: ImageDraw.ImageDraw, ox: float, oy: float, s: float) -> None:
    """Icon in a unit box of size ``s`` at (ox, oy)."""
    cell, gap = 0.22 * s, 0.05 * s
    for r in range(3):
        for c in range(3):
            x, y = ox + 0.06 * s + c * (cell + gap), oy + 0.06 * s + r * (cell + gap)
            color = BLUE if (r, c) in LIT else (LIGHT if (r + c) % 2 else MID)
            draw.rounded_rectangle([x, y, x + cell, y + cell], radius=0.04 * s, fill=color)
    cx, cy, rad = ox + 0.60 * s, oy + 0.58 * s, 0.25 * s
    draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], outline=DARK, width=max(2, int(0.07 * s)))
    hx, hy = cx + rad * 0.72, cy + rad * 0.72
    draw.line([hx, hy, ox + 0.95 * s, oy + 0.95 * s], fill=DARK, width=max(3, int(0.11 * s)))


def png(path: Path, wordmark: bool, scale: int = 4) -> None:
    h = 160 * scale
    w = (660 if wordmark else 160) * scale
    im = Image.new("RGBA", (w, h), (255, 255, 255, 0))
    d = ImageDraw.Draw(im)
    _icon(d, 8 * scale, 8 * scale, 144 * scale)
    if wordmark:
        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 84 * scale)
        d.text((178 * scale, 80 * scale), "info", font=font, fill=DARK, anchor="lm")
        x = 178 * scale + d.textlength("info", font=font)
        d.text((x, 80 * scale), "scope", font=font, fill=BLUE, anchor="lm")
    im = im.resize((w // scale, h // scale), Image.LANCZOS)
    im.save(path)


def svg(path: Path) -> None:
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 660 160" width="660" height="160">',
             '<title>infoscope</title>']
    s, ox, oy = 144.0, 8.0, 8.0
    cell, gap = 0.22 * s, 0.05 * s
    hexes = {"blue": "#3B5BDB", "light": "#D0D9F8", "mid": "#8CA0EB"}
    for r in range(3):
        for c in range(3):
            x, y = ox + 0.06 * s + c * (cell + gap), oy + 0.06 * s + r * (cell + gap)
            col = hexes["blue"] if (r, c) in LIT else (hexes["light"] if (r + c) % 2 else hexes["mid"])
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" height="{cell:.1f}" '
                         f'rx="{0.04 * s:.1f}" fill="{col}"/>')
    cx, cy, rad = ox + 0.60 * s, oy + 0.58 * s, 0.25 * s
    hx, hy = cx + rad * 0.72, cy + rad * 0.72
    parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{rad - 0.035 * s:.1f}" fill="none" stroke="#1F2430" '
                 f'stroke-width="{0.07 * s:.1f}"/>')
    parts.append(f'<line x1="{hx:.1f}" y1="{hy:.1f}" x2="{ox + 0.95 * s:.1f}" y2="{oy + 0.95 * s:.1f}" '
                 f'stroke="#1F2430" stroke-width="{0.11 * s:.1f}" stroke-linecap="round"/>')
    parts.append('<text x="178" y="109" font-family="DejaVu Sans, Verdana, sans-serif" font-weight="700" '
                 'font-size="84"><tspan fill="#1F2430">info</tspan><tspan fill="#3B5BDB">scope</tspan></text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def main() -> None:
    ASSETS.mkdir(exist_ok=True)
    png(ASSETS / "logo.png", wordmark=True)
    png(ASSETS / "logo-icon.png", wordmark=False)
    svg(ASSETS / "logo.svg")
    print(f"wrote logo.png, logo-icon.png, logo.svg to {ASSETS}")


if __name__ == "__main__":
    main()
