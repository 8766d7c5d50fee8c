"""Interactive figures that still work where nobody can move a slider.

``explore(draw, controls, static)`` shows ipywidgets sliders when a person is looking
(JupyterLab, Notebook 7, VS Code), and a static grid of small multiples - one panel per
entry of ``static`` - everywhere else: under nbval in CI and in the book build, where
a slider could not redraw anything and a live widget would make the output depend on the
frontend. Set ``DIFFEDU_WIDGETS=live`` or ``=static`` to choose by hand.
"""
import os

import matplotlib.pyplot as plt

from .plot import new_axes


def live_frontend() -> bool:
    """True when running in a Jupyter kernel that a person's frontend is attached to."""
    choice = os.environ.get("DIFFEDU_WIDGETS", "").lower()
    if choice in ("live", "static"):
        return choice == "live"
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    # jupyter-server names the session of kernels it starts; VS Code and Colab set their own variables.
    return any(k in os.environ for k in ("JPY_SESSION_NAME", "VSCODE_PID", "COLAB_RELEASE_TAG"))


def explore(draw, controls: dict, static: list[dict], size: float = 3.4, ncols: int | None = None):
    """Draw ``draw(ax, **params)`` with sliders over ``controls`` ({name: list of values}),
    or, without a live frontend, once per parameter dict in ``static``."""
    if not controls or not static:
        raise ValueError("explore() needs at least one control and one static setting")
    for params in static:
        unknown = set(params) - set(controls)
        if unknown:
            raise ValueError(f"static setting {params} names unknown controls {sorted(unknown)}")
    if live_frontend():
        return _live(draw, controls, static[0], size)
    fig, axes = new_axes(len(static), ncols=ncols or min(len(static), 4), size=size)
    for ax, params in zip(axes, static):
        draw(ax, **params)
        if not ax.get_title():
            ax.set_title(", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()))
    fig.tight_layout()
    plt.show()


def _live(draw, controls, first, size):
    import ipywidgets as W
    from IPython.display import display

    sliders = {name: W.SelectionSlider(options=list(values), value=first.get(name, list(values)[0]),
                                       description=name, continuous_update=False)
               for name, values in controls.items()}

    def redraw(**params):
        fig, ax = plt.subplots(figsize=(size * 1.4, size * 1.4))
        draw(ax, **params)
        plt.show()

    out = W.interactive_output(redraw, sliders)
    display(W.VBox([W.HBox(list(sliders.values())), out]))
