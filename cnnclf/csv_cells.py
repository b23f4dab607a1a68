"""Cells of the CSV files cnnclf writes, made safe to open in a spreadsheet.

Class names and file names come from checkpoints and shared drives; a cell such as
``=HYPERLINK(...)`` or ``=cmd|...`` is run as a formula by spreadsheet programs, so a text cell
that starts like a formula is written with a leading apostrophe (OWASP's advice). A file name
that is not UTF-8 (Python keeps its bytes as surrogates) is written with replacement characters.
"""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    if not isinstance(value, str):
        return value
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value
