"""Machine settings from .env and the environment (digest/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.errors import ConfigError, DigestErrors
from digest.settings import load_settings

from .conftest import write


def test_settings_come_from_dotenv_and_environment(tmp_path: Path) -> None:
    dotenv = write(
        tmp_path / ".env",
        """
        DIGEST_SMTP_HOST=mail.example.org
        DIGEST_SMTP_PORT=587
        DIGEST_SMTP_PASSWORD=hunter2
    """,
    )
    settings = load_settings(dotenv, {"DIGEST_SMTP_PORT": "2525"})
    assert settings.smtp_host == "mail.example.org"
    assert settings.smtp_port == 2525  # the environment wins over .env
    assert settings.smtp_security == "starttls"
    assert "hunter2" not in repr(settings)


def test_bad_security_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path / ".env", {"DIGEST_SMTP_SECURITY": "ssl3"})
    assert "starttls, tls or none" in e.value.message


@pytest.mark.parametrize("port", ["99999", "0", "-5"])
def test_a_port_out_of_range_is_a_settings_error(tmp_path: Path, port: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path / ".env", {"DIGEST_SMTP_PORT": port})
    assert e.value.message == f"DIGEST_SMTP_PORT is not a port number (1 to 65535): {port!r}"


def test_a_dotenv_that_is_not_utf8_is_a_settings_error(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("DIGEST_SECRET=café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path / ".env", {})
    assert (e.value.message, e.value.path) == ("not UTF-8 text", tmp_path / ".env")


def test_a_misspelt_setting_in_dotenv_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DIGEST_SMTP_HOST=127.0.0.1\nDIGEST_SMTP_SECURTY=none\nOTHER_APP_KEY=1\n")
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path / ".env", {"DIGEST_TEST_VENV": "1"})  # the environment's own are not ours
    assert (e.value.message, e.value.line, e.value.hint) == (
        "unknown setting DIGEST_SMTP_SECURTY",
        2,
        "did you mean DIGEST_SMTP_SECURITY?",
    )


def test_a_dotenv_line_that_cannot_be_read_is_an_error_with_its_line(tmp_path: Path, caplog) -> None:
    # python-dotenv drops it with a log line of its own: a password with a stray quote went missing.
    (tmp_path / ".env").write_text(
        "DIGEST_SMTP_HOST=127.0.0.1\nthis is not a setting\n"
        'DIGEST_SMTP_PASSWORD="unclosed\nDIGEST_SMTP_PASWORD=x\n'
    )
    with pytest.raises(DigestErrors) as e:
        load_settings(tmp_path / ".env", {})
    assert [(err.message, err.line) for err in e.value.errors] == [
        ("cannot read this line: it is not NAME=value", 2),
        ("cannot read this line: it is not NAME=value", 3),
        ("unknown setting DIGEST_SMTP_PASWORD", 4),
    ]
    assert "dotenv" not in caplog.text
    (tmp_path / ".env").write_text('# a comment\n\nexport DIGEST_SMTP_PASSWORD="pa ss\\"word" # kept\n')
    assert load_settings(tmp_path / ".env", {}).smtp_password == 'pa ss"word'


def test_a_bad_setting_is_blamed_on_where_it_came_from(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DIGEST_SMTP_HOST=mail.example.org\nDIGEST_SMTP_PORT=70000\n")
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path / ".env", {})
    assert (e.value.path, e.value.line) == (tmp_path / ".env", 2)
    (tmp_path / ".env").write_text("DIGEST_SMTP_HOST=mail.example.org\n")
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path / ".env", {"DIGEST_SMTP_PORT": "70000"})  # the environment's
    assert (e.value.path, e.value.line) == (None, None)


def test_a_dotenv_saved_with_a_byte_order_mark_keeps_its_first_setting(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("\ufeffDIGEST_SMTP_HOST=mail.example.org\nDIGEST_SMTP_PORT=2525\n".encode())
    settings = load_settings(tmp_path / ".env", {})
    assert (settings.smtp_host, settings.smtp_port) == ("mail.example.org", 2525)


def test_imap_settings_read_dotenv_the_same_way(tmp_path: Path) -> None:
    from digest.bounces.mailboxes import imap_settings

    (tmp_path / ".env").write_bytes(
        "\ufeffDIGEST_IMAP_HOST=imap.example.org\nDIGEST_IMAP_USERNAME=u\nDIGEST_IMAP_PASSWORD=p\n".encode()
    )
    assert imap_settings(tmp_path / ".env", {}).host == "imap.example.org"
    with pytest.raises(ConfigError) as e:
        imap_settings(tmp_path / ".env", {"DIGEST_IMAP_PORT": "99999"})
    assert e.value.message == "DIGEST_IMAP_PORT is not a port number (1 to 65535): '99999'"
    assert (e.value.path, e.value.line) == (None, None)  # the environment's, not .env's
    with (tmp_path / ".env").open("a") as f:
        f.write("DIGEST_IMAP_SECURITY=plain\n")
    with pytest.raises(ConfigError) as e:
        imap_settings(tmp_path / ".env", {})
    assert (e.value.path, e.value.line) == (tmp_path / ".env", 4)  # this one is .env's, line 4
    with pytest.raises(ConfigError) as e:
        imap_settings(tmp_path / ".env", {"DIGEST_IMAP_SECURITY": "plain"})
    assert (e.value.path, e.value.line) == (None, None)
    (tmp_path / ".env").write_bytes("DIGEST_IMAP_HOST=caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        imap_settings(tmp_path / ".env", {})
    assert e.value.message == "not UTF-8 text"


def test_dotenv_values_are_taken_as_written(tmp_path: Path) -> None:
    """python-dotenv expands ${NAME} by default, in single quotes too: a generated password
    holding '${' would lose part of itself, and the login fail with no word of why."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "DIGEST_SMTP_HOST=mail.example.org\n"
        "DIGEST_SMTP_PASSWORD=a${HOME}b$c\n"
        "DIGEST_SECRET='s${X}t'\n"
        'DIGEST_SMTP_USERNAME="u${HOME}"\n',
        encoding="utf-8",
    )
    settings = load_settings(dotenv, {})
    assert settings.smtp_password == "a${HOME}b$c"
    assert settings.secret == "s${X}t"
    assert settings.smtp_username == "u${HOME}"


def test_every_problem_of_dotenv_is_reported_at_once(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "DIGEST_SMTP_HOST=mail.example.org\n"
        "DIGEST_SMTP_PORT=38525x\n"
        "DIGEST_SMTP_SECURITY=off\n"
        "DIGEST_SMTP_SECURTY=tls\n"
        'DIGEST_SMTP_USERNAME="unclosed\n',
        encoding="utf-8",
    )
    with pytest.raises(DigestErrors) as e:
        load_settings(dotenv, {})
    assert [(err.line, err.message.split(":")[0]) for err in e.value.errors] == [  # in the file's order
        (2, "DIGEST_SMTP_PORT is not a port number (1 to 65535)"),
        (3, "DIGEST_SMTP_SECURITY must be starttls, tls or none, not 'off'"),
        (4, "unknown setting DIGEST_SMTP_SECURTY"),
        (5, "cannot read this line"),
    ]
