"""A run's settings, each named once with its default and its meaning. The
CLI's and bench's flags, checkpoints and titles are derived from these two
dataclasses (dataclasses.fields, asdict, Config(**d))."""
import math
from dataclasses import dataclass, field, fields


def setting(default, help, minimum=None):
    return field(default=default, metadata={"help": help, "minimum": minimum})


def check(settings):
    """A ValueError naming the first setting below its minimum."""
    for f in fields(settings):
        low, x = f.metadata["minimum"], getattr(settings, f.name)
        if type(x) is not f.type and not (f.type is float and type(x) is int):
            raise ValueError(f"{f.name} must be {f.type.__name__}, not {x!r}")
        if low is not None and x < low:
            raise ValueError(f"{f.name} must be {low} or more, not {x}")


@dataclass(frozen=True)
class Config:
    """The model's sizes."""

    n_layer: int = setting(1, "transformer layers", 0)
    n_embd: int = setting(16, "embedding width", 1)
    n_head: int = setting(4, "attention heads; the embedding width must be a multiple of it", 1)
    block_size: int = setting(16, "positions in the context (longer documents are cut)", 1)

    def __post_init__(self):
        check(self)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")

    def title(self):
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))


@dataclass(frozen=True)
class Schedule:
    """How a run trains: one random stream from the seed shuffles the documents,
    draws the initial weights and then the samples; the learning rate decays
    linearly to 0 over the steps."""

    seed: int = setting(42, "random seed")
    steps: int = setting(1000, "training steps (the schedule's length)", 0)
    lr: float = setting(0.01, "Adam's learning rate at step 0")

    def __post_init__(self):
        check(self)
        if not math.isfinite(self.lr):
            raise ValueError(f"lr must be a finite number, not {self.lr}")
