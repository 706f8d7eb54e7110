"""The pictures, PNGs drawn with matplotlib (an optional extra): --plot's
loss curve and the attention command's heat maps."""
from .files import atomic_write


def check(path, flag="--plot"):
    """A ValueError before the work if the picture could not be written after
    it (the path itself is checked with the command's other outputs)."""
    if not path.lower().endswith(".png"):
        raise ValueError(f"{flag} writes a PNG: the file name must end in .png, not {path!r}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(f"{flag} needs matplotlib: pip install '.[plot]' from a checkout, "
                         "or pip install matplotlib") from None


def figure(**kwargs):
    """A matplotlib Figure on Agg without pyplot: no display, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(dpi=120, layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def loss_curve(path, steps, losses, smoothed, title):
    """Each step's loss, and the smoothed loss over it, against the step."""
    fig = figure(figsize=(9, 5))
    ax = fig.add_subplot()
    ax.plot(steps, losses, color="tab:blue", linewidth=0.6, alpha=0.5, label="loss at each step (one document)")
    ax.plot(steps, smoothed, color="tab:orange", linewidth=2, label="smoothed (exponential moving average)")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))


def attention_maps(path, layers, labels, title):
    """One heat map per layer (a row) and head (a column) of layers, a list
    of (n_head, T, T) weights: query position down, key position across,
    each labelled with its character. Above the diagonal (a position's
    future, which it never sees) is left blank."""
    import numpy as np

    n_head, T = layers[0].shape[:2]
    side = 1.0 + 0.22 * T  # inches per map
    fig = figure(figsize=(n_head * side + 1.2, len(layers) * side + 0.6))
    axes = fig.subplots(len(layers), n_head, squeeze=False)
    future = np.triu(np.ones((T, T), dtype=bool), 1)
    for li, w in enumerate(layers):
        for h, ax in enumerate(axes[li]):
            image = ax.imshow(np.ma.masked_array(w[h], future), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(T), labels, fontsize=8)
            ax.set_yticks(range(T), labels, fontsize=8)
            ax.set_title(f"layer {li}, head {h}", fontsize=9)
            ax.set_xlabel("key: attended to", fontsize=8)
            if h == 0:
                ax.set_ylabel("query: reading", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    fig.suptitle(title, fontsize=10)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
