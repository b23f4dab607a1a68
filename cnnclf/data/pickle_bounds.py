"""A bounded pass over a pickle's opcodes, before anything in it is built.

An allowlist of globals stops a pickle from running code, but not from making the unpickler
itself crash, hang or allocate without end: a tuple nested 200,000 deep overflows the C stack
when hashed, a tuple graph shared through the memo (``t = (t, t)`` 90 times) is hashed forever,
and a memo index of 2**28 in a 28-byte file allocates gigabytes. ``check_pickle_bounds`` walks
the opcodes once, following only how deeply containers nest on the unpickler's stack, and
refuses, before unpickling starts:

- a list, tuple or dict fetched again from the memo (a dataset pickle builds each container once;
  only strings, numbers, numpy globals, dtypes and arrays are shared);
- containers or marks nested deeper than ``MAX_DEPTH``;
- a memo index past the next free one, and any length past the end of the data;
- opcodes a pickle of plain data and numpy arrays never holds (persistent ids, extension codes,
  ``INST``/``OBJ``/``NEWOBJ``, out-of-band buffers, sets, ``DUP``/``POP``).

The pass reads each opcode once and skips payloads (image bytes) without looking at them. A record
written the way numpy and ``pickle.dump`` write every one of a dataset's records (``UsualRecord``)
is taken whole, with the same checks, and anything else one opcode at a time.
"""

import operator
import pickle
import re
import struct

MAX_DEPTH = 32  # a dataset nests 5 deep: {split: [{'image': _frombuffer((buffer, dtype, shape))}]}

# What each opcode the pass accepts does to the stack; a code not listed is refused. The number
# beside each is the size of its fixed argument, of its length prefix (PUSH_SIZED), its number of
# text lines (PUSH_LINES), or how many items it takes from the top of the stack.
PUSH_SCALAR = 1      # a number, None or bool
PUSH_SIZED = 2       # a string, bytes or long integer: a length, then a payload that is skipped
PUSH_LINES = 3       # protocol 0 text (INT, FLOAT, STRING...) and GLOBAL's module and name lines
REPLACE_TWO = 4      # REDUCE, STACK_GLOBAL: two items become one that holds no container (the
                     # allowed callables return arrays, dtypes, numpy scalars or bytes)
PUSH_EMPTY = 5       # an empty list, tuple or dict
MARK = 6
NEW_FROM_MARK = 7    # TUPLE, LIST, DICT: a new container of the items above the mark
INTO_FROM_MARK = 8   # APPENDS, SETITEMS: the items above the mark go into the container below it
NEW_FROM_TOP = 9     # TUPLE1, TUPLE2, TUPLE3
INTO_FROM_TOP = 10   # APPEND, SETITEM: the top item(s) go into the container below them
BUILD = 11           # pops the state; the object below it stays
MEMO_PUT = 12        # a memo index of 1 or 4 bytes, or a decimal line (0)
MEMOIZE = 13
MEMO_GET = 14
NO_STACK = 15        # PROTO, FRAME
STOP = 16

_OPCODES = {
    "BININT": (PUSH_SCALAR, 4), "BININT1": (PUSH_SCALAR, 1), "BININT2": (PUSH_SCALAR, 2),
    "NONE": (PUSH_SCALAR, 0), "NEWTRUE": (PUSH_SCALAR, 0), "NEWFALSE": (PUSH_SCALAR, 0),
    "BINFLOAT": (PUSH_SCALAR, 8),
    "LONG1": (PUSH_SIZED, 1), "LONG4": (PUSH_SIZED, 4),
    "SHORT_BINSTRING": (PUSH_SIZED, 1), "BINSTRING": (PUSH_SIZED, 4),
    "SHORT_BINBYTES": (PUSH_SIZED, 1), "BINBYTES": (PUSH_SIZED, 4), "BINBYTES8": (PUSH_SIZED, 8),
    "BYTEARRAY8": (PUSH_SIZED, 8),
    "SHORT_BINUNICODE": (PUSH_SIZED, 1), "BINUNICODE": (PUSH_SIZED, 4), "BINUNICODE8": (PUSH_SIZED, 8),
    "INT": (PUSH_LINES, 1), "LONG": (PUSH_LINES, 1), "STRING": (PUSH_LINES, 1), "UNICODE": (PUSH_LINES, 1),
    "FLOAT": (PUSH_LINES, 1), "GLOBAL": (PUSH_LINES, 2),
    "REDUCE": (REPLACE_TWO, 0), "STACK_GLOBAL": (REPLACE_TWO, 0),
    "EMPTY_LIST": (PUSH_EMPTY, 0), "EMPTY_TUPLE": (PUSH_EMPTY, 0), "EMPTY_DICT": (PUSH_EMPTY, 0),
    "MARK": (MARK, 0),
    "TUPLE": (NEW_FROM_MARK, 0), "LIST": (NEW_FROM_MARK, 0), "DICT": (NEW_FROM_MARK, 0),
    "APPENDS": (INTO_FROM_MARK, 0), "SETITEMS": (INTO_FROM_MARK, 0),
    "TUPLE1": (NEW_FROM_TOP, 1), "TUPLE2": (NEW_FROM_TOP, 2), "TUPLE3": (NEW_FROM_TOP, 3),
    "APPEND": (INTO_FROM_TOP, 1), "SETITEM": (INTO_FROM_TOP, 2),
    "BUILD": (BUILD, 0),
    "BINPUT": (MEMO_PUT, 1), "LONG_BINPUT": (MEMO_PUT, 4), "PUT": (MEMO_PUT, 0), "MEMOIZE": (MEMOIZE, 0),
    "BINGET": (MEMO_GET, 1), "LONG_BINGET": (MEMO_GET, 4), "GET": (MEMO_GET, 0),
    "PROTO": (NO_STACK, 1), "FRAME": (NO_STACK, 8),
    "STOP": (STOP, 0),
}


