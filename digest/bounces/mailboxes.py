"""Bounce mailboxes: a Maildir, an mbox file or an IMAP folder.

Each yields (reference, raw bytes) for every message and can move one message to
its ``processed`` folder. Nothing is ever deleted: a Maildir message is renamed
into ``.processed/`` (Maildir++), an mbox message is written to ``FILE.processed``
before it leaves FILE (the mbox is locked for the whole run), an IMAP message is
moved with MOVE (or COPY, then \\Deleted and UID EXPUNGE of exactly that UID) to
``processed`` in the user's personal namespace (``INBOX.processed`` on servers that
keep folders under INBOX), or to DIGEST_IMAP_PROCESSED.
Messages that are not ours are only read.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import mailbox
import os
import re
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DigestError
from ..settings import is_loopback, parse_port, read_dotenv, setting_source

PROCESSED = "processed"


class MailboxError(DigestError):
    """The bounce mailbox cannot be read or written."""


class MaildirBox:
    """A Maildir; processed messages go to its ``.processed`` subfolder (same file name)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not all((self.path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise MailboxError(
                "not a Maildir (it needs cur/, new/ and tmp/)",
                path=self.path,
                hint="pass --maildir the folder that Postfix or Dovecot delivers to",
            )
        self._box = mailbox.Maildir(self.path, factory=None, create=False)

    def describe(self) -> str:
        return f"Maildir {self.path}"

    def messages(self) -> Iterator[tuple[str, bytes]]:
        for sub in ("new", "cur"):
            for entry in sorted(os.scandir(self.path / sub), key=lambda e: e.name):
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                ref = f"{sub}/{entry.name}"
                try:
                    raw = Path(entry.path).read_bytes()
                except FileNotFoundError:  # taken meanwhile by another reader of the Maildir
                    continue
                except OSError as e:
                    raise MailboxError(f"cannot read {ref}: {e.strerror}", path=self.path) from e
                yield ref, raw

    def move(self, ref: str) -> str:
        """Rename the message into .processed/cur (a rename: never in both, never in neither)."""
        try:
            folder = self._box.get_folder(PROCESSED)
        except mailbox.NoSuchMailboxError:
            folder = self._box.add_folder(PROCESSED)
        sub, name = ref.split("/", 1)
        target_name = name if sub == "cur" or ":" in name else name + ":2,"
        target = Path(folder._path) / "cur" / target_name
        try:
            os.rename(self.path / ref, target)
        except FileNotFoundError:  # another run (cron overlapping) moved it first
            return f".{PROCESSED}/cur (by another run)"
        except OSError as e:
            raise MailboxError(f"cannot move {ref} to {PROCESSED}: {e.strerror}", path=self.path) from e
        return f".{PROCESSED}/cur/{target_name}"

    def close(self) -> None:
        self._box.close()


class MboxBox:
    """An mbox file, locked for the whole run; processed messages go to ``FILE.processed``.

    The messages to move are copied to FILE.processed when the run ends, and FILE is
    then rewritten without them. If FILE changed meanwhile (a program that wrote to it
    without taking the lock), nothing is copied and nothing leaves FILE: the next run
    moves them, and records nothing twice.
    """

    LOCK_WAIT = 10.0  # seconds to wait for a delivery agent to let go of the lock

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MailboxError(
                "no such mbox file",
                path=self.path,
                hint="pass --mbox the file your mail system appends bounces to",
            )
        self._box = mailbox.mbox(self.path, create=False)
        self._moved: list[int] = []
        self._locked = False
        if not readonly:  # a dry run only reads: it takes no lock and writes no FILE.lock
            _lock_mbox(self._box, self.path, self.LOCK_WAIT)
            self._locked = True
        self._keys = self._box.keys()  # read under the lock
        stat = self.path.stat()
        self._seen = (stat.st_ino, stat.st_size)

    def describe(self) -> str:
        return f"mbox {self.path}"

    def messages(self) -> Iterator[tuple[str, bytes]]:
        for number, key in enumerate(self._keys, 1):
            raw = self._box.get_bytes(key, from_=False)
            yield f"#{number} (key {key})", raw

    def move(self, ref: str) -> str:
        """Mark the message to go to FILE.processed when the run ends."""
        self._moved.append(int(ref.split("(key ", 1)[1].rstrip(")")))
        return f"{self.path.name}.{PROCESSED} (at the end of the run)"

    def close(self) -> None:
        """Copy the moved messages to FILE.processed, rewrite FILE without them, unlock."""
        try:
            if self._moved:
                self._move_all()
        finally:
            if self._locked:
                self._box.unlock()
            self._box.close()

    def _move_all(self) -> None:
        stat = self.path.stat()
        if (stat.st_ino, stat.st_size) != self._seen:
            raise self._changed()
        target = self.path.with_name(f"{self.path.name}.{PROCESSED}")
        processed = mailbox.mbox(target, create=True)
        try:
            _lock_mbox(processed, target, self.LOCK_WAIT)
            start = target.stat().st_size
            try:
                for key in self._moved:
                    processed.add(self._box.get_message(key))
                processed.flush()  # synced before FILE is rewritten
                for key in self._moved:
                    self._box.discard(key)
                self._box.flush()  # a new FILE renamed into place: the commit
            except BaseException as e:
                # mailbox.mbox.close() would try the failed rewrite again: forget it (FILE stays as is).
                self._box._pending = False
                if self.path.stat().st_ino == self._seen[0]:  # FILE as it was: take the copies back
                    # Only a run holding FILE's lock writes FILE.processed, so closing first is safe.
                    with contextlib.suppress(OSError):
                        processed.close()
                    os.truncate(target, start)
                if isinstance(e, mailbox.ExternalClashError):
                    raise self._changed() from None
                if isinstance(e, OSError):
                    raise MailboxError(
                        f"cannot move the processed messages to {target.name}: {e.strerror}; nothing was moved",
                        path=self.path,
                    ) from e
                raise
        finally:
            processed.close()  # also unlocks

    def _changed(self) -> MailboxError:
        return MailboxError(
            "the mbox changed while it was read (a program wrote to it without locking it); nothing was moved",
            path=self.path,
            hint="run digest bounces again: what was recorded is not recorded twice",
        )


def _lock_mbox(box: mailbox.mbox, path: Path, wait: float) -> None:
    """Lock an mbox as delivery agents do (fcntl and FILE.lock), waiting a little for them."""
    deadline = time.monotonic() + wait
    while True:
        try:
            box.lock()
            return
        except mailbox.ExternalClashError:
            if time.monotonic() >= deadline:
                box.close()
                raise MailboxError(
                    f"the mbox is locked by another program (a delivery in progress, or a {path.name}.lock "
                    "left behind)",
                    path=path,
                    hint=f"run digest bounces again in a minute; if {path.name}.lock stays, remove it",
                ) from None
            time.sleep(0.1)
        except OSError as e:
            box.close()
            raise MailboxError(f"cannot lock the mbox: {e.strerror}", path=path) from e


@dataclass(frozen=True)
class ImapSettings:
    """DIGEST_IMAP_* from .env and the environment; the password is never printed."""

    host: str
    username: str
    password: str = field(repr=False)
    port: int = 993
    security: str = "tls"
    folder: str = "INBOX"
    cafile: str | None = None
    processed: str | None = None  # where processed messages go; None: "processed" in the personal namespace


def imap_settings(dotenv_path: Path, environ: Mapping[str, str]) -> ImapSettings:
    """Read the IMAP settings; say what to set when something is missing."""
    values = read_dotenv(dotenv_path)
    values.update({k: v for k, v in environ.items() if k.startswith("DIGEST_IMAP_")})
    where = dotenv_path if dotenv_path.is_file() else None  # where the missing ones go

    def source(name: str) -> dict:
        return setting_source(dotenv_path, environ, name)

    missing = [k for k in ("HOST", "USERNAME", "PASSWORD") if not values.get(f"DIGEST_IMAP_{k}")]
    if missing:
        raise ConfigError(
            "--imap needs " + ", ".join(f"DIGEST_IMAP_{k}" for k in missing),
            path=where,
            hint="set DIGEST_IMAP_HOST, DIGEST_IMAP_USERNAME, DIGEST_IMAP_PASSWORD "
            "(and DIGEST_IMAP_PORT, DIGEST_IMAP_FOLDER) in .env or the environment",
        )
    security = (values.get("DIGEST_IMAP_SECURITY") or "tls").lower()
    if security not in ("tls", "starttls", "none"):
        raise ConfigError(
            f"DIGEST_IMAP_SECURITY must be tls, starttls or none, not {security!r}",
            **source("DIGEST_IMAP_SECURITY"),
            hint="tls (port 993) is the default",
        )
    host = values["DIGEST_IMAP_HOST"]
    if security == "none" and not is_loopback(host):
        raise ConfigError(
            f"DIGEST_IMAP_SECURITY=none would send the IMAP password unencrypted to {host}",
            **source("DIGEST_IMAP_SECURITY"),
            hint="use tls (the default) or starttls; 'none' is only allowed to this machine",
        )
    port_text = values.get("DIGEST_IMAP_PORT")
    try:
        port = parse_port(port_text) if port_text else (993 if security == "tls" else 143)
    except ValueError as e:
        raise ConfigError(
            f"DIGEST_IMAP_PORT is not a port number (1 to 65535): {port_text!r}",
            **source("DIGEST_IMAP_PORT"),
            hint="set DIGEST_IMAP_PORT=993 (TLS) or 143 (STARTTLS)",
        ) from e
    return ImapSettings(
        host=host,
        username=values["DIGEST_IMAP_USERNAME"],
        password=values["DIGEST_IMAP_PASSWORD"],
        port=port,
        security=security,
        folder=_folder_setting(values, "DIGEST_IMAP_FOLDER", source("DIGEST_IMAP_FOLDER")) or "INBOX",
        cafile=values.get("DIGEST_IMAP_CAFILE") or None,
        processed=_folder_setting(values, "DIGEST_IMAP_PROCESSED", source("DIGEST_IMAP_PROCESSED")),
    )


def _folder_setting(values: Mapping[str, str | None], key: str, where: dict) -> str | None:
    """A folder name as the mail program shows it, in IMAP's modified UTF-7 (RFC 3501 5.1.3)."""
    name = values.get(key) or None
    if name is None:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ConfigError(
            f"{key} holds a control character (a line break?)",
            **where,
            hint="write the folder name on one line, as your mail program shows it",
        )
    return imap_utf7(name)


def imap_utf7(name: str) -> str:
    """Encode a folder name in modified UTF-7: ``Erledigt-Ü`` gives ``Erledigt-&ANw-``, ``R&D`` ``R&-D``."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            packed = base64.b64encode("".join(run).encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
            out.append("&" + packed.decode("ascii") + "-")
            run.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


class ImapBox:
    """An IMAP folder over TLS (by default); processed messages are moved by UID."""

    def __init__(self, settings: ImapSettings, readonly: bool = False, use_move: bool | None = None) -> None:
        self.settings = settings
        self.readonly = readonly
        s = settings
        try:
            context = ssl.create_default_context(cafile=s.cafile)
            if s.security == "tls":
                self._imap = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=context, timeout=60)
            else:
                self._imap = imaplib.IMAP4(s.host, s.port, timeout=60)
                if s.security == "starttls":
                    self._imap.starttls(ssl_context=context)
            if s.username.isascii() and s.password.isascii():
                self._imap.login(s.username, s.password)
            else:  # LOGIN is ASCII only; AUTHENTICATE PLAIN is UTF-8 (RFC 4616)
                login = f"\0{s.username}\0{s.password}".encode()
                self._imap.authenticate("PLAIN", lambda _challenge: login)
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as e:
            raise MailboxError(
                f"cannot log in to IMAP {s.host}:{s.port} as {s.username}: {_clean(e, s.password, s.username)}",
                hint="check DIGEST_IMAP_HOST, _PORT, _USERNAME, _PASSWORD and "
                "_SECURITY (and DIGEST_IMAP_CAFILE for a private CA)",
            ) from None
        typ, data = self._run("capability", self._imap.capability, check=False)  # after login
        caps = (
            set((data[0] or b"").decode("ascii", "replace").upper().split())
            if typ == "OK"
            else {c.upper() for c in self._imap.capabilities}
        )
        self._move = ("MOVE" in caps) if use_move is None else use_move
        self._uidplus = "UIDPLUS" in caps
        self.processed = s.processed or self._in_personal_namespace(PROCESSED, "NAMESPACE" in caps)
        self._run(f"select {s.folder}", self._imap.select, _quote(s.folder), readonly)
        self._processed_ready = False

    def _in_personal_namespace(self, name: str, offered: bool) -> str:
        """Return *name* under the user's personal namespace (RFC 2342), e.g. ``INBOX.processed``.

        Servers such as Cyrus and Courier keep a user's folders under ``INBOX.``; a folder
        created at the top level is refused there. Without NAMESPACE, *name* as it is.
        """
        if not offered:
            return name
        try:
            typ, data = self._imap.namespace()
        except imaplib.IMAP4.error:  # a BAD reply: as if the server had no namespaces
            return name
        if typ != "OK" or not data:
            return name
        return personal_prefix(_flatten(data)) + name

    def describe(self) -> str:
        s = self.settings
        return f"IMAP {s.username}@{s.host}:{s.port}/{s.folder}"

    def messages(self) -> Iterator[tuple[str, bytes]]:
        data = self._run("search", self._imap.uid, "SEARCH", None, "UNDELETED")
        uids = data[0].split() if data and data[0] else []
        for uid in uids:
            fetched = self._run(f"fetch UID {uid.decode()}", self._imap.uid, "FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), None)
            if raw is None:
                continue
            yield f"UID {uid.decode()}", raw

    def move(self, ref: str) -> str:
        uid = ref.split()[1]
        if not self._processed_ready:
            typ, data = self._run(
                f"create {self.processed}", self._imap.create, _quote(self.processed), check=False
            )
            if (
                typ != "OK"
                and b"ALREADYEXISTS" not in b" ".join(d or b"" for d in data).upper()
                and b"exists" not in b" ".join(d or b"" for d in data).lower()
            ):
                raise MailboxError(f"cannot create the IMAP folder {self.processed}: {data}")
            self._processed_ready = True
        if self._move:
            self._run(f"move UID {uid}", self._imap.uid, "MOVE", uid, _quote(self.processed))
            return self.processed
        if not self._uidplus:
            raise MailboxError(
                "the IMAP server offers neither MOVE nor UIDPLUS, so a message cannot be moved "
                "without touching others",
                hint="move the processed messages by hand",
            )
        self._run(f"copy UID {uid}", self._imap.uid, "COPY", uid, _quote(self.processed))
        self._run(f"flag UID {uid}", self._imap.uid, "STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
        self._run(f"expunge UID {uid}", self._imap.uid, "EXPUNGE", uid)
        return self.processed

    def close(self) -> None:
        try:  # never CLOSE: it would expunge every \Deleted message, others' too
            self._imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass

    def _run(self, what: str, command, *args, check: bool = True):
        """Run one IMAP command; a refusal or a lost connection is one clear error."""
        try:
            typ, data = command(*args)
        except (OSError, imaplib.IMAP4.error) as e:
            raise MailboxError(
                f"IMAP {what} failed: {_clean(e, self.settings.password, self.settings.username)}",
                hint="run the command again: what was done is recorded, and nothing is done twice",
            ) from None
        if not check:
            return typ, data
        if typ != "OK":
            raise MailboxError(
                f"IMAP {what} failed: {_clean(data, self.settings.password, self.settings.username)}"
            )
        return data


_NAMESPACE = re.compile(rb'\s*\(\(\s*"((?:[^"\\]|\\.)*)"\s+(?:"((?:[^"\\]|\\.)*)"|NIL)', re.IGNORECASE)


def _flatten(data: list) -> bytes:
    """One response line from imaplib's pieces: a literal ``{n}`` becomes a quoted string."""
    out = b""
    for piece in data:
        if isinstance(piece, tuple):
            head, literal = piece
            out += re.sub(rb"\{\d+\}$", b"", head) + _quote(literal.decode("utf-8", "replace")).encode()
        elif piece:
            out += piece
    return out


def personal_prefix(response: bytes) -> str:
    """Return the first personal namespace's prefix from a NAMESPACE response ('' if none).

    ``(("INBOX." ".")) NIL NIL`` gives ``INBOX.``; ``(("" "/")) NIL NIL`` gives ``''``.
    A prefix that does not end with its hierarchy delimiter gets it added (``INBOX``
    with ``.`` gives ``INBOX.``): the folder goes inside it, not beside it.
    """
    match = _NAMESPACE.match(response)
    if not match:
        return ""
    prefix = _unescape(match.group(1))
    delimiter = _unescape(match.group(2)) if match.group(2) is not None else ""
    if prefix and delimiter and not prefix.endswith(delimiter):
        prefix += delimiter
    return prefix


def _unescape(quoted: bytes) -> str:
    """The text of an IMAP quoted string's contents (backslash escapes undone)."""
    return re.sub(rb"\\(.)", rb"\1", quoted).decode("utf-8", "replace")


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _clean(error, password: str, username: str = "") -> str:
    """The error's text without the password: as it is, as LOGIN quotes it, and as either
    reads inside the repr of a server's reply (backslashes doubled)."""
    text = str(error)
    if not password:
        return text
    forms = {password, _quote(password)[1:-1]}
    if username:  # AUTHENTICATE PLAIN's response, should a server echo it
        forms.add(base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii"))
    for form in list(forms):  # inside b'…' (a quote escaped, or not) and inside b"…"
        forms |= {repr(form.encode() + b'"')[2:-2], repr(form.encode())[2:-1]}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def open_mailbox(
    *,
    maildir: Path | None = None,
    mbox: Path | None = None,
    imap: ImapSettings | None = None,
    readonly: bool = False,
):
    """Open the one mailbox given."""
    if maildir is not None:
        return MaildirBox(maildir)
    if mbox is not None:
        return MboxBox(mbox, readonly=readonly)
    if imap is not None:
        return ImapBox(imap, readonly=readonly)
    raise DigestError("say which mailbox to read", hint="--maildir DIR, --mbox FILE or --imap")
