"""The progress bar of `TrainingClient.wait`: steps of the trainer, ending in the job's verdict.

In a notebook it is a full-width tqdm widget that knows its total as soon as the trainer prints
`step N/M` (the backend reports it), ends at 100% and green when the job succeeded and red only
when it failed. Its display has an id, so the last update also replaces the text that an executed,
untrusted notebook shows instead of the widget: the saved fallback reads the final state (for
example `lm-job: 100%|##########| 80/80 [00:21<00:00, Succeeded]`), not the state at creation. In a
terminal it is tqdm's text bar.
"""

from __future__ import annotations

from .types import JobStatus


class JobBar:
    """One bar for one job; `update()` on every status change, `finish()` once at the end."""

    def __init__(self, name: str, tqdm_class=None):
        from tqdm.auto import tqdm as auto
        from tqdm.notebook import tqdm_notebook

        tqdm = tqdm_class or auto  # tqdm.auto: the widget in a notebook kernel, text elsewhere
        self.widget = issubclass(tqdm, tqdm_notebook)
        options = {"desc": name, "unit": "step", "total": None, "dynamic_ncols": True}
        if self.widget:
            from IPython.display import display

            self.bar = tqdm(**options, display=False)
            self.handle = display(self.bar.container, display_id=True)
        else:
            self.bar, self.handle = tqdm(**options), None

    def update(self, status: JobStatus, steps: tuple[int, int] | None) -> None:
        """Show the phase, and the steps when the backend knows them ((done, total) or None)."""
        if steps is not None:
            done, total = steps
            if total and self.bar.total != total:
                self._set_total(total)
            self.bar.n = min(done, total) if total else done
        self.bar.set_postfix_str(_phase(status), refresh=False)
        self.bar.refresh()

    def _set_total(self, total: int) -> None:
        self.bar.total = total
        if self.widget:  # the "unknown total" widget is a 20 px info bar: make it a real one
            _, widget_bar, _ = self.bar.container.children
            widget_bar.max = total
            widget_bar.bar_style = ""
            widget_bar.layout.width = None

    def finish(self, final: JobStatus | None) -> None:
        """Close the bar: full and green when the job succeeded, red when it did not."""
        succeeded = final is not None and final.phase == "Succeeded"
        if final is not None:
            self.bar.set_postfix_str(_phase(final), refresh=False)
        if succeeded:
            total = self.bar.total or max(self.bar.n, 1)
            self._set_total(total)
            self.bar.n = total  # the last logged step is rarely the last step
        elif self.widget:
            self.bar.container.children[1].bar_style = "danger"
        self.bar.refresh()
        self.bar.close()
        if self.handle is not None:
            self.handle.update(self.bar.container)  # the saved text fallback: the final state


def _phase(status: JobStatus) -> str:
    return status.phase + (f" ({status.reason})" if status.reason else "")