def _tables() -> tuple[list[int], list[int], dict[int, str]]:
    import pickletools

    actions, sizes, names = [0] * 256, [0] * 256, {}
    for opcode in pickletools.opcodes:
        code = ord(opcode.code)
        names[code] = opcode.name
        if opcode.name in _OPCODES:
            actions[code], sizes[code] = _OPCODES[opcode.name]
    return actions, sizes, names


ACTIONS, SIZES, NAMES = _tables()


class UsualRecord:
    """One record, ``{'image': array, 'label': int}``, in the opcodes numpy and ``pickle.dump`` write
    for every record after the first (keys, globals, dtype and short strings come from the memo).

    ``skip`` takes such a record whole, as one regular expression up to the image's payload and one
    after it, when each of its memo fetches finds an entry stored before it that holds no container
    and its memo puts take the next free indices. It then leaves what the opcode-by-opcode pass would:
    one dict on the stack, and ``depths`` in the memo. Anything else is left to that pass.
    """

    MARKS = 2  # marks a record holds open at once: its own, and its array's arguments or state

    def __init__(self, head: list[bytes], tail: list[bytes], depths: tuple[int, ...]) -> None:
        (self.head, head_kinds), (self.tail, tail_kinds) = _compile(head), _compile(tail)
        kinds = head_kinds + tail_kinds
        self.length = head_kinds.index(_LENGTH)
        self.fetched = operator.itemgetter(*(i for i, kind in enumerate(kinds) if kind == _GET))
        puts = [i for i, kind in enumerate(kinds) if kind == _PUT]
        self.puts = operator.itemgetter(*puts) if puts else None
        self.put_indices = struct.Struct(f"<{len(puts)}I")
        self.depths = depths

    def skip(self, data: bytes, start: int, memo: list[int]) -> int:
        """The position after the record at ``start`` (its memo entries added), or -1 where it is not usual."""
        head = self.head.match(data, start)
        if head is None:
            return -1
        head_groups = head.groups()
        tail = self.tail.match(data, head.end() + int.from_bytes(head_groups[self.length], "little"))
        if tail is None:
            return -1
        groups, stored = head_groups + tail.groups(), len(memo)
        if any(index >= stored or memo[index] for index in b"".join(self.fetched(groups))):
            return -1
        numbered = range(stored, stored + len(self.depths))
        if self.puts and b"".join(self.puts(groups)) != self.put_indices.pack(*numbered):
            return -1
        memo.extend(self.depths)
        return tail.end()


_GET, _PUT, _LENGTH = "get", "put", "length"
GET, NUMBERED_PUT = (_GET, rb"h(.)"), (_PUT, rb"r(....)")  # BINGET, LONG_BINPUT
LENGTH4, LENGTH8 = (_LENGTH, rb"(....)"), (_LENGTH, rb"(.{8})")
SCALAR = rb"(?:K.|M..|J....)"  # BININT1, BININT2, BININT: a label, a size
SHAPE = rb"(?:%s\x85|%s{2}\x86|%s{3}\x87)" % (SCALAR, SCALAR, SCALAR)  # a 1-, 2- or 3-tuple of sizes


def _compile(parts: list) -> tuple[re.Pattern, list[str]]:
    """A pattern of literal opcodes and (kind, group) parts; the kind of each group, in order."""
    source, kinds = b"", []
    for part in parts:
        if isinstance(part, tuple):
            kinds.append(part[0])
            part = part[1]
        source += part
    return re.compile(source, re.DOTALL), kinds


