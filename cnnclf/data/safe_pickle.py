"""Unpickle dataset files allowing only the globals numpy's own pickles name, each with the arguments numpy gives it;
anything else is refused before it is imported or called (docs/safety.md). Time and memory: the child (``convert``).
"""

import _codecs
import contextvars
import functools
import math
import pickle
from itertools import islice
from pathlib import Path

import numpy as np

from cnnclf.errors import DatasetError

DTYPE_KINDS = "biufcSU"  # bool, integers, floats, complex, bytes, text: data without pointers
MAX_DIMENSIONS = 32  # numpy's own limit on an array's dimensions
Refused = pickle.UnpicklingError


class Budget:
    """The bytes a reader may still build from a file: the figure the child's address-space limit enforces
    where the OS does, counted by the unpickler and the record copy where it does not (macOS)."""

    def __init__(self, limit: float) -> None:
        self.left = limit

    def charge(self, size: int, what: str) -> None:
        self.left -= size
        if self.left < 0:
            raise MemoryError(what)


_budget: contextvars.ContextVar[Budget] = contextvars.ContextVar("pickle_budget")


class _Global:
    """A global a dataset pickle may name: calls ``function``, and refuses ``BUILD`` on itself
    (which would otherwise set attributes on a function of this module)."""

    __slots__ = ("name", "function")

    def __init__(self, name: str, function) -> None:
        self.name, self.function = name, function

    def __call__(self, *args):
        return self.function(*args)

    def __setstate__(self, state: object) -> None:
        raise Refused(f"BUILD on the global {self.name} is not allowed")


class _DtypeRecipe:
    """``numpy.dtype(code, align, copy)`` and its ``BUILD`` state, of which only the byte order is used: numpy's own
    ``dtype.__setstate__`` trusts the state's flags (an ``int64`` can be told it holds object pointers)."""

    __slots__ = ("dtype",)

    def __init__(self, code: object, align: object = False, copy: object = False) -> None:
        self.dtype = _plain_dtype(code, "dtype")

    def __setstate__(self, state: object) -> None:
        # numpy writes (3, byte order, None, None, None, item size, alignment, flags) for a plain dtype
        if (not isinstance(state, tuple) or len(state) != 8 or state[0] != 3
                or state[1] not in ("<", ">", "|", "=") or state[2:5] != (None, None, None)):
            raise Refused(f"the state of dtype {self.dtype.str} is not a plain dtype's (byte order only)")
        self.dtype = self.dtype.newbyteorder(state[1]) if state[1] in "<>" else self.dtype


def _plain_dtype(value: object, what: str) -> np.dtype:
    if isinstance(value, _DtypeRecipe):
        return value.dtype
    if not isinstance(value, (str, bytes)) or len(value) > 16:
        raise Refused(f"{what}: expected a numpy type code, found {type(value).__name__}")
    return _dtype_of_code(value, what)


@functools.lru_cache(maxsize=64)  # numpy's pickles name the same few codes once per array
def _dtype_of_code(code: str | bytes, what: str) -> np.dtype:
    try:
        dtype = np.dtype(code.decode("latin1") if isinstance(code, bytes) else code)
    except (TypeError, ValueError, OverflowError):
        raise Refused(f"{what}: {code!r} is not a numpy type code") from None
    if dtype.kind not in DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise Refused(f"{what}: dtype {code!r} is not allowed; a dataset holds numbers (no objects, fields "
                      "or subarrays)")
    return dtype


def _checked_shape(shape: object, what: str) -> tuple[int, ...]:
    if isinstance(shape, tuple) and len(shape) <= MAX_DIMENSIONS:
        for size in shape:  # a loop, not all(...): this runs twice per array, 140,000 times for MNIST
            if type(size) is not int or not 0 <= size < 2**63:
                break
        else:
            return shape
    raise Refused(f"{what}: expected a shape (a tuple of at most {MAX_DIMENSIONS} sizes), found {type(shape).__name__}")


def _plain_array(shape: object, dtype: object, data: object, what: str) -> tuple[tuple[int, ...], np.dtype, bytes]:
    """An array's checked shape, dtype and data: bytes, as many as the shape and the item size ask for."""
    shape, dtype = _checked_shape(shape, what), _plain_dtype(dtype, what)
    if not isinstance(data, (bytes, bytearray)) or len(data) != math.prod(shape) * dtype.itemsize:
        found = len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__
        raise Refused(f"{what}: {math.prod(shape)} items of {dtype.itemsize} bytes need as many bytes of data, "
                      f"found {found}")
    return shape, dtype, data


