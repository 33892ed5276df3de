from __future__ import annotations

from pathlib import Path

import pytest

from digest.config import find_project_root, load_newsletter, load_project
from digest.errors import ConfigError, DigestErrors

from .conftest import write


def test_example_newsletter_loads(project: Path) -> None:
    newsletter = load_project().newsletter
    assert newsletter.name == "The World Digest"
    assert newsletter.disclaimer.startswith("We remind our readers that publication")
    assert "readers in forming" in newsletter.disclaimer  # whitespace folded
    assert newsletter.sender_domain == "worlddigest.example.org"


def test_project_is_found_walking_up(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "issues" / "2021-12-31")
    assert find_project_root() == project


def test_no_project_says_how_to_point_at_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_project()
    assert "no digest.toml" in e.value.message
    assert "--project" in e.value.hint


def test_missing_disclaimer_is_a_config_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "digest.toml",
        """
        [newsletter]
        name = "N"
        from = "N <n@example.org>"
        unsubscribe_url = "https://example.org/u"
        list_id = "n.example.org"
    """,
    )
    with pytest.raises(ConfigError) as e:
        load_newsletter(path)
    assert e.value.message == "[newsletter] has no 'disclaimer'"
    assert e.value.path == path
    assert "disclaimer" in e.value.hint


def test_every_problem_of_digest_toml_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path / "digest.toml",
        """
        [newsletter]
        name = "N"
        from = "not an address"
        unsubscribe_url = "ftp://x"
        list_id = "n.example.org"
        disclamer = "typo"
    """,
    )
    with pytest.raises(DigestErrors) as e:
        load_newsletter(path)
    messages = [err.message for err in e.value.errors]
    assert "[newsletter] has no 'disclaimer'" in messages
    assert "unknown key 'disclamer' in [newsletter]" in messages
    assert "'from' is not an email address: 'not an address'" in messages
    assert "'unsubscribe_url' must be an http(s) URL" in messages
    assert {err.line for err in e.value.errors if "disclamer" in err.message} == {6}


def test_invalid_toml_reports_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "digest.toml", '[newsletter]\nname = "N\n')
    with pytest.raises(ConfigError) as e:
        load_newsletter(path)
    assert e.value.message.startswith("invalid TOML")
    assert e.value.line == 2


@pytest.mark.parametrize(
    ("toml", "message", "line", "hint"),
    [
        (
            '[newsleter]\nname = "N"\n',
            "no [newsletter] table (there is [newsleter]: a typo?)",
            1,
            "name the table [newsletter], not [newsleter]",
        ),
        (
            '[newsletter]\nname = "N"\nrecent_issues = 2\nname = "M"\n',
            "invalid TOML: 'name' is set twice",
            4,
            "keep one 'name = ...' in the table",
        ),
    ],
)
def test_a_misspelt_table_or_a_key_set_twice_is_named(tmp_path: Path, toml, message, line, hint) -> None:
    path = write(tmp_path / "digest.toml", toml)
    with pytest.raises(ConfigError) as e:
        load_newsletter(path)
    assert (e.value.message, e.value.line, e.value.hint) == (message, line, hint)


@pytest.mark.parametrize(
    ("language", "direction", "expected"),
    [
        ("en", None, "ltr"),
        ("ar", None, "rtl"),
        ("he-IL", None, "rtl"),
        ("fa-IR", None, "rtl"),
        # The script subtag decides; else the language (its usual script).
        *((tag, None, "rtl") for tag in ("pa-Arab", "az-Arab", "ku-Arab", "ms-Arab", "ff-Adlm", "ar-arz-EG")),
        *((tag, None, "rtl") for tag in ("prs", "pnb", "azb", "nqo", "ji", "ckb", "sd", "ug", "dv", "syr")),
        *((tag, None, "ltr") for tag in ("he-Latn", "az-Latn", "ar-Latn", "sd-Deva", "pa", "ku", "az", "zh")),
        ("ar", "ltr", "ltr"),
        ("en", "rtl", "rtl"),
    ],
)
def test_text_direction_comes_from_the_language(
    tmp_path: Path, language: str, direction: str | None, expected: str
) -> None:
    extra = f'language = "{language}"' + (f'\ndirection = "{direction}"' if direction else "")
    assert _newsletter(tmp_path, extra).text_direction == expected


