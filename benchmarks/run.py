"""Benchmarks for digest: build, per-recipient preparation, send throughput, memory.

Every figure is measured in this run against a baseline measured in the same
run, and printed as a ratio. All traffic goes to servers on 127.0.0.1.

    python benchmarks/run.py            # the full run (a few minutes)
    python benchmarks/run.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import jinja2  # noqa: E402
import yaml  # noqa: E402
from markdown_it import MarkdownIt  # noqa: E402
from markupsafe import Markup  # noqa: E402
from premailer import Premailer  # noqa: E402

import digest.stories  # noqa: E402
from digest.config import load_project  # noqa: E402
from digest.export import build_issue  # noqa: E402
from digest.issue import load_issue  # noqa: E402
from digest.message import MessageTemplate, Recipient  # noqa: E402
from digest.render import default_templates_dir, render_issue  # noqa: E402

EXAMPLE = REPO / "issues" / "2021-12-31"
RECORD_SECONDS: list[float] = []
CPU: dict[str, list[float]] = {"digest": [], "raw": [], "sink": []}  # seconds per message
ROWS: list[tuple[str, str, str, str]] = []


def row(what: str, figure: str, baseline: str, ratio: str, target: str = "") -> None:
    ROWS.append((what, figure, baseline, ratio, target))
    print(f"  {what}: {figure}  (baseline {baseline}; {ratio}) {target}", flush=True)


# -- a scratch project --------------------------------------------------------------


def make_project(folder: Path, stories: int) -> Path:
    """A project whose issue 'bench' has *stories* stories made from the example's."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "digest.toml", folder / "digest.toml")
    issue = folder / "issues" / "bench"
    issue.mkdir(parents=True, exist_ok=True)
    (issue / "issue.toml").write_text(
        'subject = "Benchmark issue"\ndate = 2022-01-01\npreheader = "Many stories."\n'
    )
    sources = sorted(EXAMPLE.glob("*.md"))
    for n in range(stories):
        text = sources[n % len(sources)].read_text(encoding="utf-8")
        text = text.replace("title: ", f"title: {n:03d} ", 1)
        text = text.replace("url: https://", f"url: https://n{n}.", 1)
        (issue / f"story-{n:03d}.md").write_text(text, encoding="utf-8")
    return folder


# -- 1. build ------------------------------------------------------------------------


def bare_build(issue_dir: Path) -> str:
    """The same work done directly: YAML + markdown-it + Jinja2 (both parts) + premailer.

    The same premailer settings as digest (no pretty-printing), the same dateline in both
    parts, and the text part wrapped at 76 columns with the standard library (every
    paragraph, title and the disclaimer), as a direct implementation would do it.
    """
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    stories = []
    for path in sorted(issue_dir.glob("*.md")):
        _, front, body = path.read_text(encoding="utf-8").split("---\n", 2)
        meta = yaml.load(front, Loader=yaml.CSafeLoader)
        stories.append(
            {
                **{k: None for k in ("source", "url", "dateline", "image", "section", "author", "date")},
                **meta,
                "slug": path.stem,
                "body": body,
                "html": Markup(md.render(body)),
                "read_also": meta.get("read_also") or [],
                "host": "example.com",
            }
        )
    html = BARE_ENV.get_template("email.html").render(CONTEXT | {"stories": stories})
    BARE_ENV.get_template("email.txt").render(CONTEXT | {"stories": stories})
    return Premailer(
        html,
        strip_important=False,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        allow_network=False,
        allow_loading_external_files=False,
        method="html",
    ).transform(pretty_print=False)


BARE_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(default_templates_dir())),
    autoescape=jinja2.select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _fill(text: str) -> str:
    return textwrap.fill(text, 76, break_long_words=False, break_on_hyphens=False)


def _bare_lead(story: dict) -> str:
    if not story["dateline"]:
        return ""
    return f"{story['dateline']}. /{story['source']}/." if story["source"] else (f"{story['dateline']}.")


