"""Warn about template CSS that email clients ignore, and about images too wide or too heavy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from .config import Project
from .errors import DigestError
from .images import local_images
from .issue import Issue

CONTAINER_PX = 600
IMAGE_WEIGHT_BYTES = 1024 * 1024
GENERIC_FONTS = {
    "serif",
    "sans-serif",
    "monospace",
    "cursive",
    "fantasy",
    "system-ui",
    "ui-serif",
    "ui-sans-serif",
    "ui-monospace",
    "ui-rounded",
    "math",
    "emoji",
    "fangsong",
    "inherit",
    "initial",
    "unset",
}
COLOUR = re.compile(
    r"#[0-9a-f]{3,8}\b|\b(?:rgba?|hsla?)\(|\b(?:white|black|transparent|"
    r"red|green|blue|gray|grey|silver|navy|maroon|teal|olive|purple|"
    r"orange|yellow|currentcolor)\b"
)
_DECLARATION = re.compile(r"([-\w]+)\s*:\s*([^;{}]+)")
_JINJA = re.compile(r"\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\}", re.S)
_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_STYLE_BLOCK = re.compile(r"(<style\b[^>]*>)(.*?)</style>", re.S | re.I)
_TAG = re.compile(r"<([a-zA-Z][\w:-]*)\b([^>]*)>", re.S)
_ATTR = re.compile(r"""([\w:-]+)\s*=\s*("([^"]*)"|'([^']*)')""", re.S)


def client_warnings(project: Project, issue: Issue) -> list[DigestError]:
    """Return a warning for each client-hostile CSS rule in the email templates and each image problem."""
    warnings: list[DigestError] = []
    for path in email_template_files(project):
        warnings += scan_file(path)
    warnings += check_images(issue)
    return warnings


def email_template_files(project: Project) -> list[Path]:
    """Return the HTML and CSS files the email is built from (a project's own first)."""
    from .render import make_environment

    env = make_environment(project.templates_dir)
    files = []
    for name in env.list_templates(extensions=["html", "css"]):
        if name.startswith(("!", "web/")):  # the defaults again; the web pages are no email
            continue
        files.append(Path(env.loader.get_source(env, name)[1]))  # no compiling: a broken
        # template is render's error to report
    return sorted(set(files))


