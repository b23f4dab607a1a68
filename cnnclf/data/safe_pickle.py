"""Unpickle dataset files without letting them run code, crash, hang or exhaust memory.

A pickle names the callables that rebuild its objects, and a plain ``pickle.load`` calls
whatever it names (``os.system`` included). Dataset files arrive from shared drives, so
``load_pickle`` resolves only the few globals a pickle of numpy arrays and Python scalars
needs, for numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) writers alike, and refuses
everything else before it can be called. There is deliberately no unrestricted fallback.

An allowlist bounds what runs, not how much work or memory it takes: ``cnnclf.data.convert`` runs
this in a child process under resource limits, so a crash, hang or memory bomb of the unpickler
ends only the child. Within the allowlist:

- each allowed callable accepts only the arguments numpy's own pickles give it: ``ndarray``
  only as ``_reconstruct``'s subtype with an empty shape, dtypes only from a plain type code
  (numbers, bytes and text: never objects, fields or subarrays), array data only as bytes whose
  length matches shape times item size, and contiguous buffers;
- the bytes those callables create add up to at most ``ALLOCATION_FACTOR`` times the file (what
  bounds memory where address-space limits are not enforced, as on macOS).
"""

import _codecs
import contextvars
import functools
import math
import os
import pickle
from itertools import islice
from pathlib import Path

import numpy as np

from cnnclf.errors import DatasetError

ALLOCATION_FACTOR = 3  # protocol 2 holds each image twice: latin-1 bytes, then the array's copy
DTYPE_KINDS = "biufcSU"  # bool, integers, floats, complex, bytes, text: data without pointers
MAX_DIMENSIONS = 32  # numpy's own limit on an array's dimensions

