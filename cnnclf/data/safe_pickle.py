"""Unpickle dataset files without letting them run code.

A pickle names the callables that rebuild its objects, and a plain ``pickle.load`` calls
whatever it names (``os.system`` included). Dataset files arrive from shared drives, so
``load_pickle`` resolves only the few globals a pickle of numpy arrays and Python scalars
needs, for numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) writers alike, and refuses
everything else before it can be called. There is deliberately no unrestricted fallback.
"""

import _codecs
import pickle
from pathlib import Path

import numpy as np

from cnnclf.errors import DatasetError


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol 2 has no bytes opcode, so it stores numpy's raw buffers as
    # _codecs.encode(text, "latin1"); any other codec has no business in an image file.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return _codecs.encode(text, encoding)


def _numpy_core_functions() -> dict[str, object]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    return {
        "_reconstruct": multiarray._reconstruct,
        "scalar": multiarray.scalar,
        "_frombuffer": numeric._frombuffer,
    }


def _allowed_globals() -> dict[tuple[str, str], object]:
    core = _numpy_core_functions()
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = core["_reconstruct"]
        allowed[(f"{package}.multiarray", "scalar")] = core["scalar"]
        allowed[(f"{package}.numeric", "_frombuffer")] = core["_frombuffer"]
    return allowed


ALLOWED_GLOBALS = _allowed_globals()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: a dataset pickle may only reference numpy "
                "arrays, dtypes and scalars"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refused persistent id: dataset pickles have none")


def load_pickle(path: str | Path) -> object:
    """Unpickle ``path`` allowing only numpy arrays, dtypes, scalars and plain Python data.

    Raises ``DatasetError`` naming the file for a missing, empty, truncated, non-pickle or
    unsafe file; nothing the file names outside the allowlist is ever imported or called.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (expected a pickled dataset)")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty (expected a pickled dataset)")
    with path.open("rb") as stream:
        try:
            return _NumpyOnlyUnpickler(stream).load()
        except pickle.UnpicklingError as error:
            raise DatasetError(f"{path}: not a safe dataset pickle: {error}") from None
        except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
                OverflowError, MemoryError, UnicodeDecodeError) as error:
            raise DatasetError(
                f"{path}: not a readable pickle (truncated or another format): "
                f"{type(error).__name__}: {error}"
            ) from None
