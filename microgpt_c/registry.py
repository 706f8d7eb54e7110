"""The one list of engines and their modes: make_engine, the CLI's choices,
bench, checkpoints and Run.load all read it. An engine's first mode is its
default. Engines are imported only when made (the C engine loads the compiled
module; PyTorch is never a dependency)."""
import importlib
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineInfo:
    module: str  # microgpt_c.<module>.<cls> implements engine.Engine
    cls: str
    modes: tuple
    needs: str = None  # an optional package it needs

    def available(self):
        return self.needs is None or importlib.util.find_spec(self.needs) is not None


ENGINES = {  # in bench's order: the first is its baseline
    "python": EngineInfo("pyengine", "PyEngine", ("exact",)),
    "c": EngineInfo("cengine", "CEngine", ("exact", "fast")),
    # the benchmark's outside anchor: the same model code on float64 tensors
    "torch": EngineInfo("torchengine", "TorchEngine", ("eager",), needs="torch"),
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


def make_engine(engine="c", mode=None):
    """A new engine, in mode (default: the engine's first)."""
    mode = mode_for(engine, mode)
    info = ENGINES[engine]
    if not info.available():
        raise ValueError(f"the {engine} engine needs {info.needs}: pip install {info.needs}")
    cls = getattr(importlib.import_module(f"microgpt_c.{info.module}"), info.cls)
    return cls(mode)