FOLDER_ENTRIES_LOOKED_AT = 100  # naming the pickles in a folder given for a file stays quick in a huge folder
PICKLES_NAMED = 5
Refused = pickle.UnpicklingError
_budget: contextvars.ContextVar["_Budget"] = contextvars.ContextVar("pickle_allocation_budget")


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def charge(self, size: int, what: str) -> None:
        self.left -= size
        if self.left < 0:
            raise Refused(
                f"{what} would take the bytes built from the file past {ALLOCATION_FACTOR} times its size; "
                "it reuses the same data many times"
            )


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
    """What ``numpy.dtype(code)`` and the state ``BUILD`` gives it in a pickle describe: a plain
    type code and a byte order. numpy's own ``dtype.__setstate__`` trusts the flags in the state
    (an ``int64`` can be told it holds object pointers), so it is never called with file data."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype

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


class _UnpickledArray(np.ndarray):
    """The arrays ``_reconstruct`` starts: their ``BUILD`` state is checked before numpy sees it."""

    def __setstate__(self, state: object) -> None:
        # numpy writes (1, shape, dtype, is_fortran, raw bytes) for an array of plain data
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise Refused("an array's state is not (1, shape, dtype, is_fortran, data)")
        _, shape, dtype, is_fortran, data = state
        shape = _checked_shape(shape, "array state")
        dtype = _plain_dtype(dtype, "array state")
        if not isinstance(data, (bytes, bytearray)) or len(data) != math.prod(shape) * dtype.itemsize:
            raise Refused(f"array state: {math.prod(shape)} items of {dtype.itemsize} bytes need as many bytes of "
                    f"data, found {len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__}")
        _budget.get().charge(len(data), "an array")
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
    dtype = _plain_dtype(dtype, "_frombuffer")
    shape = _checked_shape(shape, "_frombuffer")
    if not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
        raise Refused("_frombuffer takes the bytes of a C- or Fortran-ordered array")
    if len(buffer) != math.prod(shape) * dtype.itemsize:
        raise Refused(f"_frombuffer: {len(buffer)} bytes do not hold an array {list(shape)} of "
                      f"{dtype.itemsize}-byte items")
    return np.frombuffer(buffer, dtype).reshape(shape, order=order)


def _scalar(dtype: object, data: object = None) -> np.generic:
    dtype = _plain_dtype(dtype, "scalar")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise Refused(f"scalar: a {dtype.str} scalar needs {dtype.itemsize} bytes of data")
    return np.frombuffer(data, dtype)[0]


def _dtype(code: object, align: object = False, copy: object = False) -> _DtypeRecipe:
    return _DtypeRecipe(_plain_dtype(code, "dtype"))


def _latin1_encode(text: object, encoding: object = "latin1") -> bytes:
    # Protocol 2 has no bytes opcode, so it stores numpy's raw buffers as
    # _codecs.encode(text, "latin1"); any other codec has no business in an image file.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        found = repr(encoding[:20]) if isinstance(encoding, str) else type(encoding).__name__
        raise Refused(f"_codecs.encode is only allowed on a string with encoding 'latin1', found encoding {found}")
    _budget.get().charge(len(text), "_codecs.encode")
    return _codecs.encode(text, "latin1")


def _allowed_globals() -> dict[tuple[str, str], _Global]:
    allowed = {
        ("numpy", "ndarray"): NDARRAY,
        ("numpy", "dtype"): _Global("numpy.dtype", _dtype),
        ("_codecs", "encode"): _Global("_codecs.encode", _latin1_encode),
    }
    for package in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x write different module paths
        allowed[(f"{package}.multiarray", "_reconstruct")] = _Global("_reconstruct", _reconstruct)
        allowed[(f"{package}.multiarray", "scalar")] = _Global("scalar", _scalar)
        allowed[(f"{package}.numeric", "_frombuffer")] = _Global("_frombuffer", _frombuffer)
    return allowed


ALLOWED_GLOBALS = _allowed_globals()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module[:100]}.{name[:100]}: a dataset pickle may only reference numpy "
                "arrays, dtypes and scalars"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refused persistent id: dataset pickles have none")


def not_a_file(path: Path) -> str:
    """What ``path``, which is not a regular file, is instead: missing, a folder (naming the first few
    pickles in it), or something else (a FIFO or a device)."""
    if path.is_dir():
        pickles = [entry.name for entry in sorted(islice(path.iterdir(), FOLDER_ENTRIES_LOOKED_AT))
                   if entry.is_file() and _looks_like_a_pickle(entry)]
        shown = ", ".join(pickles[:PICKLES_NAMED]) + (", ..." if len(pickles) > PICKLES_NAMED else "")
        return "a folder, not a pickle file" + (f"; pickles in it: {shown}" if pickles else "")
    return "not a regular file" if path.exists() else "no such file"


def _looks_like_a_pickle(path: Path) -> bool:
    if path.suffix in (".pkl", ".pickle"):
        return True
    try:
        with path.open("rb") as stream:
            return stream.read(1) == pickle.PROTO  # protocols 2 and above begin with it
    except OSError:  # unreadable: not one to suggest
        return False


def load_pickle(path: str | Path) -> object:
    """Unpickle ``path`` allowing only numpy arrays, dtypes, scalars and plain Python data.

    Raises ``DatasetError`` naming the file for a truncated, non-pickle or unsafe file; nothing the
    file names outside the allowlist is ever imported or called. Arrays come back as a subclass of
    ``numpy.ndarray`` whose only change is a checked ``__setstate__``. Only bounded in time and
    memory when run as ``cnnclf.data.convert`` runs it.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:  # buffered: the unpickler reads ahead instead of once per opcode
            token = _budget.set(_Budget(ALLOCATION_FACTOR * os.fstat(stream.fileno()).st_size))
            try:
                return _NumpyOnlyUnpickler(stream).load()
            finally:
                _budget.reset(token)
    except pickle.UnpicklingError as error:
        raise DatasetError(f"{path}: not a safe dataset pickle: {error}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as error:
        raise DatasetError(
            f"{path}: not a readable pickle (truncated or another format): "
            f"{type(error).__name__}: {str(error)[:200]}"
        ) from None
