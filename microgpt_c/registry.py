"""The one list of engines and their modes: make_engine, the CLI's choices,
bench, checkpoints and Run.load all read it. An engine's first mode is its
default. Engines are imported only when made (the C engine loads the compiled
module; PyTorch is never a dependency)."""
import importlib
import importlib.util


class EngineInfo:
    """module, cls: microgpt_c.<module>.<cls> implements engine.Engine; modes:
    the first is the default. What a run takes in memory (memory.py), measured
    as peak RSS over a run's first steps: param_bytes per parameter (the
    initial values as Python floats, the engine's copy, Adam's moments and the
    update's temporaries) and node_bytes per node of one step's graph, by mode
    (a mode not listed: its graph is not estimated), or with kernel the
    whole-document kernels' numbers (memory.kernel_doubles). needs: an optional
    package it needs; max_nodes: parameters and one step's nodes together."""

    def __init__(self, module, cls, modes, param_bytes, node_bytes, needs=None, max_nodes=None, kernel=False):
        self.module, self.cls, self.modes, self.needs = module, cls, modes, needs
        self.param_bytes, self.node_bytes, self.max_nodes, self.kernel = param_bytes, node_bytes, max_nodes, kernel

    def available(self):
        return self.needs is None or importlib.util.find_spec(self.needs) is not None


ENGINES = {  # in bench's order: the first is its baseline
    # a Value: the object, its two tuples, its floats
    "python": EngineInfo("pyengine", "PyEngine", ("exact",), 400, {"exact": 300}),
    # training builds no graph: a document runs through the whole-document kernels, in both modes
    "c": EngineInfo("cengine", "CEngine", ("exact", "fast"), 120, {}, max_nodes=2**31 - 1, kernel=True),
    # the benchmark's outside anchor: the same model code on float64 tensors (eager), or the model
    # as a PyTorch user writes it (user) (not measured: the C engine's figure per parameter, and no
    # estimate of autograd's graph)
    "torch": EngineInfo("torchengine", "TorchEngine", ("eager", "user"), 120, {}, needs="torch"),
}
MODES = sorted({m for info in ENGINES.values() for m in info.modes})
PAIRS = [f"{name}:{mode}" for name, info in ENGINES.items() for mode in info.modes]


def mode_for(engine, mode=None, preferred=None):
    """The mode to run engine in: mode if given (checked), else preferred if
    the engine has it, else the engine's default."""
    info = ENGINES.get(engine)
    if info is None:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if mode is None:
        return preferred if preferred in info.modes else info.modes[0]
    if mode not in info.modes:
        raise ValueError(f"the {engine} engine has {' and '.join(info.modes)} mode{'s' * (len(info.modes) > 1)} "
                         f"only, not {mode!r}")
    return mode


def require(engine):
    """A ValueError if engine needs a package that is not installed."""
    info = ENGINES[engine]
    if not info.available():
        raise ValueError(f"the {engine} engine needs {info.needs}: pip install {info.needs}")


def make_engine(engine="c", mode=None):
    """A new engine, in mode (default: the engine's first)."""
    mode = mode_for(engine, mode)
    require(engine)
    info = ENGINES[engine]
    cls = getattr(importlib.import_module(f"microgpt_c.{info.module}"), info.cls)
    return cls(mode)
