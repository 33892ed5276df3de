"""Story images: which are files of the issue folder, and the address readers load them from.

A mail client cannot load ``<img src="map.png">``: the email links a picture of the issue
folder absolutely, at ``<base_url>/<issue slug>/<file>``, where ``digest publish`` copies it.
The archive's pages and the preview keep the src as written (it is relative to them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from .errors import ContentError, DigestError
from .issue import Issue
from .links import PATH_SAFE
from .stories import Image, Story, body_parts, front_line, markdown_tokens

NO_BASE_URL_HINT = (
    "set base_url in digest.toml's [newsletter] and publish the archive ('digest publish ISSUE', "
    "then put site/ online) before you send: the email links the picture there; "
    "or give the image's full https:// address"
)


@dataclass(frozen=True)
class StoryImage:
    """One image of a story: its front matter's ``image`` or a Markdown image of its body."""

    story: Story
    src: str  # as written (front matter) or as the Markdown parser normalised it (body)
    line: int | None
    front: bool  # the front matter's image (the template scales it to the column)

    @property
    def shown(self) -> str:
        """Return the src as the editor wrote it: the front matter's as it is, a body image's
        as the Markdown parser left it decoded ('maps/café.png', not 'maps/caf%C3%A9.png')."""
        return self.src if self.front else unquote(self.src)


@dataclass(frozen=True)
class LocalImage:
    """A story image that is a file of the issue folder."""

    image: StoryImage
    path: str  # its path in the issue folder ('maps/kyiv.png'), and under <slug>/ on the site
    file: Path


def story_images(story: Story) -> Iterator[StoryImage]:
    """Yield the story's image and its body's images, each with its line in the story file."""
    if story.image:
        yield StoryImage(story, story.image.src, front_line(story, "image"), True)
    if "![" not in story.body:  # no Markdown image (inline or by reference): no second parse
        return
    for token in markdown_tokens(story.body):
        if not token.children:
            continue
        line = story.body_line + token.map[0] if token.map else story.body_line
        for child in token.children:
            if child.type in ("softbreak", "hardbreak"):
                line += 1
            elif child.type == "image":
                yield StoryImage(story, child.attrGet("src") or "", line, False)


def is_local(src: str) -> bool:
    """Return whether *src* is a relative reference (no scheme, no host): a file beside the story."""
    try:
        parts = urlsplit(src.strip())
    except ValueError:
        return False
    return not parts.scheme and not parts.netloc


def folder_path(src: str) -> str | None:
    """Return the path in the issue folder that a local *src* names, or None if it names none.

    The src is a URL reference, as in the HTML: 'caf%C3%A9.png' names café.png. It must
    stay inside the folder: no absolute path, no '..', no hidden name (a static host
    does not serve those).
    """
    path = unquote(urlsplit(src.strip()).path)
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        return None
    parts = PurePosixPath(path).parts
    if any(part.startswith(".") for part in parts):  # '..' and hidden names alike
        return None
    return "/".join(parts)


def local_images(issue: Issue) -> tuple[list[LocalImage], list[DigestError]]:
    """Return the issue's images that are files of its folder, and an error for each local
    src that names no file inside the folder (symbolic links that lead out of it included)."""
    root = issue.path.resolve()
    found: list[LocalImage] = []
    errors: list[DigestError] = []
    for story in issue.stories:
        for image in story_images(story):
            if not is_local(image.src):
                continue
            path = folder_path(image.src)
            file = (root / path).resolve() if path else None
            if file is None or not file.is_relative_to(root):
                errors.append(
                    ContentError(
                        f"the image {image.shown!r} is not a file inside the issue folder",
                        path=story.path,
                        line=image.line,
                        hint="put the picture in the issue's folder and give its name relative to it "
                        "(no '/' first, no '..', no hidden name), or give its full https:// address",
                    )
                )
            elif not file.is_file():
                # Read as a web address: '#' and '?' (and, in the front matter, where the src
                # is as written, '%'; a body image's src comes percent-encoded by the parser).
                as_url = "#" in image.src or "?" in image.src or (image.front and "%" in image.src)
                errors.append(
                    ContentError(
                        f"image not found in the issue folder: {image.shown!r}"
                        + (f" (read as a web address: the file {path!r})" if as_url else ""),
                        path=story.path,
                        line=image.line,
                        hint="a src is a web address: write '#' as %23, '?' as %3F and '%' as %25"
                        if as_url
                        else "put the picture in the issue's folder, or give a full URL",
                    )
                )
            else:
                found.append(LocalImage(image, path, file))
    return found, errors


def published_url(base_url: str, slug: str, path: str) -> str:
    """Return the absolute URL of an issue folder's file on the published site."""
    return f"{base_url.rstrip('/')}/{quote(slug, safe=PATH_SAFE)}/{quote(path, safe=PATH_SAFE)}"


def email_srcs(issue: Issue, base_url: str | None) -> tuple[dict[str, str], list[DigestError]]:
    """Return {src: absolute URL} for the issue's local images, and the problems that keep
    them from readers: a src that names no file, or no base_url to publish them under."""
    found, errors = local_images(issue)
    if not base_url:
        errors += [
            ContentError(
                f"the image {local.image.shown!r} is a file in the issue folder, which readers' mail "
                "cannot load without 'base_url'",
                path=local.image.story.path,
                line=local.image.line,
                hint=NO_BASE_URL_HINT,
            )
            for local in found
        ]
        errors.sort(key=lambda e: (str(e.path), e.line or 0))
        return {}, errors
    return {local.image.src: published_url(base_url, issue.slug, local.path) for local in found}, errors


def for_email(issue: Issue, base_url: str | None) -> tuple[Issue, list[DigestError]]:
    """Return the issue with each local image's src made its published URL (in both parts),
    and the problems."""
    srcs, errors = email_srcs(issue, base_url)
    if not srcs:
        return issue, errors
    stories = []
    for story in issue.stories:
        changes: dict = {}
        if story.image and story.image.src in srcs:
            changes["image"] = Image(srcs[story.image.src], story.image.alt)
        if any(not i.front and i.src in srcs for i in story_images(story)):
            changes["body_html"], changes["body_text"] = body_parts(story.body, srcs, story.lead)
        stories.append(dataclasses.replace(story, **changes) if changes else story)
    return dataclasses.replace(issue, stories=tuple(stories)), errors


def site_files(issue: Issue) -> Iterator[tuple[str, bytes] | DigestError]:
    """Yield the site files (``<slug>/<path>``, bytes) of the issue's local images, or their problems."""
    found, errors = local_images(issue)
    yield from errors
    seen: set[str] = set()
    for local in found:
        if local.path not in seen:
            seen.add(local.path)
            yield f"{issue.slug}/{local.path}", local.file.read_bytes()