def scan_file(path: Path) -> list[DigestError]:
    """Return the warnings for one template or stylesheet, each with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []  # rendering reports an unreadable template
    text = _blank(_JINJA, text)
    found: list[tuple[int, str, str]] = []
    if path.suffix == ".css":
        found += _scan_css(text, 0)
    else:
        for m in _STYLE_BLOCK.finditer(text):
            found += _scan_css(m.group(2), m.start(2))
        found += _scan_tags(text)
    return [
        DigestError(message, path=path, line=_line(text, offset), hint=hint)
        for offset, message, hint in sorted(found)
    ]


def _blank(pattern: re.Pattern, text: str) -> str:
    """Replace each match with spaces, keeping newlines (and so every line number)."""
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _scan_css(css: str, base: int) -> list[tuple[int, str, str]]:
    css = _blank(_COMMENT, css)
    found = []
    for preludes, body, start in _leaf_blocks(css):
        if any(p.lower().startswith("@font-face") for p in preludes):
            continue
        in_media = any(p.lower().startswith("@media") for p in preludes)
        found += [
            (base + start + offset, message, hint)
            for offset, message, hint in _scan_declarations(body, in_media, False)
        ]
    return found


def _leaf_blocks(css: str) -> Iterator[tuple[list[str], str, int]]:
    """Yield (the preludes around it, its body, its offset) for every block holding declarations."""
    stack: list[tuple[str, int]] = []
    last = 0
    for i, ch in enumerate(css):
        if ch == "{":
            stack.append((css[last:i].strip(), i + 1))
            last = i + 1
        elif ch == "}":
            if stack:
                prelude, start = stack.pop()
                body = css[start:i]
                if "{" not in body:
                    yield [p for p, _ in stack] + [prelude], body, start
            last = i + 1
        elif ch == ";":
            last = i + 1


def _scan_declarations(
    body: str, in_media: bool, has_fallback: bool, bgcolor: bool = False
) -> list[tuple[int, str, str]]:
    found = []
    declarations = [
        (m.start(), m.group(1).lower(), " ".join(m.group(2).lower().split()))
        for m in _DECLARATION.finditer(body)
    ]
    coloured = bgcolor or any(
        prop == "background-color" or (prop == "background" and COLOUR.search(value))
        for _, prop, value in declarations
    )
    for offset, prop, value in declarations:
        value = value.replace("!important", "").strip()
        problem = _problem(prop, value, in_media, has_fallback, coloured)
        if problem:
            found.append((offset, *problem))
    return found


def _problem(
    prop: str, value: str, in_media: bool, has_fallback: bool, coloured: bool
) -> tuple[str, str] | None:
    if prop.startswith("--") or "var(" in value:
        return ("CSS variables are ignored by Gmail and Outlook", "write the value itself")
    if prop == "position" and value not in ("static", "inherit", "initial", "unset"):
        return (f"position:{value} is ignored by Gmail and Outlook", "lay out with tables and padding")
    if prop == "display" and value in ("flex", "inline-flex", "grid", "inline-grid") and not in_media:
        return (
            f"display:{value} is ignored by Outlook for Windows and older Gmail apps",
            'lay out with tables (role="presentation"); keep flex or grid for an @media enhancement',
        )
    if prop == "float" and value != "none" and not in_media and not has_fallback:
        return (
            "float without a fallback: Outlook for Windows ignores it",
            'give the element an align="left|right" attribute, or float only inside @media',
        )
    if (prop == "background-image" or (prop == "background" and "url(" in value)) and (
        "url(" in value and not coloured
    ):
        return (
            "a background image without a background colour",
            "add background-color (and bgcolor) so text stays readable where images are off",
        )
    if prop == "font-family":
        families = [f.strip().strip("'\"").lower() for f in value.split(",")]
        if families and families[-1] not in GENERIC_FONTS:
            return (
                f"font-family {value} has no generic fallback",
                "end the stack with serif or sans-serif (Outlook shows Times New Roman otherwise)",
            )
    return None


def _scan_tags(html: str) -> list[tuple[int, str, str]]:
    found = []
    for tag in _TAG.finditer(html):
        name = tag.group(1).lower()
        attrs = {
            m.group(1).lower(): (
                m.group(3) if m.group(3) is not None else m.group(4),
                tag.start(2) + m.start(2) + 1,
            )
            for m in _ATTR.finditer(tag.group(2))
        }
        if "style" in attrs:
            style, offset = attrs["style"]
            found += [
                (offset + o, message, hint)
                for o, message, hint in _scan_declarations(style, False, "align" in attrs, "bgcolor" in attrs)
            ]
        if "background" in attrs and "bgcolor" not in attrs and "style" not in attrs:
            found.append(
                (
                    tag.start(),
                    "a background image without a background colour",
                    'add bgcolor="#..." beside background="..."',
                )
            )
        width = attrs.get("width", ("", 0))[0].strip().removesuffix("px")
        if name == "img" and width.isdigit() and int(width) > CONTAINER_PX:
            found.append(
                (
                    tag.start(),
                    f"an image {width} px wide is wider than the {CONTAINER_PX} px container",
                    f"make it at most {CONTAINER_PX} px wide",
                )
            )
    return found


def check_images(issue: Issue) -> list[DigestError]:
    """Warn about story images wider than the container and about the issue's total image weight."""
    import imagesize

    warnings: list[DigestError] = []
    sizes: dict[Path, int] = {}
    found, _ = local_images(issue)  # a src that names no file is the build's error
    for local in found:
        sizes[local.file] = local.file.stat().st_size
        if local.image.front:
            continue  # the template scales the story's image to the column
        width, _ = imagesize.get(str(local.file))
        if width > CONTAINER_PX:
            warnings.append(
                DigestError(
                    f"the image {local.image.shown} is {width} px wide, wider than the {CONTAINER_PX} px "
                    "container (Outlook for Windows shows it at full size)",
                    path=local.image.story.path,
                    line=local.image.line,
                    hint=f"resize it to {CONTAINER_PX} px wide (or 1200 for sharp screens, as the "
                    "story's 'image')",
                )
            )
    total = sum(sizes.values())
    if total > IMAGE_WEIGHT_BYTES:
        warnings.append(
            DigestError(
                f"the issue's images weigh {total / 1024:.0f} KB (over {IMAGE_WEIGHT_BYTES // 1024} KB)",
                path=issue.path,
                hint="compress them; readers on mobile data load every one",
            )
        )
    return warnings