class _UnpickledArray(np.ndarray):
    """The arrays ``_reconstruct`` starts: their ``BUILD`` state is checked before numpy sees it."""

    def __setstate__(self, state: object) -> None:
        # numpy writes (1, shape, dtype, is_fortran, raw bytes) for an array of plain data
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise Refused("an array's state is not (1, shape, dtype, is_fortran, data)")
        _, shape, dtype, is_fortran, data = state
        shape, dtype, data = _plain_array(shape, dtype, data, "array state")
        _budget.get().charge(len(data), "the arrays of the file")
        np.ndarray.__setstate__(self, (1, shape, dtype, bool(is_fortran), data))


def _ndarray(*args: object) -> np.ndarray:
    raise Refused("numpy.ndarray may only be named as the subtype of numpy's _reconstruct, not called")


NDARRAY = _Global("numpy.ndarray", _ndarray)


def _reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    # numpy's pickles start every array empty, as _reconstruct(ndarray, (0,), b'b'), and BUILD fills it
    if subtype is not NDARRAY or math.prod(_checked_shape(shape, "_reconstruct")) != 0:
        raise Refused("_reconstruct only starts an empty numpy.ndarray, which BUILD then fills")
    return _UnpickledArray(shape, _plain_dtype(dtype, "_reconstruct"))


def _frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    if order not in ("C", "F"):
        raise Refused("_frombuffer takes the bytes of a C- or Fortran-ordered array")
    shape, dtype, buffer = _plain_array(shape, dtype, buffer, "_frombuffer")
    return np.frombuffer(buffer, dtype).reshape(shape, order=order)


def _scalar(dtype: object, data: object = None) -> np.generic:
    _, dtype, data = _plain_array((), dtype, data, "scalar")
    return np.frombuffer(data, dtype)[0]


def _latin1_encode(text: object, encoding: object = "latin1") -> bytes:
    # Protocol 2 has no bytes opcode, so it stores numpy's raw buffers as _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        found = repr(encoding[:20]) if isinstance(encoding, str) else type(encoding).__name__
        raise Refused(f"_codecs.encode is only allowed on a string with encoding 'latin1', found encoding {found}")
    _budget.get().charge(len(text), "the strings of the file")
    return _codecs.encode(text, "latin1")


ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): _Global("numpy.dtype", _DtypeRecipe),
    ("_codecs", "encode"): _Global("_codecs.encode", _latin1_encode),
    # numpy 1.x and 2.x write different module paths
    **{(f"{package}.{module}", name): _Global(name, function) for package in ("numpy.core", "numpy._core")
       for module, name, function in (("multiarray", "_reconstruct", _reconstruct), ("multiarray", "scalar", _scalar),
                                      ("numeric", "_frombuffer", _frombuffer))},
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise Refused(f"refused global {module[:100]}.{name[:100]}: a dataset pickle may only reference numpy "
                          "arrays, dtypes and scalars") from None

    def persistent_load(self, pid: object) -> object:
        raise Refused("refused persistent id: dataset pickles have none")


def not_a_file(path: Path) -> str:
    """What ``path``, not a regular file, is: missing, a folder (naming the first pickles in it), or other."""
    if path.is_dir():
        pickles = [entry.name for entry in sorted(islice(path.iterdir(), 100))  # quick in a huge folder
                   if entry.is_file() and _looks_like_a_pickle(entry)]
        shown = ", ".join(pickles[:5]) + (", ..." if len(pickles) > 5 else "")
        return "a folder, not a pickle file" + (f"; pickles in it: {shown}" if pickles else "")
    return "not a regular file" if path.exists() else "no such file"


def _looks_like_a_pickle(path: Path) -> bool:
    if path.suffix in (".pkl", ".pickle"):
        return True
    try:
        with path.open("rb") as stream:
            return stream.read(1) == pickle.PROTO  # protocols 2 and above begin with it
    except OSError:
        return False


def load_pickle(path: str | Path, budget: Budget | None = None) -> object:
    """Unpickle ``path`` allowing only numpy arrays, dtypes, scalars and plain Python data; what the file
    builds is charged to ``budget``. A truncated, non-pickle or unsafe file is a ``DatasetError`` naming it."""
    path = Path(path)
    token = _budget.set(budget or Budget(math.inf))
    try:
        with path.open("rb") as stream:  # buffered: the unpickler reads ahead instead of once per opcode
            if (start := stream.peek(1)[:8]) and start[:1] != pickle.PROTO:
                raise Refused(f"it begins with {start!r}, and a dataset pickle (protocol 2 to 5, as pickle.dump "
                              "and numpy write them) with byte 0x80")
            return _NumpyOnlyUnpickler(stream).load()
    except Refused as error:
        raise DatasetError(f"{path}: not a safe dataset pickle: {error}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as error:
        raise DatasetError(f"{path}: not a readable pickle (truncated or another format): "
                           f"{type(error).__name__}: {str(error)[:200]}") from None
    finally:
        _budget.reset(token)