def _bare_html(story: dict) -> Markup:
    lead = _bare_lead(story)
    html = str(story["html"])
    if lead:
        html = html.replace("<p>", f'<p><span class="dateline">{Markup.escape(lead)}</span> ', 1)
    return Markup(html)


def _bare_text(story: dict) -> str:
    paragraphs = story["body"].strip().split("\n\n")
    lead = _bare_lead(story)
    if lead and paragraphs:
        paragraphs[0] = f"{lead} {paragraphs[0]}"
    return "\n\n".join(_fill(p) for p in paragraphs)


def _bare_language(story: dict) -> Markup:  # the story partial's lang and dir (none here)
    language = story.get("language")
    return Markup(f' lang="{language}" dir="ltr"') if language else Markup("")


def _bare_picture(image: dict) -> str:  # the text part's picture line
    return f"[Picture: {image['alt']}] <{image['src']}>"


BARE_ENV.filters.update(
    story_html=_bare_html,
    story_text=_bare_text,
    lead=_bare_lead,
    wrap=_fill,
    language_attributes=_bare_language,
    picture_text=_bare_picture,
)
CONTEXT: dict = {}


def timed(work: Callable[[], object]) -> float:
    """Seconds one call takes, with the garbage collector paused (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        t = time.perf_counter()
        work()
        return time.perf_counter() - t
    finally:
        gc.enable()


def bench_build(root: Path, sizes: list[int], repeats: int) -> None:
    print("build (cold: stories parsed again each time)", flush=True)
    for size in sizes:
        project_dir = make_project(root / f"build-{size}", size)
        project = load_project(project_dir)
        issue_dir = project_dir / "issues" / "bench"
        issue = load_issue(project, "bench")
        CONTEXT.update(
            newsletter=project.newsletter,
            issue=issue,
            recipient=None,
            unsubscribe_url="https://example.org/u",
            web_url=None,
        )
        ours, bare, warm = [], [], []
        build_issue(project, "bench")  # compile templates once for both
        bare_build(issue_dir)
        # Small builds take a few ms, so a busy moment of the machine moves their median
        # most: they get more rounds (a --quick run once read 1.43x for 10 stories, 0.98x
        # to 1.07x when run again).
        for _ in range(repeats * max(1, 200 // (size * 5))):
            bare.append(timed(lambda d=issue_dir: bare_build(d)))
            digest.stories._cache.clear()
            # The inlined HTML and the text part, stories parsed anew:
            ours.append(timed(lambda p=project: build_issue(p, "bench").rendered))
            # What preview and export do when no file changed:
            warm.append(timed(lambda p=project: build_issue(p, "bench").rendered))
        o, b, w = statistics.median(ours), statistics.median(bare), statistics.median(warm)
        row(
            f"build {size} stories",
            f"{o * 1000:.0f} ms",
            f"{b * 1000:.0f} ms",
            f"{o / b:.2f}x",
            "target <= 1.2x",
        )
        row(
            f"rebuild {size} stories, unchanged files",
            f"{w * 1000:.0f} ms",
            f"{b * 1000:.0f} ms",
            f"{w / b:.2f}x",
        )


# -- 2. per-recipient preparation ----------------------------------------------------------


def bench_prepare(root: Path, count: int) -> None:
    print("per-recipient preparation (50 stories)", flush=True)
    project = load_project(make_project(root / "prep", 50))
    template = MessageTemplate(
        render_issue(project, load_issue(project, "bench"), personal=True), secret="benchmark-secret"
    )
    people = [Recipient(f"reader{i}@example.com", {"name": f"Reader Number {i}"}) for i in range(count)]
    size = len(template.personalise(people[0]))
    t = time.perf_counter()
    for person in people:
        template.personalise(person)
    ours = count / (time.perf_counter() - t)
    # Baseline: one EmailMessage per recipient, the way most tools do it.
    from email.message import EmailMessage
    from email.policy import SMTP

    html, text = template.rendered.html, template.rendered.text
    n = max(count // 50, 100)
    t = time.perf_counter()
    for person in people[:n]:
        msg = EmailMessage(policy=SMTP)
        msg["To"] = person.email
        msg["Subject"] = template.subject
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        msg.as_bytes()
    base = n / (time.perf_counter() - t)
    row(
        f"prepare a {size // 1024} KB message",
        f"{ours:,.0f} msg/s",
        f"{base:,.0f} msg/s (EmailMessage per recipient)",
        f"{ours / base:.0f}x",
        "target >= 20,000 msg/s",
    )


# -- 3. send throughput ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """The benchmark's SMTP sink (benchmarks/sink.py) in its own process."""

    def __init__(self, kind: str = "sink") -> None:
        self.port = free_port()
        script = HERE / ("sink.py" if kind == "sink" else "aiosmtpd_sink.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.port)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def cpu_seconds(self) -> float | None:
        """The sink process's CPU time so far (user + system), where /proc tells it."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        self.proc.terminate()
        out = self.proc.communicate(timeout=30)[0].strip()
        return int(out or 0)


def raw_send(port: int, data: bytes, sender: str, count: int, workers: int) -> float:
    """The baseline: pre-built bytes over *workers* lean connections (pipelined if offered)."""
    body = data  # already SMTP DATA: dot-stuffed, with the final '.' line

    def one(share: range) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO bench\r\n")
        lines = [f.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(f.readline())
        pipelining = any(b"PIPELINING" in line.upper() for line in lines)
        for i in share:
            commands = [
                b"MAIL FROM:<%s>\r\n" % sender.encode(),
                b"RCPT TO:<raw%d@example.com>\r\n" % i,
                b"DATA\r\n",
            ]
            if pipelining:
                sock.sendall(b"".join(commands))
                for _ in commands:
                    f.readline()
            else:
                for command in commands:
                    sock.sendall(command)
                    f.readline()
            sock.sendall(body)
            f.readline()
        sock.sendall(b"QUIT\r\n")
        f.readline()
        sock.close()

    shares = [range(w, count, workers) for w in range(workers)]
    threads = [threading.Thread(target=one, args=(s,)) for s in shares]
    cpu = _cpu()
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rate = count / (time.perf_counter() - t)
    CPU["raw"].append((_cpu() - cpu) / count)
    return rate


def _cpu() -> float:
    """This process's CPU time so far, user + system, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def send_plan(root: Path, port: int, count: int, workers: int, tag: str):
    """A scratch project with a list of *count* readers, planned to send to the sink at *port*."""
    from digest.send import Options, plan_send

    project_dir = make_project(root / f"send-{tag}", 50)
    csv = project_dir / "list.csv"
    csv.write_text("email,name\n" + "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(count)))
    os.environ.update(
        DIGEST_SMTP_HOST="127.0.0.1",
        DIGEST_SMTP_PORT=str(port),
        DIGEST_SMTP_SECURITY="none",
        DIGEST_SECRET="benchmark-secret",
    )
    project = load_project(project_dir)
    return plan_send(project, "bench", list_path=csv, options=Options(workers=workers), per_connection=1000)


def digest_send(root: Path, port: int, count: int, workers: int, tag: str) -> float:
    """digest's send loop to *count* recipients; messages/s.

    Timed: the send loop, per message 'sending' committed (with the suppression check)
    before the message goes out and 'sent' committed as soon as its reply is read (group
    commit per event-loop turn), and the SMTP exchange. Recording the list in the journal
    after the confirmation (nothing is written before it) is timed apart, in RECORD_SECONDS.
    """
    plan = send_plan(root, port, count, workers, tag)
    t = time.perf_counter()
    plan.record()
    cpu = _cpu()
    t1 = time.perf_counter()
    stats = plan.run()
    rate = stats.sent / (time.perf_counter() - t1)
    CPU["digest"].append((_cpu() - cpu) / count)
    RECORD_SECONDS.append(t1 - t)
    assert stats.sent == count, stats
    return rate


def bench_send(root: Path, count: int, workers: int, rounds: int, aiosmtpd_count: int) -> None:
    print(f"send {count:,} messages over {workers} connections, {rounds} rounds", flush=True)
    project = load_project(make_project(root / "send-bytes", 50))
    template = MessageTemplate(
        render_issue(project, load_issue(project, "bench"), personal=True), secret="benchmark-secret"
    )
    data = template.personalise(Recipient("reader@example.com", {"name": "Reader"}), wire=True)
    sender = "digest@worlddigest.example.org"
    sink = Sink()
    ours, raw = [], []
    warmup = min(count, 500)
    try:
        # A warm-up of each (not counted), then rounds that alternate which goes first,
        # so that both see the same machine.
        digest_send(root, sink.port, warmup, workers, "warmup")
        raw_send(sink.port, data, sender, warmup, workers)
        for key in CPU:
            CPU[key].clear()
        for n in range(rounds):
            for first in ("raw", "digest") if n % 2 else ("digest", "raw"):
                before = sink.cpu_seconds()
                if first == "raw":
                    raw.append(raw_send(sink.port, data, sender, count, workers))
                else:
                    ours.append(digest_send(root, sink.port, count, workers, f"sink{n}"))
                after = sink.cpu_seconds()
                if before is not None and after is not None:
                    CPU["sink"].append((after - before) / count)
    finally:
        received = sink.stop()
    assert received == 2 * (count * rounds + warmup), received
    o, r = statistics.median(ours), statistics.median(raw)
    ratios = sorted(a / b for a, b in zip(ours, raw, strict=True))
    row(
        f"digest send to the sink, {len(data) // 1024} KB messages",
        f"{o:,.0f} msg/s",
        f"{r:,.0f} msg/s raw SMTP",
        f"{statistics.median(ratios):.2f}x",
        f"target >= 0.9x (rounds: {', '.join(f'{x:.2f}' for x in ratios)})",
    )
    us = {key: statistics.median(values) * 1e6 for key, values in CPU.items() if values}
    row(
        "CPU per message sent: digest / raw client",
        f"{us['digest']:,.0f} us",
        f"{us['raw']:,.0f} us raw client" + (f", {us['sink']:,.0f} us sink" if "sink" in us else ""),
        f"{us['digest'] / us['raw']:.1f}x",
        f"{os.cpu_count()} cores for client and sink together",
    )
    per_row = statistics.median(RECORD_SECONDS) / count
    row(
        "recording the list in the journal (after yes)",
        f"{per_row * 1e6:.0f} us/reader",
        f"{1 / r * 1e6:,.0f} us/message raw SMTP",
        f"{per_row * r:.2f}x of a message",
    )
    if aiosmtpd_count:
        server = Sink("aiosmtpd")
        try:
            ours_a = digest_send(root, server.port, aiosmtpd_count, workers, "aiosmtpd")
            raw_a = raw_send(server.port, data, sender, aiosmtpd_count, workers)
        finally:
            server.stop()
        row(
            f"digest send to aiosmtpd ({aiosmtpd_count:,} messages)",
            f"{ours_a:,.0f} msg/s",
            f"{raw_a:,.0f} msg/s raw SMTP",
            f"{ours_a / raw_a:.2f}x",
        )


def bench_postfix(root: Path, count: int, workers: int, rounds: int) -> None:
    """digest and the raw client through the tests' private Postfix (discarding what it accepts)."""
    from tests.postfix import start_postfix  # needs root and Debian's postfix

    print(f"send {count:,} messages through a private Postfix, {workers} connections, {rounds} rounds")
    project = load_project(make_project(root / "postfix-bytes", 50))
    template = MessageTemplate(
        render_issue(project, load_issue(project, "bench"), personal=True), secret="benchmark-secret"
    )
    data = template.personalise(Recipient("reader@example.com", {"name": "Reader"}), wire=True)
    sender = "digest@worlddigest.example.org"
    discard = {"default_transport": "discard", "relay_transport": "discard", "message_size_limit": "0"}
    ours, raw = [], []
    with start_postfix(root, extra_main_cf=discard) as postfix:
        digest_send(root, postfix.port, 200, workers, "postfix-warmup")
        for n in range(rounds):
            ours.append(digest_send(root, postfix.port, count, workers, f"postfix{n}"))
            raw.append(raw_send(postfix.port, data, sender, count, workers))
    ratios = sorted(a / b for a, b in zip(ours, raw, strict=True))
    row(
        "digest send through a private Postfix",
        f"{statistics.median(ours):,.0f} msg/s",
        f"{statistics.median(raw):,.0f} msg/s raw SMTP",
        f"{statistics.median(ratios):.2f}x",
        f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})",
    )


