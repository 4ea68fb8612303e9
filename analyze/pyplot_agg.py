"""matplotlib's pyplot on the Agg backend (no display needed), and a renderer that measures text.

Imported where a figure is drawn (the painter's worker processes, or the report's own process when it draws
inline), not when the analysis starts: matplotlib is a third of ``analyze report``'s start-up, and a report whose
figures are drawn by workers never draws in its own process.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import RendererAgg  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402

RENDERER = RendererAgg(1, 1, 72)  # measures text only (72 dpi: its pixels are points)

__all__ = ["FontProperties", "PolyCollection", "RENDERER", "offset_copy", "plt"]
