"""micrograd's Value API, on the C node store.

    from microgpt_c import Value            # the C engine
    from microgpt_c.pyengine import Value   # the pure-Python engine: the same interface

    a = Value(2.0); b = Value(-3.0)
    c = (a * b + a ** 2).relu()
    c.backward()
    a.grad

A C Value is one node of a store (a CEngine, exact mode unless you pass one of
your own); Values made without store= share microgpt_c.default_store().
store.reset(keep=values) drops every node but the model parameters and the
given Values, which become leaves (data and grad kept); any other Value made
before is stale, and using it raises ValueError instead of reading whatever
node has its id now. The store checks that in C: a Value holds a handle, not
a node id (microgpt.h; a float, which cffi passes faster than a big int).
The default store needs no reset: backward() drops the nodes no live Value
reaches once it has grown enough (_reclaim). Every call holds the store's
lock, so threads may share a store.

Each store has its own Value class (a subclass of _Node, registered as a
Value: isinstance(v, Value) holds), with the store's C pointer bound into its
ops: an op is one type check, one C call and one small object.

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
number in a + 1 is a child too, the leaf Value(1) the reference makes for it.
And v._backward(), micrograd's one level of backward: v's grad times each
local gradient, added to its children's grads (the lecture's walk by hand)."""
import abc
import gc
import numbers
import os
import sys
import threading
import weakref

from .cengine import CEngine, ffi, lib
from .pyengine import DerivedOperators, Described, real

_default = []
_lock = threading.Lock()  # making the default store, or a store's Value class
# a fork's child has one thread: a lock another thread held is free there (the C
# store's locks are kept the same way, by pthread_atfork)
os.register_at_fork(after_in_child=lambda: globals().update(_lock=threading.Lock()))


def default_store():
    """The store Values use unless given another: one for all threads."""
    if not _default:
        with _lock:
            if not _default:
                _default.append(CEngine())
    return _default[0]


class Value(DerivedOperators, Described, metaclass=abc.ABCMeta):
    """Value(data, store=None): a leaf of the store (default_store() if None).
    Value(data, _children=(), _op='', label='') is micrograd's constructor, so
    its lecture code runs as it is: a node made with _children is a leaf of
    the store whose _prev and _op say what was given (at most two Values of
    the same store); backward passes nothing through it to them."""

    __slots__ = ()

    def __new__(cls, data, _children=(), _op="", label="", store=None):
        if isinstance(_children, CEngine):  # Value(data, store)
            _children, store = (), _children
        v = _class_of(store or default_store())._leaf(data)
        if _children or _op:
            v._given(tuple(_children), _op)
        if label:
            v.label = label
        return v


class _Node(DerivedOperators, Described):
    """What the Values of every store share."""

    # _handle: the node's; _symbol: micrograd's for the op that made it ('' for
    # a leaf), or for ** the exponent; _left, _right: the operands (None where
    # there is none; _right a number until _prev makes its leaf)
    __slots__ = ("_handle", "_symbol", "_left", "_right")
    store = _pointer = None  # each store's class: the CEngine and its C pointer

    @classmethod
    def _leaf(cls, data):
        h = lib.mg_value_leaf(cls._pointer, real(data, "a Value's data"))
        if h < 0.0:
            raise CEngine.value_error(h)
        v = cls()
        v._handle = h
        v._as_leaf()
        return v

    def _as_leaf(self):
        """No op, no operands: a leaf, as reset(keep=...) leaves a kept Value."""
        self._symbol = ""
        self._left = self._right = None

    def _given(self, children, op):
        """micrograd's Value(data, children, op): what _prev and _op show."""
        if len(children) > 2 or not all(type(c) is type(self) for c in children):
            raise ValueError("_children must be at most two Values of the same store")
        if not isinstance(op, str):
            raise TypeError(f"_op must be a str, not {type(op).__name__}")
        self._symbol = op
        self._left, self._right = (*children, None, None)[:2]

    def __pow__(self, other):
        if type(other) is not float and type(other) is not int:
            if not isinstance(other, numbers.Real):
                return NotImplemented
        h = lib.mg_value_pow(self._pointer, self._handle, other)
        if h < 0.0:
            raise CEngine.value_error(h)
        v = type(self)()
        v._handle = h
        v._symbol = other
        v._left = self
        v._right = None
        return v

    @property
    def _op(self):
        return self._symbol if type(self._symbol) is str else f"**{self._symbol}"

    @property
    def _prev(self):
        if self._left is None:
            return set()
        if self._right is None:
            return {self._left}
        if type(self._right) is not type(self):  # x op number: the leaf made for it (just before x op it), once
            leaf = type(self)()
            leaf._handle = self._handle - 1
            leaf._as_leaf()
            self._right = leaf
        return {self._left, self._right}

    @property
    def data(self):
        x = lib.mg_value_get(self._pointer, self._handle, 0)
        if x != x:
            raise CEngine.value_error()
        return x

    @data.setter
    def data(self, x):
        r = lib.mg_value_set(self._pointer, self._handle, 0, real(x, "a Value's data"))
        if r:
            raise CEngine.value_error(r)

    @property
    def grad(self):
        g = lib.mg_value_get(self._pointer, self._handle, 1)
        if g != g and lib.mg_value_failed():
            raise CEngine.value_error()
        return g

    @grad.setter
    def grad(self, g):
        r = lib.mg_value_set(self._pointer, self._handle, 1, real(g, "a Value's grad"))
        if r:
            raise CEngine.value_error(r)

    @property
    def id(self):
        """The node's id in its store (reused after a reset)."""
        return int(self._handle) & 0x7FFFFFFF

    def backward(self):
        """Gradient 1 here, accumulated into every node below (call it on a
        fresh graph, or zero the grads you read: like micrograd, it adds)."""
        r = lib.mg_value_backward(self._pointer, self._handle)
        if r:
            raise CEngine.value_error(r)
        if self.store.v.n >= self.reclaim_at:
            _reclaim(type(self))

    def _backward(self):
        """micrograd's: this Value's grad passed to its children, one level
        (child.grad += local gradient * self.grad), as backward does node by node."""
        r = lib.mg_value_back_one(self._pointer, self._handle)
        if r:
            raise CEngine.value_error(r)