# -- 4. memory ---------------------------------------------------------------------------


def peak_rss_mb(args: list[str], cwd: Path, env: dict) -> float:
    """Peak RSS of a command, measured in a fresh helper process."""
    probe = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "0", f"{args} failed"
    return int(out[1]) / 1024


def bench_memory(root: Path, small: int, large: int) -> None:
    print(f"memory: digest send to {small:,} and {large:,} recipients (to the sink)", flush=True)
    results = {}
    sink = Sink()
    try:
        for count in (small, large):
            project_dir = make_project(root / f"mem-{count}", 50)
            csv = project_dir / "list.csv"
            with csv.open("w") as f:
                f.write("email,name\n")
                for i in range(count):
                    f.write(f"reader{i}@example.com,Reader {i}\n")
            env = dict(
                os.environ,
                DIGEST_SMTP_HOST="127.0.0.1",
                DIGEST_SMTP_PORT=str(sink.port),
                DIGEST_SMTP_SECURITY="none",
                DIGEST_SECRET="benchmark-secret",
                PYTHONPATH=str(REPO),
            )
            results[count] = peak_rss_mb(
                [
                    sys.executable,
                    "-m",
                    "digest",
                    "send",
                    "bench",
                    "--list",
                    str(csv),
                    "--yes",
                    "--workers",
                    "4",
                    "--per-connection",
                    "1000",
                ],
                project_dir,
                env,
            )
    finally:
        sink.stop()
    row(
        f"peak RSS, send to {large:,}",
        f"{results[large]:.0f} MB",
        f"{results[small]:.0f} MB at {small:,}",
        f"+{results[large] - results[small]:.1f} MB",
        "target < 120 MB and within 20 MB",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, under a minute")
    parser.add_argument(
        "--only",
        choices=["send", "postfix"],
        help="run only the send throughput figure, or the send through a private Postfix "
        "(root and Debian's postfix needed; not part of the full run)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    try:
        if args.only == "send":
            bench_send(
                root,
                3_000 if args.quick else 10_000,
                4,
                rounds=6 if args.quick else 8,
                aiosmtpd_count=300 if args.quick else 2_000,
            )
        elif args.only == "postfix":
            bench_postfix(root, 500 if args.quick else 2_000, 4, rounds=3)
        elif args.quick:
            bench_build(root, [10, 50, 200], repeats=5)
            bench_prepare(root, 20_000)
            bench_send(root, 3_000, 4, rounds=6, aiosmtpd_count=300)
            bench_memory(root, 1_000, 20_000)
        else:
            bench_build(root, [10, 50, 200], repeats=7)
            bench_prepare(root, 100_000)
            bench_send(root, 10_000, 4, rounds=8, aiosmtpd_count=2_000)
            bench_memory(root, 1_000, 100_000)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"{'measure':<44} {'digest':>14} {'baseline':>36} {'ratio':>8}  target")
    for what, figure, baseline, ratio, target in ROWS:
        print(f"{what:<44} {figure:>14} {baseline:>36} {ratio:>8}  {target}")


if __name__ == "__main__":
    main()
