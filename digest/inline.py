"""Inline the email's CSS into style attributes with premailer (no network)."""

from __future__ import annotations

import logging

import cssutils
from premailer import Premailer

log = logging.getLogger(__name__)

# cssutils prints its own warnings to stderr; send them to logging instead, once, and
# keep them quiet: what it calls invalid is CSS 2.1's view ("display: flex"), which
# 'digest check' judges in its own words for email clients (clientcss.py).
_cssutils_log = logging.getLogger("CSSUTILS")
for _handler in list(_cssutils_log.handlers):
    _cssutils_log.removeHandler(_handler)
cssutils.log.setLevel(logging.CRITICAL)


def inline_css(html: str) -> str:
    """Move the <style> rules into style attributes; keep @media rules in a <style> block.

    ``strip_important=False`` keeps ``!important`` in the kept media queries (the
    dark-mode and mobile rules need it to win over the inlined styles). premailer would
    also copy a CSS width or height into the element's attribute, over the template's
    own: the story picture's ``width="536"`` (Outlook's size for it) became
    ``width="100%"``, and ``height: auto`` became ``height="auto"``, which HTML does not
    allow (a number of pixels only). The templates write the attributes they need.
    """
    premailer = Premailer(
        html,
        strip_important=False,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        allow_network=False,
        allow_loading_external_files=False,
        disable_basic_attributes=["height", "width"],
        method="html",
    )
    html = premailer.transform(pretty_print=False)
    return html if html.endswith("\n") else html + "\n"
