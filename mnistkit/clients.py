"""What `serve` can tell of its clients beyond HTTP: the web pages allowed to call it (their
origins), this machine's address other machines reach it at, and what an upload that is no
image was instead, with how to send one. Standard library only, as the server."""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
import urllib.parse

from mnistkit.errors import MnistkitError, UndecodableImage

# What an upload that is no image may be instead (`upload_hint`).
_IMAGE_STARTS = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*", b"MM\x00*")
_STRIPPED_STARTS = (b"\x89PNG\x1a", b"\xff\xd8\xff")  # as curl -d leaves them, line breaks dropped
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")
_BASE64_PROBE = 64  # characters of base64 decoded to look at what it holds
_FORM_FIELD = re.compile(rb"[A-Za-z0-9_.\-\[\]]+=")  # `image=...`
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")  # or IPv4


def check_origin(origin: str) -> str:
    """A web page's origin as browsers send it (`scheme://host[:port]`, lower case, no default
    port, a name in punycode, an IPv6 address compressed), or `*`: given otherwise
    (HTTP://LOCALHOST, http://localhost:80), it never matched."""
    if origin == "*":
        return origin
    refusal = MnistkitError(
        f"--allow-origin: {origin!r} is not an origin; give one as browsers send it, "
        "as http://localhost:3000 (no path, no wildcard), or * for any"
    )
    try:
        parts = urllib.parse.urlsplit(origin)
        port, host = parts.port, parts.hostname or ""
        host = host.encode("idna").decode("ascii") if host else host
    except (ValueError, UnicodeError):  # a port that is no number, a bracket left open
        raise refusal from None
    scheme = parts.scheme.lower()
    named = _HOST_NAME.fullmatch(host) is not None
    try:
        host = f"[{ipaddress.IPv6Address(host).compressed}]" if ":" in host else host
    except ValueError:
        raise refusal from None
    if scheme not in ("http", "https") or not (named or ":" in host):
        raise refusal
    if parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise refusal
    return f"{scheme}://{host}" + ("" if port in (None, {"http": 80, "https": 443}[scheme]) else f":{port}")


def network_addresses(family: socket.AddressFamily) -> list[str]:
    """This machine's address that other machines may reach: the one its default route leaves
    from (a UDP socket's connect sends nothing, and asks no name server), if a socket binds to
    it here (it is this machine's) and it is no loopback or link-local one; none offline."""
    probe = "192.0.2.1" if family == socket.AF_INET else "2001:db8::1"  # documentation addresses
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect((probe, 9))
            address = udp.getsockname()[0]
        with socket.socket(family, socket.SOCK_DGRAM) as ours:
            ours.bind((address, 0))
    except OSError:
        return []
    parsed = ipaddress.ip_address(address.split("%")[0])
    return [] if parsed.is_loopback or parsed.is_link_local or parsed.is_unspecified else [address]


def upload_hint(error: MnistkitError, content: bytes, content_type: str) -> str:
    """What was sent instead of an image's bytes, where that can be told, and how to send
    them: base64 text (a canvas's toDataURL(), a data URL), a file whose line breaks
    `curl -d @FILE` dropped (--data-binary sends it whole), or a form's fields."""
    if not isinstance(error, UndecodableImage):
        return ""
    text = content.strip()
    if text.startswith(b"data:image/") or (
        _BASE64_TEXT.fullmatch(text[:_BASE64_PROBE]) and _decoded_start(text).startswith(_IMAGE_STARTS)
    ):
        return (
            " (base64 text, as toDataURL() or a data URL gives it: send the image's bytes, "
            "base64.b64decode(text) or canvas.toBlob())"
        )
    line_breaks = b"\n" in content or b"\r" in content
    if (
        content_type == "application/x-www-form-urlencoded"
        and not line_breaks
        and content.startswith(_STRIPPED_STARTS)
    ):
        return " (sent with curl -d? it drops the file's line breaks: use --data-binary @FILE)"
    if _FORM_FIELD.match(content):
        return (
            " (a form's fields, as requests.post(url, data={...}) sends them: send the image's bytes "
            "as the body, requests.post(url, data=open(path, 'rb')))"
        )
    return ""


def _decoded_start(text: bytes) -> bytes:
    """The first bytes of what base64 `text` holds (b"" where it holds none)."""
    try:
        return base64.b64decode(text[: _BASE64_PROBE // 4 * 4])
    except ValueError:
        return b""
