"""Read the subscriber list (CSV) as a stream of recipients and row problems."""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from ..errors import ConfigError, ContentError, DigestError
from ..message import Recipient


@dataclass(frozen=True)
class RowProblem:
    """A row that is skipped, with its line number."""

    line: int
    message: str


def normalise_address(address: str) -> str:
    """Check an address (syntax only, no DNS) and return its normal form; raise ValueError.

    Internationalised domains and UTF-8 local parts are valid; ``envelope_address``
    gives the form the SMTP envelope takes.
    """
    try:
        result = validate_email(address.strip(), check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as e:
        raise ValueError(str(e)) from e
    return result.normalized


@functools.lru_cache(maxsize=4096)
def envelope_address(address: str) -> str:
    """Return *address* as the SMTP envelope carries it: the domain in IDNA ASCII form.

    A UTF-8 local part stays UTF-8 (it needs SMTPUTF8); anything that cannot be
    checked is returned as it is, for the server to judge.
    """
    if address.isascii():
        return address
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return address
    return result.ascii_email or f"{result.local_part}@{result.ascii_domain}"


def check_addresses(addresses: list[str], what: str) -> list[str]:
    """Normalise addresses given on the command line; raise for the first bad one."""
    checked = []
    for address in addresses:
        try:
            checked.append(normalise_address(address))
        except ValueError as e:
            raise DigestError(
                f"{what} {address!r} is not an email address: {e}", hint=_hint(address, e)
            ) from None
    return checked


def _hint(address: str, error: ValueError) -> str:
    """What to do about an address email-validator refused."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        return "write the whole address, like reader@example.org"
    if "special-use or reserved" in str(error):  # .test, .invalid, .local, .onion ... (RFC 6761)
        return "that domain is special-use or reserved (such as .test or .local); use one on a public domain"
    if "should have a period" in str(error):
        return "the domain must be a full domain name, like example.org"
    return "check the spelling of the address"


def address_key(address: str) -> str:
    """The key that makes two spellings of one address the same (case-insensitive)."""
    return address.strip().lower()


# A cell a spreadsheet would run as a formula (OWASP: CSV injection): an export writes it
# after a "'", which spreadsheets show as text, and reading takes that "'" off again. A
# value that starts with "'" itself gets one more, so that it reads back as it was.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_GUARDED = (*_FORMULA_START, "'")


def guard_cell(value: str) -> str:
    """Return *value* as a CSV export writes it: after a "'" if it starts like a formula (or
    with a "'")."""
    return "'" + value if value.startswith(_GUARDED) else value


def _unguard(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(_GUARDED) else value


def read_recipients(path: Path) -> Iterator[Recipient | RowProblem]:
    """Yield each row as a Recipient (fields = the other columns) or a RowProblem.

    The file is read as a stream: memory does not grow with the list.
    """
    try:
        handle = path.open("rb")
    except OSError as e:
        raise ConfigError(
            f"cannot read the list: {e.strerror}",
            path=path,
            hint="give a CSV file that has an 'email' column (its path, from the current folder)",
        ) from e
    with handle:
        # Bytes that are not UTF-8 are kept as lone surrogates and reported with the line
        # they are on (a decoding error would name the line where its block of the file began).
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
        # strict: a quote left open at the end of the file is an error, not a merged row
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise ContentError(
                f"malformed CSV: {e}", path=path, line=1, hint="check the quoting of the header row"
            ) from e
        if not header:
            raise ContentError(
                "the list is empty", path=path, hint="the first row names the columns, one of them 'email'"
            )
        _check_utf8(header, path, 1)
        names = [_unguard(h.strip()).lower() for h in header]
        twice = sorted({n for n in names if n and names.count(n) > 1})
        if twice:
            raise ContentError(
                f"the header names the column {twice[0]!r} twice",
                path=path,
                line=1,
                hint="give every column a name of its own (the merge fields are found by name)",
            )
        if "email" not in names:
            raise _no_email_column(path, header)
        column = names.index("email")
        last = reader.line_num
        try:
            for row in reader:
                line, last = last + 1, reader.line_num
                if line != last:  # a quoted field ran over a line break
                    raise ContentError(
                        f"a quoted field runs from line {line} to line {last} (an unclosed quote?)",
                        path=path,
                        line=line,
                        hint="close the quote on that line; a field of a subscriber list "
                        "never holds a line break",
                    )
                if not any(cell.strip() for cell in row):
                    continue
                _check_utf8(row, path, line)
                row = [_unguard(cell) for cell in row]
                if len(row) != len(names):
                    yield RowProblem(
                        line,
                        f"{len(row)} column{'s' if len(row) != 1 else ''}, the header has {len(names)}",
                    )
                    continue
                raw = row[column]
                try:
                    address = normalise_address(raw)
                except ValueError as e:
                    yield RowProblem(line, f"invalid address {raw.strip()!r}: {e}")
                    continue
                fields = {n: v for n, v in zip(names, row, strict=True) if n != "email"}
                yield Recipient(address, fields, line)
        except csv.Error as e:
            raise ContentError(
                f"malformed CSV: {e} (an unclosed quote?)",
                path=path,
                line=last + 1,
                hint="check the quoting of that row",
            ) from e


def _check_utf8(row: list[str], path: Path, line: int) -> None:
    """Raise for a row holding bytes that are not UTF-8 (read as lone surrogates)."""
    try:
        "".join(row).encode("utf-8")
    except UnicodeEncodeError as e:
        raise ContentError(
            "the list is not UTF-8 text", path=path, line=line, hint="save the CSV as UTF-8"
        ) from e


def _no_email_column(path: Path, header: list[str]) -> ContentError:
    """Say why the header has no 'email' column: no header, another delimiter, or none."""
    if any("@" in cell for cell in header):
        return ContentError(
            "the first row holds an address, not the column names",
            path=path,
            line=1,
            hint="add a header row first, e.g. 'email,name'",
        )
    for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
        if len(header) == 1 and delimiter in header[0]:
            return ContentError(
                f"the list is separated by {name}, not commas",
                path=path,
                line=1,
                hint="save the CSV with commas between the columns",
            )
    return ContentError(
        "the list has no 'email' column",
        path=path,
        line=1,
        hint="name the column of addresses 'email' in the header row",
    )
