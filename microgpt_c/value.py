"""micrograd's Value API, on the C node store.

    from microgpt_c import Value            # the C engine
    from microgpt_c.pyengine import Value   # the pure-Python engine: the same interface

    a = Value(2.0); b = Value(-3.0)
    c = (a * b + a ** 2).relu()
    c.backward()
    a.grad

A C Value is one node of a store (a CEngine, exact mode unless you pass one of
your own); Values made without store= share a default store. A store only
grows until reset: store.reset() drops every node but the model parameters,
so a Value made before the reset is stale, and using it raises ValueError
instead of reading whatever node has its id now. The numbers are floats
(Value(2) holds 2.0; so -Value(-1.0).relu() is -0.0 where the reference's
integer arithmetic gives 0). Where Python's float arithmetic would give inf, nan or a
complex number, or raise, a C op raises ArithmeticError (MG_EMATH) and makes
no node; the pure-Python Value does what the reference does."""
import math

from .cengine import CEngine, lib
from .pyengine import Derived

_default = []


def default_store():
    """The store Values use unless given another."""
    if not _default:
        _default.append(CEngine())
    return _default[0]


class Value(Derived):
    __slots__ = ("store", "id", "_generation")

    def __init__(self, data, store=None):
        self._at(store or default_store(), None)
        self.id = self.store.leaf(data)

    def _at(self, store, node):
        self.store, self.id, self._generation = store, node, store.generation
        return self

    def _node(self):
        """This Value's node id, if it still refers to the node it was made as."""
        if self._generation != self.store.generation and self.id >= self.store.v.nparams:
            raise ValueError("stale Value: its store was reset after it was made")
        return self.id

    def _operand(self, other):
        """A node id for other: a Value of the same store, or a number as a new
        leaf (the reference wraps numbers the same way)."""
        if isinstance(other, Value):
            if other.store is not self.store:
                raise ValueError("Values from different stores cannot be combined")
            return other._node()
        if isinstance(other, (int, float)):
            return self.store.leaf(other)
        return None

    def _op(self, fn, *args):
        return Value.__new__(Value)._at(self.store, self.store._ok(fn(self.store.s, *args)))

    def __add__(self, other):
        b = self._operand(other)
        return NotImplemented if b is None else self._op(lib.mg_add, self._node(), b)

    def __mul__(self, other):
        b = self._operand(other)
        return NotImplemented if b is None else self._op(lib.mg_mul, self._node(), b)

    def __pow__(self, other):
        if not isinstance(other, (int, float)):
            return NotImplemented
        return self._op(lib.mg_pow, self._node(), float(other))

    def log(self):
        return self._op(lib.mg_log, self._node())

    def exp(self):
        return self._op(lib.mg_exp, self._node())

    def relu(self):
        return self._op(lib.mg_relu, self._node())

    def tanh(self):
        return self._op(lib.mg_tanh, self._node())

    @property
    def data(self):
        return self.store.v.val[self._node()]

    @data.setter
    def data(self, x):
        x = float(x)
        if not math.isfinite(x):
            raise ValueError(f"a Value holds a finite number, not {x}")
        self.store.v.val[self._node()] = x

    @property
    def grad(self):
        return self.store.v.grad[self._node()]

    @grad.setter
    def grad(self, g):
        self.store.v.grad[self._node()] = float(g)

    def backward(self):
        """Gradient 1 here, accumulated into every node below (call it on a
        fresh graph, or zero the grads you read: like micrograd, it adds)."""
        self.store.backward(self._node())

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"
