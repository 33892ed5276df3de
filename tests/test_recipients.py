from __future__ import annotations

from pathlib import Path

import pytest

from digest.errors import ContentError
from digest.message import Recipient
from digest.send.recipients import RowProblem, read_recipients

from .conftest import FIXTURES


def test_the_fixture_list() -> None:
    rows = list(read_recipients(FIXTURES / "subscribers.csv"))
    good = [r for r in rows if isinstance(r, Recipient)]
    bad = [r for r in rows if isinstance(r, RowProblem)]
    assert [(r.email, r.fields["name"], r.line) for r in good] == [
        ("anna@example.com", "Anna Schmidt", 2),
        ("BORIS@example.com", "Борис Петров", 3),
        ("anna@example.com", "Anna again", 5),  # the duplicate: the journal sends it once
        ("chloé@example.com", "Chloé", 6),  # a UTF-8 local part: sent where SMTPUTF8 is offered
        ("dmitri@example.org", 'Dmitri "Dima" Ivanov', 7),
    ]
    assert [r.line for r in bad] == [4]
    assert bad[0].message.startswith("invalid address 'not-an-address'")


def test_bom_header_case_and_ragged_rows(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes("\ufeffEmail,Name\nA@Example.COM,Ann\n\nb@example.com\n".encode())
    rows = list(read_recipients(path))
    assert rows[0] == Recipient("A@example.com", {"name": "Ann"}, 2)
    assert rows[1] == RowProblem(4, "1 column, the header has 2")


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "the list is empty"),
        ("name,city\nAnn,Berlin\n", "the list has no 'email' column"),
        ("email,name,Email\na@example.com,A,b@example.com\n", "the header names the column 'email' twice"),
        ("email,name,name\na@example.com,A,B\n", "the header names the column 'name' twice"),
    ],
)
def test_bad_lists(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "list.csv"
    path.write_text(content)
    with pytest.raises(ContentError) as e:
        list(read_recipients(path))
    assert e.value.message == message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"email,name\nx@example.com,Ren\xe9\n")
    with pytest.raises(ContentError) as e:
        list(read_recipients(path))
    assert (e.value.message, e.value.line) == ("the list is not UTF-8 text", 2)


def test_not_utf8_far_down_names_its_line(tmp_path: Path) -> None:
    # The file is decoded a block at a time: the error names the row, not the block's start.
    path = tmp_path / "list.csv"
    rows = [f"reader{i}@example.com,Reader {i}\n".encode() for i in range(2000)]
    rows[1500] = b"latin@example.com,Ren\xe9\n"
    path.write_bytes(b"email,name\n" + b"".join(rows))
    with pytest.raises(ContentError) as e:
        list(read_recipients(path))
    assert (e.value.message, e.value.line) == ("the list is not UTF-8 text", 1502)


@pytest.mark.parametrize(
    ("address", "hint"),
    [
        ("editor", "write the whole address, like reader@example.org"),
        ("reader@", "write the whole address, like reader@example.org"),
        ("@example.org", "write the whole address, like reader@example.org"),
        (
            "editor@morningbrief.test",
            "that domain is special-use or reserved (such as .test or .local); use one on a public domain",
        ),
        ("me@localhost", "the domain must be a full domain name, like example.org"),
        ("edi tor@example.org", "check the spelling of the address"),
    ],
)
def test_an_address_on_the_command_line_is_refused_with_a_hint_for_its_fault(address: str, hint: str) -> None:
    from digest.errors import DigestError
    from digest.send.recipients import check_addresses

    with pytest.raises(DigestError) as raised:
        check_addresses([address], "--test")
    assert raised.value.message.startswith(f"--test {address!r} is not an email address: ")
    assert raised.value.hint == hint
