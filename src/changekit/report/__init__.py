"""Self-contained HTML evaluation reports and the overlay pictures they are made of.

``write_report`` is what ``changekit test`` and the demo call; the overlay helpers are public because inference
and notebooks want the same colour conventions.
"""

from __future__ import annotations

from .html import render_report, write_report
from .overlays import colorize, default_palette, overlay_errors, overlay_on_image, to_rgb8

__all__ = [
    "colorize",
    "default_palette",
    "overlay_errors",
    "overlay_on_image",
    "render_report",
    "to_rgb8",
    "write_report",
]
