"""Merge fields: placeholders a build leaves for message.py, and the rules that keep them whole.

A placeholder carries a nonce made for each build, so no text in a story can
look like one. Merge fields are filled in after rendering, so a template may
only print them: a filter, a test or a condition on one is refused before
rendering, with the template and line; a placeholder that a template changed
anyway is found after rendering, and one left in a message stops the build.
"""

from __future__ import annotations

import re
import secrets
import weakref
from dataclasses import dataclass

import jinja2
import jinja2.meta
from jinja2 import nodes
from markupsafe import Markup

from .errors import DigestError, TemplateError

PREFIX = "@@digest-"


@dataclass(frozen=True)
class Slot:
    """A per-recipient value: a CSV field (with a default) or 'unsubscribe_url'."""

    field: str
    default: str = ""


@dataclass(frozen=True)
class Placeholders:
    """The placeholders of one build: ``@@digest-<nonce>.<n>@@``."""

    nonce: str

    @classmethod
    def new(cls) -> Placeholders:
        return cls(secrets.token_hex(8))

    def token(self, index: int) -> str:
        return f"{PREFIX}{self.nonce}.{index}@@"

    @property
    def pattern(self) -> re.Pattern[str]:
        return _pattern(self.nonce)

    def leftovers(self, text: str) -> list[str]:
        """Return what looks like a placeholder but is not an exact one (a template changed it)."""
        rest = self.pattern.sub("", text)
        return re.findall(rf"(?i).{{0,10}}{self.nonce}.{{0,4}}", rest)


_patterns: dict[str, re.Pattern[str]] = {}


def _pattern(nonce: str) -> re.Pattern[str]:
    if nonce not in _patterns:
        _patterns.clear()
        _patterns[nonce] = re.compile(rf"{re.escape(PREFIX)}{nonce}\.(\d+)@@")
    return _patterns[nonce]


class Fields:
    """The `recipient` of a template: each field read becomes a placeholder."""

    def __init__(self, slots: list[Slot], placeholders: Placeholders) -> None:
        self._slots = slots
        self._placeholders = placeholders

    def get(self, name: str, default: str = "") -> Markup:
        return Markup(self._placeholders.token(slot_index(self._slots, Slot(str(name), str(default)))))

    def __getattr__(self, name: str) -> Markup:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.get(name)

    __getitem__ = get


class NoReader:
    """The `recipient` of a copy for nobody in particular (an export, the web archive, the
    common copy of a --to send): false in ``{% if recipient %}``, and every field reads as
    for a reader whose list row leaves it empty: ``recipient.get("name", "reader")`` is
    "reader", ``recipient.name`` is "". A template that greets readers so still exports."""

    def __bool__(self) -> bool:
        return False

    # As the None it replaces, for templates written for that: equal to none, printed "".
    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, NoReader)

    def __hash__(self) -> int:
        return hash(None)

    def __str__(self) -> str:
        return ""

    def get(self, name: str, default: str = "") -> str:
        return str(default)

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return ""

    __getitem__ = get


def slot_index(slots: list[Slot], slot: Slot) -> int:
    """Return the index of *slot*, adding it first if it is new."""
    if slot not in slots:
        slots.append(slot)
    return slots.index(slot)


_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_templates(env: jinja2.Environment, names: tuple[str, ...]) -> list[DigestError]:
    """Return an error for every filter, test or condition on a merge field in *names*.

    The templates they extend, include or import are checked too. The result is kept
    per environment (render.py makes a new one when a project template changes).
    """
    done = _checked.setdefault(env, {})
    if names not in done:
        done[names] = _check_templates(env, names)
    return list(done[names])


def _check_templates(env: jinja2.Environment, names: tuple[str, ...]) -> list[DigestError]:
    problems: list[DigestError] = []
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            source, filename, _ = env.loader.get_source(env, name)
            tree = env.parse(source, name, filename)
        except (jinja2.TemplateNotFound, jinja2.TemplateSyntaxError):
            continue  # rendering reports these with their own message
        todo += [n for n in jinja2.meta.find_referenced_templates(tree) if n]
        _visit(tree, None, filename or name, problems)
    return problems


# Filters that give a placeholder back unchanged.
_TRANSPARENT = ("e", "escape", "safe", "string")


def _field(node: nodes.Node) -> str | None:
    """Return the merge field *node* reads, if it reads one."""
    if isinstance(node, nodes.Filter) and node.name in _TRANSPARENT and node.node is not None:
        return _field(node.node)
    if isinstance(node, nodes.Name) and node.name == "unsubscribe_url" and node.ctx == "load":
        return "unsubscribe_url"
    if isinstance(node, nodes.Getattr) and _is_recipient(node.node) and node.attr != "get":
        return f"recipient.{node.attr}"
    if isinstance(node, nodes.Getitem) and _is_recipient(node.node):
        return f"recipient[{_const(node.arg)}]"
    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Getattr)
        and node.node.attr == "get"
        and _is_recipient(node.node.node)
    ):
        return f"recipient.get({_const(node.args[0]) if node.args else ''})"
    return None


def _is_recipient(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "recipient"


def _const(node: nodes.Node) -> str:
    return repr(node.value) if isinstance(node, nodes.Const) else "..."


def _allowed(node: nodes.Node, parent: nodes.Node | None) -> bool:
    if parent is None or isinstance(parent, (nodes.Output, nodes.Concat, nodes.Assign)):
        return True
    # {{ recipient.name if recipient else "reader" }}: printed, not tested.
    return isinstance(parent, nodes.CondExpr) and parent.test is not node


def _what(parent: nodes.Node, node: nodes.Node) -> str:
    if isinstance(parent, nodes.Filter):
        return f"the filter '{parent.name}'"
    if isinstance(parent, nodes.Test):
        return f"the test '{parent.name}'"
    if isinstance(parent, (nodes.If, nodes.CondExpr)) or getattr(parent, "test", None) is node:
        return "a condition"
    if isinstance(parent, (nodes.Compare, nodes.Operand)):
        return "a comparison"
    if isinstance(parent, (nodes.Getattr, nodes.Getitem, nodes.Call)):
        return "an attribute, index or call"
    return f"'{type(parent).__name__}'"


def _visit(node: nodes.Node, parent: nodes.Node | None, template: str, problems: list[DigestError]) -> None:
    field = _field(node)
    if field is not None:
        if not _allowed(node, parent):
            problems.append(
                TemplateError(
                    f"{_what(parent, node)} is applied to the merge field {field}; merge fields are "
                    "filled in per recipient after rendering, so a template can only print them",
                    path=template,
                    line=node.lineno,
                    hint="print it as {{ recipient.name }}, with a default as "
                    '{{ recipient.get("name", "reader") }}; do the rest in the CSV list',
                )
            )
        return
    for child in node.iter_child_nodes():
        _visit(child, node, template, problems)
