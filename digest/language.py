"""A newsletter's language: is its BCP 47 tag well formed, and which way is it written."""

from __future__ import annotations

import re

# Scripts written right to left (ISO 15924): a language tag's script subtag decides
# ("pa-Arab" is right to left, "he-Latn" left to right).
_RTL_SCRIPTS = {
    "adlm", "arab", "aran", "armi", "avst", "chrs", "cprt", "elym", "gara", "hatr", "hebr", "hung",
    "khar", "lydi", "mand", "mani", "mend", "narb", "nbat", "nkoo", "orkh", "ougr", "palm", "phli",
    "phlp", "phnx", "prti", "rohg", "samr", "sarb", "sogd", "sogo", "syrc", "syre", "syrj", "syrn",
    "thaa", "yezi",
}  # fmt: skip
# Languages written right to left in their usual script, when the tag names no script
# (primary or extended language subtag); `direction` in digest.toml overrides both.
_RTL_LANGUAGES = {
    "aao", "abh", "abv", "acm", "acq", "acw", "acx", "acy", "adf", "aeb", "aec", "afb", "aii", "ajp",
    "apc", "apd", "ar", "arb", "arc", "arq", "ars", "ary", "arz", "auz", "avl", "ayh", "ayl", "ayn",
    "ayp", "azb", "bal", "bbz", "bgn", "bqi", "brh", "ckb", "dv", "fa", "glk", "haz", "he", "hnd",
    "iw", "ji", "jrb", "khw", "ks", "lki", "lrc", "luz", "mid", "mzn", "nqo", "pbt", "pbu", "pes",
    "pga", "pnb", "prs", "ps", "pst", "rhg", "sam", "sd", "sdh", "shu", "skr", "ssh", "syr", "ug",
    "ur", "yi", "ydd", "yih",
}  # fmt: skip
# A BCP 47 language tag (RFC 5646 2.1): language (with extended subtags), script, region,
# variants, extensions, private use; or private use alone. The language is an ISO 639 code
# of 2 or 3 letters: the grammar's 4 to 8 letter forms are reserved, and no language is
# registered under one (so "english" is no tag that browsers or screen readers know).
_LANGUAGE_TAG = re.compile(
    r"(?:[a-z]{2,3}(?:-[a-z]{3}){0,3})"
    r"(?:-[a-z]{4})?"
    r"(?:-(?:[a-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*"
    r"(?:-[0-9a-wyz](?:-[a-z0-9]{2,8})+)*"
    r"(?:-x(?:-[a-z0-9]{1,8})+)?"
    r"|x(?:-[a-z0-9]{1,8})+|i-[a-z]{3,8}",
    re.IGNORECASE,
)


def language_direction(tag: str) -> str:
    """Return "rtl" or "ltr" for a BCP 47 language tag: by its script subtag when it has one
    ("pa-Arab", "he-Latn"), else by its language ("ar", "ckb", "zh-yue")."""
    subtags = tag.strip().lower().replace("_", "-").split("-")
    languages = [subtags[0]]
    for subtag in subtags[1:]:
        if len(subtag) == 3 and subtag.isalpha():  # an extended language subtag ("ar-arz")
            languages.append(subtag)
            continue
        if len(subtag) == 4 and subtag.isalpha():  # the script
            return "rtl" if subtag in _RTL_SCRIPTS else "ltr"
        break
    return "rtl" if any(language in _RTL_LANGUAGES for language in languages) else "ltr"


def is_language_tag(tag: str) -> bool:
    """Whether *tag* is a well-formed BCP 47 language tag ("en", "ar-EG", "pa-Arab-PK")."""
    return _LANGUAGE_TAG.fullmatch(tag) is not None


def suggested_tag(value: str) -> str | None:
    """Return the tag *value* was likely meant as ("ar_EG", "en US", "en-" give "ar-EG",
    "en-US", "en"), if that is a tag."""
    fixed = re.sub(r"[_\s]+", "-", value.strip()).strip("-")
    return fixed if is_language_tag(fixed) else None
