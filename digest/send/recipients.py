"""Read the subscriber list (CSV) as a stream of recipients and row problems."""

from __future__ import annotations

import csv
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
    """Check an address (syntax only, no DNS) and return its normal form; raise ValueError."""
    try:
        result = validate_email(address.strip(), check_deliverability=False,
                                allow_smtputf8=False)
    except EmailNotValidError as e:
        raise ValueError(str(e)) from e
    return result.normalized


def check_addresses(addresses: list[str], what: str) -> list[str]:
    """Normalise addresses given on the command line; raise for the first bad one."""
    checked = []
    for address in addresses:
        try:
            checked.append(normalise_address(address))
        except ValueError as e:
            raise DigestError(f"{what} {address!r} is not an email address: {e}") from None
    return checked


def address_key(address: str) -> str:
    """The key that makes two spellings of one address the same (case-insensitive)."""
    return address.strip().lower()


def read_recipients(path: Path) -> Iterator[Recipient | RowProblem]:
    """Yield each row as a Recipient (fields = the other columns) or a RowProblem.

    The file is read as a stream: memory does not grow with the list.
    """
    try:
        handle = path.open("rb")
    except OSError as e:
        raise ConfigError(f"cannot read the list: {e.strerror}", path=path,
                          hint="pass --list with a CSV file that has an 'email' column") from e
    with handle:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        try:
            header = next(reader, None)
        except UnicodeDecodeError as e:
            raise ContentError("the list is not UTF-8 text", path=path, line=1,
                               hint="save the CSV as UTF-8") from e
        if not header:
            raise ContentError("the list is empty", path=path,
                               hint="the first row names the columns, one of them 'email'")
        names = [h.strip().lower() for h in header]
        if "email" not in names:
            raise ContentError("the list has no 'email' column", path=path, line=1,
                               hint="name the column of addresses 'email' in the header row")
        column = names.index("email")
        try:
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(names):
                    yield RowProblem(line, f"{len(row)} columns, the header has {len(names)}")
                    continue
                raw = row[column]
                try:
                    address = normalise_address(raw)
                except ValueError as e:
                    yield RowProblem(line, f"invalid address {raw.strip()!r}: {e}")
                    continue
                fields = {n: v for n, v in zip(names, row, strict=True) if n != "email"}
                yield Recipient(address, fields, line)
        except UnicodeDecodeError as e:
            raise ContentError("the list is not UTF-8 text", path=path,
                               line=reader.line_num + 1, hint="save the CSV as UTF-8") from e
        except csv.Error as e:
            raise ContentError(f"malformed CSV: {e}", path=path, line=reader.line_num,
                               hint="check the quoting of that row") from e