@pytest.mark.parametrize(
    ("language", "hint"),
    [
        ("ar_EG", 'write language = "ar-EG"'),
        ("en US", 'write language = "en-US"'),
        ("english!", "ISO 639 code of 2 or 3 letters"),
        ("english", "ISO 639 code of 2 or 3 letters"),  # well formed, but no language has it
        ("", "ISO 639 code of 2 or 3 letters"),
        ("en-", 'write language = "en"'),
    ],
)
def test_a_language_that_is_not_a_bcp47_tag_is_an_error(tmp_path: Path, language: str, hint: str) -> None:
    with pytest.raises(ConfigError) as e:
        _newsletter(tmp_path, f'language = "{language}"')
    assert e.value.message == f"'language' is not a BCP 47 language tag: {language!r}"
    assert e.value.line == 7 and e.value.path == tmp_path / "digest.toml"
    assert hint in e.value.hint


@pytest.mark.parametrize(
    ("key", "value", "found"),
    [
        ("name", r"Daily\rNews", "U+000D"),
        ("name", r"Daily\nNews", "U+000A"),
        ("name", r"Daily\u0000News", "U+0000"),
        ("name", r"\u202eswen yliad", "U+202E"),
        ("from", r"Daily\u001b <n@example.org>", "U+001B"),
        ("reply_to", r"Ed\u0085 <e@example.org>", "U+0085"),
        ("disclaimer", r"D\u007f", "U+007F"),
        ("unsubscribe_url", r"https://example.org/u\u0000", "U+0000"),
        ("base_url", r"https://example.org/\u2066", "U+2066"),
    ],
)
def test_a_control_character_in_a_shown_value_is_an_error(
    tmp_path: Path, key: str, value: str, found: str
) -> None:
    values = {
        "name": "N",
        "from": "N <n@example.org>",
        "unsubscribe_url": "https://example.org/u",
        "list_id": "n.example.org",
        "disclaimer": "D",
        key: value,
    }
    toml = "[newsletter]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items())
    path = write(tmp_path / "digest.toml", toml)
    with pytest.raises((ConfigError, DigestErrors)) as e:
        load_newsletter(path)
    errors = e.value.errors if isinstance(e.value, DigestErrors) else [e.value]
    ours = [err for err in errors if err.message == f"'{key}' holds a control character ({found})"]
    assert len(ours) == 1, [err.message for err in errors]
    assert ours[0].line == list(values).index(key) + 2 and ours[0].hint


def test_a_multi_line_disclaimer_and_unicode_spaces_are_fine(tmp_path: Path) -> None:
    path = write(
        tmp_path / "digest.toml",
        '[newsletter]\nname = "La\u00a0Revue\u202f!"\nfrom = "N <n@example.org>"\n'
        'unsubscribe_url = "https://example.org/u"\nlist_id = "n.example.org"\n'
        'disclaimer = """One line,\r\n\tanother."""\n',
    )
    newsletter = load_newsletter(path)
    assert newsletter.name == "La\u00a0Revue\u202f!" and newsletter.disclaimer == "One line, another."


def test_a_control_character_in_a_source_name_or_a_bad_list_id_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "digest.toml",
        '[newsletter]\nname = "N"\nfrom = "N <n@example.org>"\n'
        'unsubscribe_url = "https://example.org/u"\nlist_id = "my list"\ndisclaimer = "D"\n'
        '[sources]\n"tass.com" = "TA\\tSS"\n',
    )
    with pytest.raises(DigestErrors) as e:
        load_newsletter(path)
    found = {(err.message, err.line) for err in e.value.errors}
    assert found == {
        ("[sources] entry 'tass.com' holds a control character (U+0009)", 8),
        ("'list_id' is not a list id (RFC 2919): 'my list'", 5),
    }


