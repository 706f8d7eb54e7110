"""A run's settings, each named once with its default and its meaning. The
CLI's and bench's flags, checkpoints and titles are derived from these two
records (fields, asdict, Config(**d)). Plain classes, not dataclasses: the
dataclasses module imports inspect, a tenth of the main job's start-up."""
import math


class Setting:
    """One setting: default (its type is the setting's), help, least and greatest value."""

    def __init__(self, default, help, minimum=None, maximum=None):
        self.default, self.help, self.type = default, help, type(default)
        self.minimum, self.maximum = minimum, maximum

    def __set_name__(self, owner, name):
        self.name = name


def fields(settings):
    """The Settings of a record or its class, in order."""
    return [s for s in vars(settings if isinstance(settings, type) else type(settings)).values()
            if isinstance(s, Setting)]


def asdict(settings):
    return {s.name: getattr(settings, s.name) for s in fields(settings)}


class Settings:
    """A record of the Setting attributes of its class: made by position or
    keyword (defaults for the rest), checked, then read-only."""

    def __init__(self, *args, **kwargs):
        names = [s.name for s in fields(self)]
        given = dict(zip(names, args))
        if len(args) > len(names) or set(kwargs) - set(names) or set(given) & set(kwargs):
            raise TypeError(f"{type(self).__name__} takes the settings {', '.join(names)}, each once")
        given.update(kwargs)
        for s in fields(self):
            x = given.get(s.name, s.default)
            if type(x) is not s.type and not (s.type is float and type(x) is int):
                raise ValueError(f"{s.name} must be {s.type.__name__}, not {x!r}")
            if s.minimum is not None and x < s.minimum:
                raise ValueError(f"{s.name} must be {s.minimum} or more, not {x}")
            if s.maximum is not None and x > s.maximum:
                raise ValueError(f"{s.name} must be at most {s.maximum}, not {x if x < 10**30 else 'a larger number'}")
            object.__setattr__(self, s.name, x)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other):
        return type(other) is type(self) and asdict(other) == asdict(self)

    def __hash__(self):
        return hash(tuple(asdict(self).values()))

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in asdict(self).items())})"


class Config(Settings):
    """The model's sizes."""

    n_layer = Setting(1, "transformer layers", 0)
    n_embd = Setting(16, "embedding width", 1)
    n_head = Setting(4, "attention heads; the embedding width must be a multiple of it", 1)
    block_size = Setting(16, "positions in the context (longer documents are cut)", 1)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")

    def title(self):
        return ", ".join(f"{k} {v}" for k, v in asdict(self).items())


MAX_STEPS = 2**63 - 1  # a checkpoint stores the step as a 64-bit integer: what it can hold, it can read back


class Schedule(Settings):
    """How a run trains: one random stream from the seed shuffles the documents,
    draws the initial weights and then the samples; the learning rate decays
    linearly to 0 over the steps."""

    seed = Setting(42, "random seed")
    steps = Setting(1000, "training steps (the schedule's length)", 0, MAX_STEPS)
    lr = Setting(0.01, "Adam's learning rate at step 0")
    decay_steps = Setting(0, "steps over which the learning rate decays linearly from lr (0: all the steps, "
                             "an extended run's too); past them it decays again from lr (a warm restart)", 0,
                          MAX_STEPS)
    val_docs = Setting(0, "documents kept out of training, the last of the shuffled ones, to report a held-out "
                          "loss on", 0)

    def decay(self):
        """The decay's length in steps (at least 1)."""
        return self.decay_steps or max(self.steps, 1)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not math.isfinite(self.lr):
            raise ValueError(f"lr must be a finite number, not {self.lr}")
