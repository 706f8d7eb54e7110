"""--plot: the loss curve as a PNG, with matplotlib (an optional extra)."""
from .files import atomic_write


def check(path):
    """A ValueError before training if the plot could not be written after it
    (the path itself is checked with the command's other outputs)."""
    if not path.lower().endswith(".png"):
        raise ValueError(f"--plot writes a PNG: the file name must end in .png, not {path!r}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install '.[plot]' from a checkout, "
                         "or pip install matplotlib") from None


def loss_curve(path, steps, losses, smoothed, title):
    """Each step's loss, and the smoothed loss over it, against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)  # Agg without pyplot: no display, no global state
    ax = fig.add_subplot()
    ax.plot(steps, losses, color="tab:blue", linewidth=0.6, alpha=0.5, label="loss at each step (one document)")
    ax.plot(steps, smoothed, color="tab:orange", linewidth=2, label="smoothed (exponential moving average)")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