def _reconstruct_record(put, payload: list, after_payload: list, depths: tuple[int, ...]) -> UsualRecord:
    """``{'image': _reconstruct(ndarray, (0,), b'b')`` filled by ``BUILD (1, shape, dtype, fortran, data)``."""
    head = [b"}", put, rb"\(", GET, GET, GET, rb"K\x00\x85", put, GET, rb"\x87", put, b"R", put,
            rb"\(K\x01", SHAPE, put, GET, rb"[\x88\x89]", *payload]
    return UsualRecord(head, [*after_payload, put, b"t", put, b"b", GET, SCALAR, b"u"], depths)


MEMOIZE = rb"\x94"
USUAL_RECORDS = {
    # protocol 2 has no bytes: the data is _codecs.encode(BINUNICODE text, 'latin1')
    2: (_reconstruct_record(NUMBERED_PUT, [GET, b"X", LENGTH4], [NUMBERED_PUT, GET, rb"\x86", NUMBERED_PUT, b"R"],
                            (1, 1, 2, 0, 1, 0, 1, 0, 2)),),
    3: (_reconstruct_record(NUMBERED_PUT, [b"B", LENGTH4], [], (1, 1, 2, 0, 1, 0, 2)),),
    4: (_reconstruct_record(MEMOIZE, [b"B", LENGTH4], [], (1, 1, 2, 0, 1, 0, 2)),),
    # protocol 5: {'image': _frombuffer(BYTEARRAY8 data, dtype, shape, order)}
    5: (UsualRecord([b"}", MEMOIZE, rb"\(", GET, GET, rb"\(\x96", LENGTH8],
                    [MEMOIZE, GET, SHAPE, MEMOIZE, GET, b"t", MEMOIZE, b"R", MEMOIZE, GET, SCALAR, b"u"],
                    (1, 0, 1, 2, 0)),
        _reconstruct_record(MEMOIZE, [b"B", LENGTH4], [], (1, 1, 2, 0, 1, 0, 2))),
}


class PickleBoundsError(pickle.UnpicklingError):
    """The pickle asks for work or memory out of proportion to its size."""


def check_pickle_bounds(data: bytes) -> None:
    """Raise ``PickleBoundsError`` if unpickling ``data`` could crash, hang or allocate without bound."""
    protocol = data[1] if data[:1] == b"\x80" and len(data) > 1 else 0
    walk_opcodes(data, USUAL_RECORDS.get(protocol, ()))


def walk_opcodes(data: bytes, usual_records: tuple[UsualRecord, ...]) -> tuple[list[int], int]:
    """The bounded pass; how deeply each memo entry nests and how many records matched ``usual_records``."""
    # Per stack item and per memo entry: how deeply containers nest in it (0 for no container).
    stack: list[int] = []
    marks: list[int] = []
    memo: list[int] = []
    push, memoize = stack.append, memo.append
    pos, end, usual = 0, len(data), 0
    try:
        while pos < end:
            code = data[pos]
            pos += 1
            # The opcodes that make up most of a dataset pickle (protocol 2's memo puts, protocol 4's
            # MEMOIZE), by hand: this loop runs once or more per record of the dataset.
            if code == 0x68:  # BINGET
                if memo[data[pos]]:
                    raise PickleBoundsError(_REUSED_CONTAINER.format(pos - 1))
                pos += 1
                push(0)
            elif code == 0x72:  # LONG_BINPUT
                index = _UINT4(data, pos)[0]
                if index == len(memo):
                    memoize(stack[-1])
                else:
                    _memo_put(memo, index, stack[-1], pos - 1)
                pos += 4
            elif code == 0x94:  # MEMOIZE
                memoize(stack[-1])
            elif code == 0x4B:  # BININT1
                pos += 1
                push(0)
            elif code == 0x28:  # MARK
                if len(marks) == MAX_DEPTH:
                    raise PickleBoundsError(f"marks nested deeper than {MAX_DEPTH} at byte {pos - 1}")
                marks.append(len(stack))
            elif code == 0x52:  # REDUCE
                del stack[-1]
                stack[-1] = 0
            elif code == 0x86:  # TUPLE2
                last = stack.pop()
                depth = max(stack[-1], last) + 1
                if depth > MAX_DEPTH:
                    raise PickleBoundsError(f"containers nested deeper than {MAX_DEPTH} at byte {pos - 1}")
                stack[-1] = depth
            elif code == 0x7D and usual_records and len(marks) <= MAX_DEPTH - UsualRecord.MARKS:  # EMPTY_DICT
                push(1)
                for record in usual_records:
                    after = record.skip(data, pos - 1, memo)
                    if after > 0:
                        pos, usual = after, usual + 1
                        break
            else:
                pos = _other_opcode(data, pos, code, stack, marks, memo)
                if pos < 0:
                    return memo, usual
    except IndexError:
        raise PickleBoundsError(f"malformed pickle at byte {pos - 1}: an opcode finds too few items on the "
                                "stack, or a memo index that was never stored") from None
    raise PickleBoundsError(f"the data ends at byte {end} without a STOP opcode: truncated")