def test_a_wrong_direction_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        _newsletter(tmp_path, 'direction = "right"')
    assert (e.value.message, e.value.line) == ("'direction' must be \"ltr\" or \"rtl\", not 'right'", 7)


def test_sources_table_and_bad_values(tmp_path: Path) -> None:
    base = (Path(__file__).resolve().parent.parent / "digest.toml").read_text()
    good = write(tmp_path / "good.toml", base)
    newsletter = load_newsletter(good)
    assert newsletter.source_for("https://www.rt.com/news/1/") == "RT"
    assert newsletter.source_for("https://rt.com/") == "RT"  # www. or not
    assert newsletter.source_for("https://TASS.com/x") == "TASS"
    assert newsletter.source_for("https://example.com/") is None
    bad = write(
        tmp_path / "bad.toml",
        base.replace('"tass.com" = "TASS"', '"tass.com" = 5')
        .replace('reply_to = "editors@worlddigest.example.org"', 'reply_to = "Desk, News <desk@example.org>"')
        .replace('base_url = "https://worlddigest.example.org"', 'base_url = "http://[oops"')
        + "\n[extra]\nx = 1\n",
    )
    lines = bad.read_text().splitlines()
    TASS = '"tass.com"'  # noqa: N806

    def line_of(text: str) -> int:
        return next(n for n, line in enumerate(lines, 1) if line.startswith(text))

    with pytest.raises(DigestErrors) as e:
        load_newsletter(bad)
    assert sorted(f"{err.line}: {err.message}" for err in e.value.errors) == sorted(
        [
            f"{line_of('reply_to')}: 'reply_to' is not an email address: 'Desk, News <desk@example.org>'",
            f"{line_of('base_url')}: 'base_url' must be an http(s) URL: 'http://[oops'",
            f"{line_of(TASS)}: [sources] entry 'tass.com' must map a site to a source name",
            f"{line_of('[extra]')}: unknown table [extra]",
        ]
    )


def _newsletter(
    tmp_path: Path,
    extra: str = "",
    sender: str = "N <n@example.org>",
    unsubscribe: str = "https://example.org/u",
):
    path = write(
        tmp_path / "digest.toml",
        f"""
        [newsletter]
        name = "N"
        from = "{sender}"
        unsubscribe_url = "{unsubscribe}"
        list_id = "n.example.org"
        disclaimer = "D"
        {extra}
    """,
    )
    return load_newsletter(path)


def test_addresses_and_links_that_go_into_headers_are_kept_in_ascii(tmp_path: Path) -> None:
    # List-Unsubscribe, the envelope and the Message-ID are 7-bit: an internationalised
    # domain is kept in its IDNA form, a non-ASCII link percent-encoded (the same link).
    n = _newsletter(
        tmp_path,
        'unsubscribe_mailto = "abmelden@bücher.example"\n        bounce_address = "bounces@bücher.example"',
        sender="Bücher <news@bücher.example>",
    )
    assert n.unsubscribe_mailto == "abmelden@xn--bcher-kva.example"
    assert n.bounce_address == "bounces@xn--bcher-kva.example"
    assert n.sender_domain == "xn--bcher-kva.example"
    n = _newsletter(tmp_path, unsubscribe="https://bücher.example/désabonner?e={email}&t={token}")
    assert n.unsubscribe_url == ("https://xn--bcher-kva.example/d%C3%A9sabonner?e={email}&t={token}")


