"""The bounds pass takes numpy's usual records whole, with the same outcome as opcode by opcode:
the same memo for a legitimate file, and the same refusal for a hostile one made to look usual."""

import pickle
import pickletools

import numpy as np
import pytest

from cnnclf.data.pickle_bounds import USUAL_RECORDS, PickleBoundsError, check_pickle_bounds, walk_opcodes
from tests.conftest import report_records

PROTOCOLS = [2, 3, 4, 5]


def _dataset(protocol: int, shape: tuple[int, ...] = (28, 28)) -> bytes:
    """80 records: enough for protocols 2 and 3 to number their memo puts past 255 (LONG_BINPUT)."""
    digits = list(range(10))
    return pickle.dumps({"train": report_records(80, shape, digits, np.int64),
                         "test": report_records(10, shape, digits, np.int64, seed=1)}, protocol=protocol)


def _usual_record_at(data: bytes, protocol: int, start: int):
    """The first record from ``start`` on that the fast path's pattern matches (head only)."""
    match = USUAL_RECORDS[protocol][0].head.search(data, start)
    assert match is not None
    return match


def _fetch_positions(match) -> list[int]:
    """Where the one-byte memo indices of the record's BINGET opcodes are."""
    data = match.string
    return [match.start(group) for group in range(1, match.re.groups + 1)
            if match.end(group) - match.start(group) == 1 and data[match.start(group) - 1] == ord("h")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("shape", [(28, 28), (9, 7, 3)], ids=["gray", "rgb"])
def test_usual_records_leave_the_memo_the_opcode_by_opcode_pass_leaves(protocol, shape):
    data = _dataset(protocol, shape)
    by_opcode, _ = walk_opcodes(data, ())
    memo, usual = walk_opcodes(data, USUAL_RECORDS[protocol])
    assert memo == by_opcode
    assert usual > 45  # of 90 records: all but the first and, for 2 and 3, those with 1-byte memo puts


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_usual_record_fetching_a_container_is_refused(protocol):
    data = bytearray(_dataset(protocol))
    match = _usual_record_at(data, protocol, len(data) // 2)
    data[_fetch_positions(match)[0]] = 0  # memo entry 0: the top-level dict
    with pytest.raises(PickleBoundsError, match="appears twice"):
        check_pickle_bounds(bytes(data))


@pytest.mark.parametrize("protocol", [4, 5])  # 2 and 3 store 256 entries before their first usual record
def test_a_usual_record_fetching_an_entry_never_stored_is_refused(protocol):
    data = bytearray(_dataset(protocol))
    match = _usual_record_at(data, protocol, 0)
    stored_before = len(walk_opcodes(bytes(data[:match.start()]) + b".", ())[0])
    assert stored_before < 255
    data[_fetch_positions(match)[-1]] = 255
    with pytest.raises(PickleBoundsError, match="a memo index that was never stored"):
        check_pickle_bounds(bytes(data))


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_usual_record_storing_far_in_the_memo_is_refused(protocol):
    data = bytearray(_dataset(protocol))
    match = _usual_record_at(data, protocol, len(data) // 2)
    put = match.start(1)  # the record dict's LONG_BINPUT index
    data[put:put + 4] = (2**28).to_bytes(4, "little")
    with pytest.raises(PickleBoundsError, match="memo index 268435456 .* skips past the next free one"):
        check_pickle_bounds(bytes(data))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_usual_records_under_too_many_marks_are_refused(protocol):
    """The training split nests as usual; the test split's records, all usual, sit under 30 more marks."""
    data = _dataset(protocol)
    opcodes = list(pickletools.genops(data))
    test_key = next(index for index, (_, argument, _) in enumerate(opcodes) if argument == "test")
    test_list = next(position for opcode, _, position in opcodes[test_key:] if opcode.name == "EMPTY_LIST")
    nested = data[:test_list] + b"(" * 30 + data[test_list:]  # then the list's mark, the record's, its array's
    with pytest.raises(PickleBoundsError, match="marks nested deeper than 32"):
        check_pickle_bounds(nested)


def test_a_record_fetching_its_own_entry_is_left_to_the_opcode_by_opcode_pass():
    """Fetching a value the record itself stored is unusual but bounded: accepted, as opcode by opcode."""
    original = _dataset(4)
    data = bytearray(original)
    match = _usual_record_at(data, 4, 0)
    stored_before = len(walk_opcodes(bytes(data[:match.start()]) + b".", ())[0])
    assert stored_before + 3 < 255
    data[_fetch_positions(match)[-1]] = stored_before + 3  # the dtype's place now holds the record's empty array
    usual_in_original = walk_opcodes(original, USUAL_RECORDS[4])[1]
    memo, usual = walk_opcodes(bytes(data), USUAL_RECORDS[4])
    assert memo == walk_opcodes(bytes(data), ())[0]
    assert usual == usual_in_original - 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_usual_record_cut_in_its_image_is_refused(protocol):
    data = _dataset(protocol)
    match = _usual_record_at(data, protocol, len(data) // 2)
    with pytest.raises(PickleBoundsError, match="truncated"):
        check_pickle_bounds(data[:match.end() + 100])
