"""One training run as the reference does it, on any engine: one random stream,
seeded once, shuffles the documents, draws the initial weights, then samples."""
import functools
import math
import random
import threading
from array import array

from . import memory
from .config import Config, Schedule
from .model import Adam, doc_loss, doc_value, init_params, param_shapes, sample
from .registry import make_engine, mode_for
from .shuffle import shuffle
from .text import Tokenizer, check_docs, load_docs


def one_thread(method):
    """A Run is driven by one thread at a time: a call from a second thread
    while another is inside raises, rather than rebuild the store's graph
    under the first one's feet."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("a Run is used by one thread at a time: another thread is inside it")
        try:
            return method(self, *args, **kwargs)
        finally:
            self._busy.release()
    return guarded


def check_sampling(num_samples, temperature):
    """A ValueError unless these can draw samples: logits are scaled by
    temperature**-1, which must be a finite number too."""
    if type(num_samples) is not int or num_samples < 0:
        raise ValueError(f"num_samples must be a whole number, 0 or more, not {num_samples!r}")
    try:
        ok = temperature > 0 and math.isfinite(temperature ** -1)
    except (OverflowError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"temperature must be a positive number whose reciprocal is finite, not {temperature}")


def split(docs, val_docs):
    """(training documents, held-out ones): the last val_docs are held out;
    a ValueError unless one is left to train on."""
    keep = len(docs) - val_docs
    if keep < 1:
        raise ValueError(f"val_docs must be less than the {len(docs)} documents (training needs one), not {val_docs}")
    return docs[:keep], docs[keep:]


class Run:
    """Train with train_step() or train(), then sample(); state() and
    from_state() are the whole run as plain data (checkpoint.py writes them).
    A run that would need more memory than there is is a MemoryError before
    anything is allocated (memory.py). With val_docs N, the last N documents
    after the shuffle are held out (docs is the rest; held_out, them) and
    val_loss() is their loss."""

    def __init__(self, cfg=None, docs=None, seed=Schedule.seed.default, steps=Schedule.steps.default,
                 lr=Schedule.lr.default, engine="c", mode=None, decay_steps=Schedule.decay_steps.default,
                 val_docs=Schedule.val_docs.default):
        schedule = Schedule(seed, steps, lr, decay_steps, val_docs)
        rng = random.Random(seed)
        if docs is None:
            docs = load_docs()  # checked as it is read
        else:
            docs = list(docs)
            check_docs(docs)
        shuffle(rng, docs)  # rng.shuffle(docs), in C
        self._start(cfg or Config(), schedule, docs, rng, make_engine(engine, mode))
        self.P = init_params(self.E, self.cfg, self.tok.vocab_size, rng)

    def _start(self, cfg, schedule, docs, rng, E):
        self.docs, self.held_out = split(docs, schedule.val_docs)  # the shuffle's split: a checkpoint keeps it
        self.cfg, self.schedule = cfg, schedule
        self.rng, self.E = rng, E
        self._busy = threading.RLock()  # one_thread: held by the thread inside (train calls train_step)
        self.tok = Tokenizer(docs)  # every document's characters: the held-out ones can be encoded
        memory.check(cfg, docs, self.tok, E.name, E.mode)  # refuse now what cannot fit
        self.num_params = sum(r * c for r, c in param_shapes(cfg, self.tok.vocab_size).values())
        self.adam = Adam(self.num_params, schedule.lr, schedule.decay())
        self.step = 0

    @property
    def steps(self):
        return self.schedule.steps

    @one_thread
    def train_step(self):
        """One step on the next document; returns its loss."""
        E, step = self.E, self.step
        E.reset()
        loss = doc_loss(E, self.P, self.cfg, self._tokens(self.docs[step % len(self.docs)]))
        E.backward(loss)
        E.adam_step(self.adam, step)
        self.step += 1
        return E.value(loss)

    def _tokens(self, doc):
        return self.tok.encode(doc[:self.cfg.block_size])  # the rest is never read

    @one_thread
    def val_loss(self):
        """The held-out documents' loss: the mean over them of each one's
        mean next-token loss (as a training step's loss is), from the
        forward only, which changes nothing in the run."""
        if not self.held_out:
            raise ValueError("this run holds no documents out: give val_docs")
        losses = [doc_value(self.E, self.P, self.cfg, self._tokens(doc)) for doc in self.held_out]
        return sum(losses) / len(losses)

    @one_thread
    def train(self, on_step=None):
        """Train to the end of the schedule, calling on_step(step, loss) after
        each step (counted from 1); returns the losses."""
        losses = []
        while self.step < self.steps:
            losses.append(self.train_step())
            if on_step:
                on_step(self.step, losses[-1])
        return losses

    @one_thread
    def extend(self, steps, decay_steps=None):
        """Make the schedule `steps` long, to train on past its end. A decay
        over all the steps (decay_steps 0) is planned again over the new
        length, so from here the learning rate is a fresh `steps`-step run's
        (an extension trains about as well as a run that started long);
        decay_steps, if given, replaces the decay's length."""
        if type(steps) is not int or steps <= self.step:
            raise ValueError(f"steps must be more than the {self.step} done, not {steps}")
        s = self.schedule
        self.schedule = Schedule(s.seed, steps, s.lr, s.decay_steps if decay_steps is None else decay_steps,
                                 s.val_docs)
        self.adam.decay = self.schedule.decay()

    def sample(self, num_samples=20, temperature=0.5, prefix=""):
        """Names drawn from the model, each starting with prefix."""
        return list(self.samples(num_samples, temperature, prefix))

    def samples(self, num_samples=20, temperature=0.5, prefix=""):
        """sample()'s samples one at a time, each made when it is asked for
        (the arguments are checked at once)."""
        check_sampling(num_samples, temperature)
        self._check_text(prefix, "prefix")
        return (self._sample(temperature, prefix) for _ in range(num_samples))

    def _check_text(self, text, name):
        """A ValueError unless the model can read text after BOS: characters
        of its vocabulary, fewer than block_size."""
        if not isinstance(text, str):
            raise ValueError(f"{name} must be a string, not {type(text).__name__}")
        unknown = sorted(set(text) - set(self.tok.chars))
        if unknown:
            raise ValueError(f"{name} has characters not in the vocabulary: {', '.join(map(repr, unknown))}")
        if len(text) >= self.cfg.block_size:
            raise ValueError(f"{name} must be shorter than block_size ({self.cfg.block_size}), "
                             f"not {len(text)} characters")

    @one_thread
    def _sample(self, temperature, prefix):
        return sample(self.E, self.P, self.cfg, self.tok, self.rng, temperature, prefix)

    @one_thread
    def attention(self, text):
        """What each head attends to, reading BOS and then text: a list, one
        per layer, of (n_head, T, T) float64 arrays, T = len(text) + 1. Row t
        is position t's softmax weights over positions 0..t (zeros after: the
        model looks back only); position 0 is BOS. The model's own numbers
        from its parameters now, as trace computes them (record.py)."""
        from .record import attention

        self._check_text(text, "text")
        if not text:
            raise ValueError("text must have at least one character")
        return attention(self, text)

    def state(self):
        """The whole run: settings, documents, random state, step, parameters and
        moments; a snapshot (copies), which training on does not change."""
        return {"cfg": self.cfg, "schedule": self.schedule, "mode": self.E.mode, "docs": self.docs + self.held_out,
                "rng": self.rng.getstate(), "step": self.step, "params": self.E.param_values(),
                "m": array("d", self.adam.m), "v": array("d", self.adam.v)}

    @classmethod
    def from_state(cls, state, engine="c", mode=None):
        """The run state() described, on engine; mode None is the state's mode
        if the engine has it, else the engine's default. The state is checked
        as a checkpoint is (checkpoint.check_state): a ValueError says what
        is wrong."""
        from .checkpoint import check_state
        state = check_state(state)
        run = cls.__new__(cls)
        rng = random.Random()
        rng.setstate(state["rng"])
        E = make_engine(engine, mode_for(engine, mode, preferred=state["mode"]))
        run._start(state["cfg"], state["schedule"], list(state["docs"]), rng, E)
        run.P = E.create_params(param_shapes(run.cfg, run.tok.vocab_size), state["params"])
        run.adam.m, run.adam.v = array("d", state["m"]), array("d", state["v"])
        run.step = state["step"]
        return run

    @one_thread
    def save(self, path):
        """Write this run to a checkpoint file (checkpoint.py)."""
        from .checkpoint import save
        save(self.state(), path)

    @classmethod
    def load(cls, path, engine="c", mode=None):
        """The run saved at path, ready to train on or sample from."""
        from .checkpoint import load
        return cls.from_state(load(path), engine, mode)
