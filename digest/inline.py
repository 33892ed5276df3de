"""Inline the email's CSS into style attributes with premailer (no network)."""

from __future__ import annotations

import logging
import re

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


_PIXELS = re.compile(r"\d+")
_PERCENT = re.compile(r"\d+(?:\.\d+)?%")


class _Inliner(Premailer):
    """premailer, but a CSS width or height becomes the element's attribute (what Outlook
    for Windows sizes by) only where the template wrote none, and only as HTML allows it:
    pixels, or a percentage outside <img>. premailer overwrote the story picture's
    ``width="536"`` with ``width="100%"``, and wrote ``height: auto`` as the invalid
    ``height="auto"``; a project's ``.logo { width: 120px }`` still gives ``width="120"``."""

    def _style_to_basic_html_attributes(self, element, style_content, force=False):  # type: ignore[no-untyped-def]
        written = {key: element.attrib.get(key) for key in ("width", "height")}
        super()._style_to_basic_html_attributes(element, style_content, force=force)
        for key, before in written.items():
            value = element.attrib.get(key)
            if before is not None:
                element.attrib[key] = before  # the template's own
            elif value is not None and not (
                _PIXELS.fullmatch(value) or (element.tag != "img" and _PERCENT.fullmatch(value))
            ):
                del element.attrib[key]


def inline_css(html: str) -> str:
    """Move the <style> rules into style attributes; keep @media rules in a <style> block.

    ``strip_important=False`` keeps ``!important`` in the kept media queries (the
    dark-mode and mobile rules need it to win over the inlined styles).
    """
    premailer = _Inliner(
        html,
        strip_important=False,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        allow_network=False,
        allow_loading_external_files=False,
        method="html",
    )
    html = premailer.transform(pretty_print=False)
    return html if html.endswith("\n") else html + "\n"
