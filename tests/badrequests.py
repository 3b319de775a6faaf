"""The committed corpus of hostile requests (`tests/data/bad_requests.txt`): parse it,
send a line raw over a socket, or through Flask's test client.

The file's own header documents the format.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "data" / "bad_requests.txt"

_ESCAPE = re.compile(r"\\(r|n|t|0|\\|x[0-9A-Fa-f]{2})")
_REPEAT = re.compile(r"\{\{(.+?)\*(\d+)\}\}")
_SIMPLE = {"r": "\r", "n": "\n", "t": "\t", "0": "\x00", "\\": "\\"}


@dataclass(frozen=True)
class BadRequest:
    """One corpus line: what to send and the statuses it may get."""

    line: int
    method: str
    target: str  # decoded: may hold CR, LF, NUL and non-ASCII characters
    statuses: tuple[int, ...]
    headers: tuple[str, ...]  # extra raw header lines, decoded
    raw_only: bool
    defect: bool
    comment: str

    @property
    def id(self) -> str:
        shown = self.target if len(self.target) <= 60 else self.target[:57] + "..."
        return f"L{self.line}-{self.method}-{shown!r}"


def unescape(text: str) -> str:
    """Expand ``{{TEXT*N}}`` and the backslash escapes of the corpus format."""
    text = _REPEAT.sub(lambda m: m[1] * int(m[2]), text)

    def one(match: re.Match[str]) -> str:
        code = match[1]
        return chr(int(code[1:], 16)) if code.startswith("x") else _SIMPLE[code]

    return _ESCAPE.sub(one, text)


def load_corpus(path: Path = CORPUS) -> list[BadRequest]:
    """Every request of the corpus file, in file order."""
    requests = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        method, target, status, *rest = line.split()
        options = []
        while rest and rest[0].startswith("+"):
            options.append(rest.pop(0))
        headers = tuple(unescape(o[len("+header=") :]) for o in options if o.startswith("+header="))
        known = ("+raw", "+defect")
        unknown = [o for o in options if o not in known and not o.startswith("+header=")]
        if unknown:
            raise ValueError(f"{path.name}:{number}: unknown option {unknown[0]}")
        requests.append(
            BadRequest(
                line=number,
                method=method,
                target=unescape(target),
                statuses=tuple(int(s) for s in status.split("|")),
                headers=headers,
                raw_only="+raw" in options,
                defect="+defect" in options,
                comment=" ".join(rest),
            )
        )
    return requests


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]  # lower-case names; the last value of repeated names
    header_lines: list[str]
    body: bytes


def send_raw(host: str, port: int, request: BadRequest, timeout: float = 10.0) -> RawAnswer:
    """Send `request` byte for byte (UTF-8) with ``Connection: close``; read the answer."""
    lines = [f"{request.method} {request.target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += list(request.headers)
    lines += ["Connection: close", "", ""]
    data = "\r\n".join(lines).encode("utf-8")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return parse_answer(b"".join(chunks), head_only=request.method == "HEAD")


def parse_answer(data: bytes, head_only: bool = False) -> RawAnswer:
    """Status, headers and body of one HTTP/1.x answer (body as sent, not de-chunked)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP answer: {data[:80]!r}")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(status, headers, lines[1:], b"" if head_only else body)
