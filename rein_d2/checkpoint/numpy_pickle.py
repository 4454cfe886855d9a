"""detectron2 model-zoo ``.pkl`` files (pickled dicts of numpy arrays), unpickled without calling
numpy's own reconstructors on file data.

numpy's reconstructors build arrays and scalars from file bytes in whatever dtype the file
describes: a dtype with its flags crafted (an object dtype that no longer says it holds objects)
makes them copy file bytes into object pointers, and ``numpy.ndarray(shape, "O", buffer)`` does
the same. Here the pickle's numpy globals are inert stand-ins: a dtype is rebuilt from its name
alone once its whole description has been checked to be that of a plain numeric dtype, and an
array is a copy of exactly the bytes its shape and dtype need.
"""
import math
import reprlib
import pickle
from collections import OrderedDict

import numpy as np

__all__ = ["RefusedPickle", "ModelZooUnpickler", "load_model_zoo"]

_NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex


class _NdarrayName:
    """numpy.ndarray as a pickle names it: an argument of _reconstruct, never called (called on
    file data, ``ndarray(shape, dtype, buffer)`` would take any dtype, object pointers too)."""

    def __call__(self, *args, **kwargs):
        raise RefusedPickle("numpy.ndarray called on file data")


_NDARRAY = _NdarrayName()


class RefusedPickle(pickle.UnpicklingError):
    """A pickle that describes something a model-zoo file never holds; the message says what."""


class _DType:
    """``numpy.dtype(name, align, copy)`` then BUILD(state), as numpy pickles a dtype."""

    def __init__(self, name, align=False, copy=True):
        if not isinstance(name, str):
            raise RefusedPickle(f"a numpy dtype named by a {type(name).__name__}")
        try:
            plain = np.dtype(name)
        except (TypeError, ValueError):
            raise RefusedPickle(f"an unknown numpy dtype {reprlib.repr(name)}") from None
        if plain.kind not in _NUMERIC_KINDS or plain.fields is not None or plain.subdtype is not None:
            raise RefusedPickle(f"numpy dtype {reprlib.repr(name)} ({plain.kind!r} kind), not plain numeric")
        self.name, self.plain, self.dtype = name, plain, None

    def __setstate__(self, state):
        # Everything but the byte order must be what numpy itself writes for this dtype: a file
        # that changes the flags, fields or sizes describes another dtype under a numeric name.
        expected = self.plain.__reduce__()[2]
        if not (isinstance(state, tuple) and len(state) in (8, 9)):
            raise RefusedPickle(f"numpy dtype {self.name!r} with a description {reprlib.repr(state)}")
        fields = ("subarray", "names", "fields", "itemsize", "alignment", "flags", "metadata")
        crafted = [f"{field} {reprlib.repr(got)} (numpy writes {want!r})" for field, got, want
                   in zip(fields, state[2:], expected[2:8] + (None,)) if got != want]
        if crafted:
            raise RefusedPickle(f"numpy dtype {self.name!r} with crafted {', '.join(crafted)}")
        order = state[1]
        if order in ("<", ">"):
            self.dtype = self.plain.newbyteorder(order)
        elif order == "|" and self.plain.itemsize == 1:
            self.dtype = self.plain
        else:
            raise RefusedPickle(f"numpy dtype {self.name!r} with byte order {reprlib.repr(order)}")

    def checked(self) -> np.dtype:
        if self.dtype is None:
            raise RefusedPickle(f"numpy dtype {self.name!r} used before its description")
        return self.dtype


def _array(raw, dtype, shape, fortran=False) -> np.ndarray:
    """A writable copy of ``raw`` (exactly the bytes ``shape`` and ``dtype`` need)."""
    if not isinstance(dtype, _DType):
        raise RefusedPickle(f"a numpy array whose dtype is a {type(dtype).__name__}")
    dt = dtype.checked()
    if isinstance(raw, str):  # Python 2 pickles read with encoding="latin1"
        raw = raw.encode("latin1")
    if isinstance(raw, pickle.PickleBuffer):
        raw = raw.raw()
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise RefusedPickle(f"numpy array data as a {type(raw).__name__}, not bytes")
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise RefusedPickle(f"numpy array shape {reprlib.repr(shape)}")
    count = math.prod(shape)
    if len(raw) != count * dt.itemsize:
        raise RefusedPickle(f"numpy array of shape {shape} and dtype {dt} with {len(raw)} bytes "
                            f"of data instead of {count * dt.itemsize}")
    flat = np.frombuffer(raw, dtype=dt, count=count)
    return np.array(flat.reshape(shape, order="F" if fortran else "C"), copy=True)


class _PendingArray:
    """``numpy.core.multiarray._reconstruct(ndarray, ...)``: the array comes with BUILD(state)."""
    array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise RefusedPickle(f"numpy array state {type(state).__name__}")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _array(raw, dtype, shape, bool(fortran))


def _reconstruct(subtype, shape, typecode):
    if subtype is not _NDARRAY:
        raise RefusedPickle(f"a numpy array of class {reprlib.repr(subtype)}")
    return _PendingArray()


def _scalar(dtype, raw):
    return _array(raw, dtype, (1,))[0]


def _frombuffer(buf, dtype, shape, order):  # how pickle protocol 5 writes contiguous arrays
    return _array(buf, dtype, tuple(shape), order == "F")


def _encode(text, encoding="utf-8"):  # _codecs.encode: how Python 3 writes bytes at protocol 2
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickle(f"_codecs.encode of a {type(text).__name__} as {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args):  # bytes(): how Python 3 writes b"" (an empty array's data) below protocol 3
    if args:
        raise RefusedPickle(f"bytes of a {type(args[0]).__name__}")
    return b""


_GLOBALS = {("collections", "OrderedDict"): OrderedDict, ("_codecs", "encode"): _encode,
            ("__builtin__", "bytes"): _empty_bytes, ("builtins", "bytes"): _empty_bytes,
            ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _DType}
for _core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 names
    _GLOBALS.update({(f"{_core}.multiarray", "_reconstruct"): _reconstruct,
                     (f"{_core}.multiarray", "scalar"): _scalar,
                     (f"{_core}.numeric", "_frombuffer"): _frombuffer})


class ModelZooUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"GLOBAL {module}.{name}") from None


def _materialize(obj, seen):
    """``obj`` with every pending array replaced by its array (containers changed in place)."""
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise RefusedPickle("a numpy array without its data")
        return obj.array
    if id(obj) in seen or not isinstance(obj, (dict, list, tuple)):
        return obj
    seen.add(id(obj))
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _materialize(v, seen)
    elif isinstance(obj, list):
        obj[:] = [_materialize(v, seen) for v in obj]
    else:
        obj = tuple(_materialize(v, seen) for v in obj)
    return obj


def load_model_zoo(f):
    """The object a model-zoo pickle in file ``f`` holds: containers, numbers, strings and
    numpy arrays of plain numeric dtypes. Raises pickle.UnpicklingError (RefusedPickle for what
    such files never hold, "GLOBAL module.name" for any other global)."""
    return _materialize(ModelZooUnpickler(f, encoding="latin1").load(), set())
