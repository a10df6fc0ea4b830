"""The security rules, held by reading the source and by attacking the real commands.

- Nothing unpickles, evals, executes or runs a shell; every np.load has allow_pickle=False.
- Every file mnistkit writes goes through atomic.py, whose temp files are made new (O_EXCL, O_NOFOLLOW):
  unpredictable names, created exclusively, never following a planted link.
- Fetch writes only the four canonical names inside its output folder, whatever a mirror
  answers (names in headers, redirects to other places or schemes, links in a local
  mirror), and verifies TLS certificates.
- Command-line inputs are paths, never shell fragments.
"""

from __future__ import annotations

import ast
import http.server
import os
import shutil
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import fetch_table

import mnistkit
from mnistkit.atomic import atomic_write
from mnistkit.cli import cli
from mnistkit.errors import MnistkitError
from mnistkit.fetch import fetch

PACKAGE = Path(mnistkit.__file__).parent
SOURCES = sorted(PACKAGE.glob("*.py"))
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "subprocess", "pty", "yaml"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_OS_CALLS = {
    "system",
    "popen",
    "execv",
    "execve",
    "execvp",
    "execl",
    "spawnv",
    "spawnl",
    "startfile",
}


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


@pytest.mark.parametrize("source", SOURCES, ids=[path.name for path in SOURCES])
def test_nothing_unpickles_evals_or_runs_a_shell(source: Path) -> None:
    tree = parsed(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {alias.name.split(".")[0] for alias in node.names} & FORBIDDEN_MODULES, ast.dump(node)
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in FORBIDDEN_MODULES, node.module
    for call in calls(tree):
        name = dotted(call.func)
        where = f"{source.name}:{call.lineno}"
        assert name not in FORBIDDEN_CALLS, where
        assert not (name.startswith("os.") and name[3:] in FORBIDDEN_OS_CALLS), where
        for keyword in call.keywords:
            is_true = isinstance(keyword.value, ast.Constant) and keyword.value.value is True
            assert not (keyword.arg == "shell" and is_true), where
            assert not (keyword.arg == "allow_pickle" and not isinstance(keyword.value, ast.Constant)), where
            assert not (keyword.arg == "allow_pickle" and keyword.value.value is not False), where


def test_every_np_load_refuses_pickles() -> None:
    loads = 0
    for source in SOURCES:
        for call in calls(parsed(source)):
            if dotted(call.func) in ("np.load", "numpy.load"):
                loads += 1
                keywords = {k.arg: k.value for k in call.keywords}
                assert "allow_pickle" in keywords, f"{source.name}:{call.lineno}"
                assert keywords["allow_pickle"].value is False, f"{source.name}:{call.lineno}"
    assert loads >= 1


def _atomic_targets(tree: ast.AST) -> dict[ast.AST, set[str]]:
    """For each node inside a `with atomic_write(...) as handle` block, the handle names."""
    inside: dict[ast.AST, set[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.With):
            continue
        names = {
            item.optional_vars.id
            for item in node.items
            if isinstance(item.context_expr, ast.Call)
            and dotted(item.context_expr.func).endswith("atomic_write")
            and isinstance(item.optional_vars, ast.Name)
        }
        for statement in node.body:
            for child in ast.walk(statement):
                inside.setdefault(child, set()).update(names)
    return inside


def _bytes_io_names(tree: ast.AST) -> set[str]:
    return {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
        if dotted(node.value.func) in ("io.BytesIO", "BytesIO")
        for target in node.targets
        if isinstance(target, ast.Name)
    }


@pytest.mark.parametrize("source", [p for p in SOURCES if p.name != "atomic.py"], ids=lambda p: p.name)
def test_every_write_goes_through_atomic_write(source: Path) -> None:
    """open(..., "w"), write_bytes/write_text, np.save*, and .save(...) to anything but an
    atomic_write handle or an in-memory buffer would put partial files under final names."""
    tree = parsed(source)
    handles = _atomic_targets(tree)
    buffers = _bytes_io_names(tree)
    for call in calls(tree):
        name = dotted(call.func)
        where = f"{source.name}:{call.lineno}"
        if name == "open" or (name.endswith(".open") and name not in ("Image.open", "np.load")):
            mode = (
                call.args[1]
                if len(call.args) > 1
                else next((k.value for k in call.keywords if k.arg == "mode"), None)
            )
            is_read = mode is None or (isinstance(mode, ast.Constant) and set(mode.value) <= set("rbt"))
            is_devnull = bool(call.args) and dotted(call.args[0]) == "os.devnull"
            assert is_read or is_devnull or name.endswith("opener.open"), f"{where}: opens a file for writing"
        assert not name.endswith((".write_bytes", ".write_text")), f"{where}: writes in place"
        assert name not in ("os.rename", "shutil.move", "shutil.copy", "shutil.copyfile"), where
        if name.startswith(("np.save", "numpy.save")) or name.endswith(".save"):
            target = call.args[0] if call.args else None
            target_name = target.id if isinstance(target, ast.Name) else None
            assert target_name in handles.get(call, set()) | buffers, f"{where}: {name} outside atomic_write"


def test_temp_files_are_made_in_one_place_and_only_as_new_files() -> None:
    """atomic.py makes every temp file, as a new file (O_EXCL) that a link planted at its name
    does not redirect (O_NOFOLLOW), as mkstemp does; no module uses tempfile's own."""
    used, made = {}, []
    for source in SOURCES:
        for node in ast.walk(parsed(source)):
            if isinstance(node, ast.Attribute) and dotted(node.value) == "tempfile":
                used.setdefault(node.attr, set()).add(source.name)
        for call in calls(parsed(source)):
            if dotted(call.func) == "os.open" and "O_CREAT" in ast.unparse(call):
                made.append((source.name, ast.unparse(call)))
    assert used == {}
    assert [name for name, _ in made] == ["atomic.py"], made
    assert all(flag in made[0][1] for flag in ("O_EXCL", "_NO_FOLLOW", "384")), made  # 384: 0o600


def test_temp_names_are_unpredictable_and_never_follow_a_planted_link(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    seen = []
    for _ in range(2):
        # A local attacker plants links at every name a fixed scheme could pick.
        for guess in (
            f".model.safetensors.{os.getpid()}.tmp",
            "model.safetensors.tmp",
            ".model.safetensors.tmp",
        ):
            (tmp_path / guess).unlink(missing_ok=True)
            (tmp_path / guess).symlink_to(victim)
        with atomic_write(target) as handle:
            handle.write(b"new")
            temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]
            assert len(temps) == 1
            info = temps[0].lstat()
            assert temps[0].is_file() and info.st_mode & 0o777 == 0o600 and info.st_uid == os.getuid()
            seen.append(temps[0].name)
    assert seen[0] != seen[1]
    for name in seen:
        random_part = name.removeprefix(f".model.safetensors.{os.getpid()}.").removesuffix(".tmp")
        assert len(random_part) >= 6
    assert victim.read_bytes() == b"precious"
    assert target.read_bytes() == b"new" and not target.is_symlink()


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    """Answers with a trick that would write elsewhere, or read elsewhere, if fetch obeyed it."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        trick, _, rest = self.path.lstrip("/").partition("/")
        name = urllib.parse.unquote(rest).rsplit("/", 1)[-1]
        if trick == "disposition" and name in self.server.files:
            body = self.server.files[name]
            self.send_response(200)
            self.send_header("Content-Disposition", 'attachment; filename="../../escaped.gz"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        locations = {
            "traversal": "/disposition/" + urllib.parse.quote(f"../../escaped/{name}", safe=""),
            "ftp": f"ftp://127.0.0.1/{name}",
            "data": "data:application/gzip;base64,H4sIAAAAAAAA/wMAAAAAAAAAAAA=",
        }
        if trick not in locations:
            self.send_error(404)
            return
        self.send_response(302)
        self.send_header("Location", locations[trick])
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def hostile_server(fetch_files: dict[str, bytes]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileHandler)
    server.daemon_threads = True
    server.files = fetch_files
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("first", ["traversal", "ftp", "data", "linked", "disposition"])
def test_fetch_writes_only_the_canonical_names_whatever_mirrors_answer(
    tmp_path: Path, hostile_server: str, fetch_files: dict[str, bytes], first: str
) -> None:
    """Each trick first, then a local mirror whose files link to a secret, then a mirror that
    names its files `../../escaped.gz`: only the four names appear, in the output folder."""
    linked_mirror = tmp_path / "linked-mirror"
    linked_mirror.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(b"not for the mirror to hand out")
    for name in fetch_files:
        (linked_mirror / name).symlink_to(secret)
    out_dir = tmp_path / "outside" / "deep" / "raw"
    lines: list[str] = []
    mirrors = [str(linked_mirror), f"{hostile_server}/disposition/"]
    if first != "linked":
        mirrors.insert(0, f"{hostile_server}/{first}/")
    paths = fetch(out_dir, mirrors, files=fetch_table(fetch_files), timeout_s=5, log=lines.append)
    assert sorted(path.name for path in paths) == sorted(fetch_files)
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(fetch_files)
    for name, data in fetch_files.items():
        assert (out_dir / name).read_bytes() == data
    written = sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()
    )
    assert written == sorted(["secret", *(f"outside/deep/raw/{name}" for name in fetch_files)])
    assert secret.read_bytes() == b"not for the mirror to hand out"
    if first in ("ftp", "data"):
        refusals = [line for line in lines if "refused (only http and https redirects are followed)" in line]
        assert len(refusals) == 1  # refused once, then skipped for the other files
        assert f"{mirrors[0]}: skipped for the rest of this run" in lines


def _self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it makes the test's self-signed certificate")
    key, certificate = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(certificate)),
        ],
        check=True,
        capture_output=True,
    )
    return key, certificate


def test_tls_certificates_are_verified(tmp_path: Path, fetch_files: dict[str, bytes]) -> None:
    """An HTTPS mirror with a certificate nobody signed is refused, not trusted."""
    key, certificate = _self_signed_certificate(tmp_path)
    served = tmp_path / "served"
    served.mkdir()
    for name, data in fetch_files.items():
        (served / name).write_bytes(data)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        out_dir = tmp_path / "raw"
        lines: list[str] = []
        url = f"https://127.0.0.1:{server.server_address[1]}/"
        with pytest.raises(MnistkitError, match="every mirror failed"):
            fetch(out_dir, [url], files=fetch_table(fetch_files), timeout_s=5, log=lines.append)
        assert "TLS certificate not trusted" in lines[0] and "(2 attempts)" not in lines[0]
        assert not out_dir.exists()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "fragment", ["$(touch pwned)", "`touch pwned`", "x; touch pwned", "x && touch pwned"]
)
def test_command_line_inputs_are_paths_never_shell(
    tmp_path: Path, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (
        ["predict", fragment, fragment],
        ["eval", fragment, fragment],
        ["parse-to-npz", fragment, "-o", "out.npz"],
        ["render-curves", fragment, "-o", "out.png"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"Error: {fragment}: "), result.stderr
    assert list(tmp_path.iterdir()) == []