def _other_opcode(data: bytes, pos: int, code: int, stack: list[int], marks: list[int], memo: list[int]) -> int:
    """Follow one opcode that starts at ``pos - 1``; the position after it, or -1 at STOP."""
    action, size = ACTIONS[code], SIZES[code]
    if action in (INTO_FROM_MARK, NEW_FROM_MARK):
        _nest(stack, _close_mark(stack, marks), action == INTO_FROM_MARK, pos)
    elif action == REPLACE_TWO:
        del stack[-1]
        stack[-1] = 0
    elif action == PUSH_EMPTY:
        stack.append(1)
    elif action == PUSH_SCALAR:
        pos += size
        stack.append(0)
    elif action == PUSH_SIZED:
        length = data[pos] if size == 1 else _UINT4(data, pos)[0] if size == 4 else _UINT8(data, pos)[0]
        pos += size + length
        stack.append(0)
    elif action in (NEW_FROM_TOP, INTO_FROM_TOP):
        _nest(stack, _take(stack, size), action == INTO_FROM_TOP, pos)
    elif action == BUILD:
        del stack[-1]
    elif action == MEMO_GET:
        index, pos = _memo_index(data, pos, size)
        if memo[index]:
            raise PickleBoundsError(_REUSED_CONTAINER.format(pos - 1))
        stack.append(0)
    elif action == MEMO_PUT:
        index, after = _memo_index(data, pos, size)
        _memo_put(memo, index, stack[-1], pos - 1)
        pos = after
    elif action == NO_STACK:
        pos += size
    elif action == PUSH_LINES:
        pos = _after_line(data, pos, size)
        stack.append(0)
    elif action == STOP:
        return -1
    else:
        raise PickleBoundsError(f"opcode {NAMES.get(code, hex(code))} at byte {pos - 1} is not allowed in a "
                                "dataset pickle")
    if pos > len(data):
        raise PickleBoundsError(f"an argument at byte {pos - 1} runs past the end of the data "
                                f"({len(data)} bytes): truncated")
    return pos


def _close_mark(stack: list[int], marks: list[int]) -> int:
    """Remove the items above the last mark; the nesting depth of a container holding them."""
    start = marks.pop()
    depth = max(stack[start:], default=0) + 1
    del stack[start:]
    return depth


def _take(stack: list[int], count: int) -> int:
    """Remove the top ``count`` items, which go into a container; that container's nesting depth."""
    if len(stack) < count:
        raise IndexError
    depth = max(stack[-count:]) + 1
    del stack[-count:]
    return depth


_REUSED_CONTAINER = ("a list, tuple or dict appears twice (fetched again from the memo at byte {}); cnnclf "
                     "reads files in which each split, record and tuple is its own object: save copies")
_UINT4 = struct.Struct("<I").unpack_from
_UINT8 = struct.Struct("<Q").unpack_from


def _nest(stack: list[int], depth: int, into_container_below: bool, pos: int) -> None:
    if depth > MAX_DEPTH:
        raise PickleBoundsError(f"containers nested deeper than {MAX_DEPTH} at byte {pos - 1}")
    if not into_container_below:
        stack.append(depth)
    elif depth > stack[-1]:  # IndexError when there is no container below
        stack[-1] = depth


def _memo_index(data: bytes, pos: int, size: int) -> tuple[int, int]:
    """The memo index argument at ``pos`` (``size`` bytes, or a decimal line when 0) and the position after it."""
    if size == 1:
        return data[pos], pos + 1
    if size == 4:
        return _UINT4(data, pos)[0], pos + 4
    after = _after_line(data, pos, 1)
    text = data[pos:after - 1]
    if not text.isdigit() or len(text) > 12:
        raise PickleBoundsError(f"memo index {text[:20]!r} at byte {pos - 1} is not a small number")
    return int(text), after


def _memo_put(memo: list[int], index: int, depth: int, position: int) -> None:
    if index < len(memo):
        memo[index] = depth
    elif index == len(memo):
        memo.append(depth)
    else:
        # A pickler numbers memo entries 0, 1, 2...; a far index only makes the unpickler allocate.
        raise PickleBoundsError(f"memo index {index} at byte {position} skips past the next free one ({len(memo)})")


def _after_line(data: bytes, pos: int, lines: int) -> int:
    for _ in range(lines):
        pos = data.find(b"\n", pos) + 1
        if pos == 0:
            raise PickleBoundsError("a text argument has no end of line: truncated")
    return pos