Value.register(_Node)


RECLAIM_AT = 1 << 20  # nodes: the default store reclaims at this size, and then at 4x what it kept


def _reclaim(cls):
    """Drop the nodes no live Value of cls's store reaches (its Values are the
    instances of cls, which the garbage collector can list). With other
    threads running (any, however started: threading's count misses those
    of _thread), a Value could be in flight: then nothing happens; and C
    compacts only if no node was made since the Values were listed (a thread
    that started after that look could hold one that is not listed)."""
    store = cls.store
    if len(sys._current_frames()) == 1 and store.mode == "exact":
        nodes = store.v.n
        live = [v for v in gc.get_referrers(cls) if type(v) is cls]
        handles = ffi.new("mg_handle[]", [v._handle for v in live])
        r = lib.mg_value_compact(store.s, handles, len(live), nodes)
        if r < 0:
            raise CEngine.value_error(r)
        for v, h in zip(live, handles if r else ()):
            v._handle = h
    cls.reclaim_at = max(RECLAIM_AT, 4 * store.v.n)


_classes = weakref.WeakKeyDictionary()  # store -> a weak reference to its Value class


def _class_of(store):
    """store's Value class, made on first use. It is held weakly here (a
    class lives until the garbage collector frees it); its Values hold it."""
    cls = _classes.get(store, lambda: None)()
    if cls is None:
        with _lock:
            cls = _classes.get(store, lambda: None)()
            if cls is None:
                cls = _make_class(store)
                _classes[store] = weakref.ref(cls)
    return cls


# the one-input ops: method -> micrograd's symbol (each is mg_value_<method> in C)
UNARY = {"log": "log", "exp": "exp", "relu": "ReLU", "tanh": "tanh"}


def _make_class(store):
    cls = type("Value", (_Node,), {
        "__slots__": (), "__module__": __name__, "store": store, "_pointer": store.s,
        # backward drops the nodes no live Value reaches once the store is this big (the default store's only)
        "reclaim_at": RECLAIM_AT if _default and store is _default[0] else float("inf")})
    for name, method in _operators(cls, store.s).items():
        setattr(cls, name, method)
    return cls


def _operators(cls, p):
    """cls's ops, each with the store's pointer p and cls itself bound in."""

    def binary(symbol, op, op_number):
        """Value op other, other a Value of this store or a real number (which,
        as in the reference, becomes a leaf: made in the same C call)."""

        def method(self, other):
            if type(other) is cls:
                h = op(p, self._handle, other._handle)
            elif type(other) is float or type(other) is int:
                h = op_number(p, self._handle, other)
            elif isinstance(other, numbers.Real):
                h = op_number(p, self._handle, float(other))
            elif isinstance(other, Value):
                raise ValueError("Values from different stores cannot be combined")
            else:
                return NotImplemented
            if h < 0.0:
                raise CEngine.value_error(h)
            v = cls()  # one slot at a time: no tuple to pack and unpack
            v._handle = h
            v._symbol = symbol
            v._left = self
            v._right = other
            return v

        return method

    def unary(symbol, op):
        def method(self):
            h = op(p, self._handle)
            if h < 0.0:
                raise CEngine.value_error(h)
            v = cls()
            v._handle = h
            v._symbol = symbol
            v._left = self
            v._right = None
            return v

        return method

    add = binary("+", lib.mg_value_add, lib.mg_value_addc)
    mul = binary("*", lib.mg_value_mul, lib.mg_value_mulc)
    # the reference's __radd__ and __rmul__: self + other
    return {"__add__": add, "__radd__": add, "__mul__": mul, "__rmul__": mul,
            **{name: unary(symbol, getattr(lib, "mg_value_" + name)) for name, symbol in UNARY.items()}}
