"""micrograd's Value API, on the C node store.

    from microgpt_c import Value            # the C engine
    from microgpt_c.pyengine import Value   # the pure-Python engine: the same interface

    a = Value(2.0); b = Value(-3.0)
    c = (a * b + a ** 2).relu()
    c.backward()
    a.grad

A C Value is one node of a store (a CEngine, exact mode unless you pass one of
your own); Values made without store= share microgpt_c.default_store(). A
store only grows until reset: store.reset(keep=values) drops every node but
the model parameters and the given Values, which become leaves (data and grad
kept); any other Value made before is stale, and using it raises ValueError
instead of reading whatever node has its id now. The store checks that in C:
a Value holds a handle, not a node id (microgpt.h). Every call holds the
store's lock, so threads may share a store.

The numbers are floats (Value(2) holds 2.0; so -Value(-1.0).relu() is -0.0
where the reference's integer arithmetic gives 0), and only real numbers are
taken: anything else is a TypeError. Where Python's float arithmetic would
give inf, nan or a complex number, or raise, a C op raises ArithmeticError
(MG_EMATH) and makes no node, and so does setting .data or .grad to inf or
nan; the pure-Python Value does what the reference does.

micrograd's graph attributes: v._prev, the set of v's children, and v._op,
micrograd's symbol for the op that made v ('+', '*', '**2', 'ReLU', 'tanh',
'exp', 'log'; '' for a leaf). Each Value holds its children, as micrograd's
does, so walking _prev meets the same Python object for the same node. The
number in a + 1 is a child too, the leaf Value(1) the reference makes for it."""
import numbers
import threading

from .cengine import CEngine, lib
from .pyengine import Derived, real

_default = []
_default_lock = threading.Lock()


def default_store():
    """The store Values use unless given another: one for every thread."""
    if not _default:
        with _default_lock:
            if not _default:
                _default.append(CEngine())
    return _default[0]


class Value(Derived):
    # _s: the store; _h: the node's handle; _o: micrograd's symbol for the op
    # that made it ('' for a leaf), or for ** the exponent; _a, _b: the
    # operands (None where there is none; _b a number until _prev makes its leaf)
    __slots__ = ("_s", "_h", "_o", "_a", "_b")

    def __init__(self, data, store=None):
        store = store or default_store()
        h = lib.mg_value_leaf(store.s, real(data, "a Value's data"))
        if h < 0:
            raise CEngine.value_error(h)
        self._s, self._h, self._o, self._a, self._b = store, h, "", None, None

    def __pow__(self, other):
        if type(other) is not float and type(other) is not int:
            if not isinstance(other, numbers.Real):
                return NotImplemented
        h = lib.mg_value_pow(self._s.s, self._h, other)
        if h < 0:
            raise CEngine.value_error(h)
        v = _new(Value)
        v._s, v._h, v._o, v._a, v._b = self._s, h, other, self, None
        return v

    @property
    def _op(self):
        return self._o if type(self._o) is str else f"**{self._o}"

    @property
    def _prev(self):
        if self._a is None:
            return set()
        if self._b is None:
            return {self._a}
        if type(self._b) is not Value:  # x op number: the leaf made for it (just before x op it), once
            leaf = _new(Value)
            leaf._s, leaf._h, leaf._o, leaf._a, leaf._b = self._s, self._h - 1, "", None, None
            self._b = leaf
        return {self._a, self._b}

    def _leaf(self):
        """This Value as a leaf: what reset(keep=...) leaves of it."""
        self._o, self._a, self._b = "", None, None

    @property
    def data(self):
        x = lib.mg_value_get(self._s.s, self._h, 0)
        if x != x:
            raise CEngine.value_error()
        return x

    @data.setter
    def data(self, x):
        if lib.mg_value_set(self._s.s, self._h, 0, real(x, "a Value's data")):
            raise CEngine.value_error()

    @property
    def grad(self):
        g = lib.mg_value_get(self._s.s, self._h, 1)
        if g != g and lib.mg_value_failed():
            raise CEngine.value_error()
        return g

    @grad.setter
    def grad(self, g):
        if lib.mg_value_set(self._s.s, self._h, 1, real(g, "a Value's grad")):
            raise CEngine.value_error()

    @property
    def store(self):
        return self._s

    @property
    def id(self):
        """The node's id in its store (reused after a reset)."""
        return self._h & 0x7FFFFFFF

    def backward(self):
        """Gradient 1 here, accumulated into every node below (call it on a
        fresh graph, or zero the grads you read: like micrograd, it adds)."""
        if lib.mg_value_backward(self._s.s, self._h):
            raise CEngine.value_error()

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"


_new = object.__new__


def _binary(symbol, op, op_number):
    """Value op other, other a Value of the same store or a real number (which,
    as in the reference, becomes a leaf: made in the same C call)."""

    def method(self, other):
        s = self._s
        if type(other) is Value:  # C refuses another store's handle: its generation is not this store's
            h = op(s.s, self._h, other._h)
        elif type(other) is float or type(other) is int:
            h = op_number(s.s, self._h, other)
        elif isinstance(other, numbers.Real):
            h = op_number(s.s, self._h, float(other))
        else:
            return NotImplemented
        if h < 0:
            if type(other) is Value and other._s is not s:
                raise ValueError("Values from different stores cannot be combined")
            raise CEngine.value_error(h)
        v = _new(Value)  # one slot at a time: no tuple to pack and unpack
        v._s = s
        v._h = h
        v._o = symbol
        v._a = self
        v._b = other
        return v

    return method


def _unary(symbol, op):
    def method(self):
        h = op(self._s.s, self._h)
        if h < 0:
            raise CEngine.value_error(h)
        v = _new(Value)
        v._s = self._s
        v._h = h
        v._o = symbol
        v._a = self
        v._b = None
        return v

    return method


# the ops: + and * on either side (as the reference's __radd__ and __rmul__:
# self + other), and the unary ones
for _names, _method in {("__add__", "__radd__"): _binary("+", lib.mg_value_add, lib.mg_value_addc),
                        ("__mul__", "__rmul__"): _binary("*", lib.mg_value_mul, lib.mg_value_mulc),
                        ("log",): _unary("log", lib.mg_value_log), ("exp",): _unary("exp", lib.mg_value_exp),
                        ("relu",): _unary("ReLU", lib.mg_value_relu),
                        ("tanh",): _unary("tanh", lib.mg_value_tanh)}.items():
    for _name in _names:
        setattr(Value, _name, _method)