def test_an_unsubscribe_mailto_is_kept_as_the_bare_address(tmp_path: Path) -> None:
    assert _newsletter(tmp_path, 'unsubscribe_mailto = "unsubscribe@example.org\\n"').unsubscribe_mailto == (
        "unsubscribe@example.org"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'bounce_address = "b@x.org>\\r\\nRCPT TO:victim@evil.example"',
            "'bounce_address' must be a plain address",
        ),
        ('bounce_address = "b@x.org\\nX: y"', "'bounce_address' must be a plain address"),
        ('unsubscribe_mailto = "désabo@example.org"', "'unsubscribe_mailto' is not an email address"),
        ('unsubscribe_mailto = "u@example.org\\nBcc: x@evil.example"', "'unsubscribe_mailto' is not an email"),
    ],
)
def test_an_address_that_could_break_a_header_or_the_envelope_is_refused(
    tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        _newsletter(tmp_path, extra)
    assert e.value.message.startswith(message)
    assert e.value.line == 7


def test_an_unsubscribe_url_too_long_for_its_header_is_refused(tmp_path: Path) -> None:
    long_url = "https://example.org/u?" + "x" * 600 + "&e={email}&t={token}"
    with pytest.raises(ConfigError) as e:
        _newsletter(tmp_path, unsubscribe=long_url)
    assert e.value.message.startswith("'unsubscribe_url' is too long for the List-Unsubscribe header")
    assert e.value.line == 4


def test_idna_2008_is_used_for_the_newsletters_own_domains(tmp_path: Path) -> None:
    # IDNA 2003 (Python's 'idna' codec) maps straße.de to strasse.de: another domain,
    # someone else's. email-validator (the readers' addresses) uses IDNA 2008.
    n = _newsletter(tmp_path, 'bounce_address = "b@straße.de"', sender="N <n@straße.de>")
    assert (n.bounce_address, n.sender_domain) == ("b@xn--strae-oqa.de", "xn--strae-oqa.de")


def test_a_host_idna_cannot_write_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(DigestErrors) as e:
        _newsletter(tmp_path, sender="N <n@ä..example>", unsubscribe="https://ä..example/u")
    messages = [p.message for p in e.value.errors]
    assert messages[0].startswith("'from' is not an email address")
    assert messages[1].startswith("'unsubscribe_url' cannot be written in ASCII")


@pytest.mark.parametrize(
    ("url", "have", "lack"),
    [
        ("https://example.org/unsubscribe?t={token}", "{token}", "{email}"),
        ("https://example.org/u/{email}", "{email}", "{token}"),
    ],
)
def test_an_unsubscribe_url_with_one_of_email_and_token_is_refused(tmp_path: Path, url, have, lack) -> None:
    """The token signs the address: with one of them the link (and the one-click POST)
    could not unsubscribe anyone, yet it would be sent to every reader."""
    base = (Path(__file__).resolve().parent.parent / "digest.toml").read_text()
    path = write(
        tmp_path / "digest.toml",
        base.replace("https://worlddigest.example.org/unsubscribe?email={email}&token={token}", url),
    )
    with pytest.raises(ConfigError) as e:
        load_newsletter(path)
    assert (
        e.value.message
        == f"'unsubscribe_url' has {have} but not {lack}: the link needs both to unsubscribe anyone"
    )
    assert e.value.line == 10 and "neither" in e.value.hint


def test_a_blank_required_key_is_named_empty_and_a_typo_gets_the_close_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "digest.toml",
        """
        [newsletter]
        name = "N"
        from = "N <n@example.org>"
        unsubscribe_url = "https://example.org/unsubscribe"
        list_id = "n.example.org"
        disclaimer = "   "
        recent_issue = 5
        langauge = "fr"
    """,
    )
    with pytest.raises(DigestErrors) as e:
        load_newsletter(path)
    found = {err.message: err.hint for err in e.value.errors}
    assert found == {
        "'disclaimer' in [newsletter] is empty": 'add disclaimer = "..." under [newsletter] '
        "(every issue carries the editorial disclaimer)",
        "unknown key 'recent_issue' in [newsletter]": "did you mean 'recent_issues'?",
        "unknown key 'langauge' in [newsletter]": "did you mean 'language'?",
    }
