"""Figures that reach the notebook as images, whatever state matplotlib's backend is in.

A bare `matplotlib.figure.Figure` renders as a picture in Jupyter only after the inline backend has
registered its PNG formatter (`%matplotlib inline`, or any `import matplotlib.pyplot` under it);
otherwise the output is the text `<Figure size 700x320 with 1 Axes>`. The course's figures render
themselves instead:

    from kubecourse.figures import Figure     # a matplotlib Figure that knows how to be a PNG
    figure = Figure(figsize=(7, 3)); ...; figure   # -> image/png in any kernel
    FigureImage(figure)                        # a snapshot (PNG bytes): what live views display

Nothing here touches pyplot, so nothing is shown behind the caller's back.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure as _MatplotlibFigure

DPI = 90  # what the course summary's PNGs use too: sharp enough, small notebooks


def png_bytes(figure: _MatplotlibFigure, dpi: int = DPI) -> bytes:
    """The figure rendered to PNG (Agg, independent of the active backend)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def describe(figure: _MatplotlibFigure) -> str:
    """The text a terminal or an untrusted notebook shows instead of the picture."""
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    width, height = (figure.get_size_inches() * figure.dpi).round().astype(int)
    return f"[figure {width}x{height}: {'; '.join(titles) or 'untitled'}]"


def _figure_class() -> type:
    """The course's Figure class, made on first use: importing matplotlib builds its font cache
    under $HOME, and importing kubecourse must write nothing (tests/helpers/test_import_boundaries)."""
    from matplotlib.figure import Figure as MatplotlibFigure

    class Figure(MatplotlibFigure):
        """A matplotlib Figure whose notebook output is a PNG (text: its panel titles)."""

        def _repr_png_(self) -> bytes:
            return png_bytes(self)

        def _repr_mimebundle_(self, include=None, exclude=None):
            return {
                "image/png": base64.b64encode(png_bytes(self)).decode("ascii"),
                "text/plain": describe(self),
            }

    Figure.__module__ = __name__
    return Figure


def __getattr__(name: str) -> Any:
    # `from kubecourse.figures import Figure` lands here the first time (PEP 562).
    if name == "Figure":
        globals()["Figure"] = figure_class = _figure_class()
        return figure_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class FigureImage:
    """A rendered snapshot of a figure, for display handles that are updated while a job runs."""

    def __init__(self, figure: _MatplotlibFigure, dpi: int = DPI):
        self.png = png_bytes(figure, dpi)
        self.text = describe(figure)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"image/png": base64.b64encode(self.png).decode("ascii"), "text/plain": self.text}

    def __repr__(self) -> str:
        return self.text
