"""CURVE key files: their layout in a keys directory, generating them, loading them.

A keys directory (``mesh keys generate DIR``) holds, in ZeroMQ's certificate format
(``zmq.auth``, Z85 text)::

    DIR/coordinator.key    DIR/coordinator.key_secret   the coordinator's pair
    DIR/node.key           DIR/node.key_secret          the pair every node shares
    DIR/client.key         DIR/client.key_secret        the clients' pair (mesh submit, ...)
    DIR/NAME.key           DIR/NAME.key_secret          extra pairs (--name NAME)
    DIR/public/*.key                                    the allow-list: public keys
                                                        that may connect to a daemon

``NAME.key`` holds the public key only; ``NAME.key_secret`` (mode 0600) holds both.

Which pair a process uses: the coordinator ``coordinator``; a client ``client``; a node
``<node id>`` if ``DIR/<node id>.key_secret`` exists, else ``node``. Which public key a
process expects of a server it dials: ``<name>.key`` in ``DIR``, then in ``DIR/public``,
where ``name`` is ``coordinator`` for the coordinator and the peer's node id for a node
(falling back to ``node``, the shared pair). So nodes that share the ``node`` pair know
each other's server key without being told, and a node with a pair of its own is known
to its peers once its public key is in their ``DIR/public``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from mesh.errors import ConfigError

__all__ = [
    "ALLOW_DIR",
    "DEFAULT_NAMES",
    "KeyPair",
    "check_name",
    "generate_keys",
    "generation_targets",
    "http_token_path",
    "load_http_token",
    "load_pair",
    "load_public",
    "own_pair_names",
    "pair_path",
    "public_path",
    "server_key_paths",
    "write_http_token",
]

#: The allow-list directory inside a keys directory.
ALLOW_DIR = "public"
#: The pairs ``mesh keys generate`` always makes.
DEFAULT_NAMES = ("coordinator", "node", "client")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair (Z85 text as bytes, as ZeroMQ's socket options take it)."""

    name: str
    public: bytes
    secret: bytes
    path: Path


def check_name(name: str) -> str:
    """A key name as a file name; raises ValueError if it is not one."""
    if not _NAME.match(name) or name == ALLOW_DIR or name.endswith(".key"):
        raise ValueError(
            f"key name {name!r}: expected letters, digits, '.', '_' or '-' (not {ALLOW_DIR!r})"
        )
    return name


def public_path(directory: Path, name: str) -> Path:
    """``DIR/NAME.key``: the public key file."""
    return directory / f"{name}.key"


def pair_path(directory: Path, name: str) -> Path:
    """``DIR/NAME.key_secret``: the pair (secret) file."""
    return directory / f"{name}.key_secret"


def generation_targets(directory: Path, names: Sequence[str]) -> list[Path]:
    """Every file generating ``names`` in ``directory`` writes (pure)."""
    targets: list[Path] = []
    for name in names:
        targets += [
            public_path(directory, name),
            pair_path(directory, name),
            public_path(directory / ALLOW_DIR, name),
        ]
    return targets


def own_pair_names(role: str, instance: str | None = None) -> list[str]:
    """The pair names a process of ``role`` tries, first found wins (pure)."""
    return [instance, role] if instance and instance != role else [role]


def server_key_paths(directory: Path, name: str, role: str | None = None) -> list[Path]:
    """Where the public key of server ``name`` (of ``role``, the fallback) is looked for,
    in order (pure)."""
    names = own_pair_names(role, name) if role else [name]
    return [
        p for n in names for p in (public_path(directory, n), public_path(directory / ALLOW_DIR, n))
    ]


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)  # O_CREAT's mode is masked by the umask, and ignored if it existed


def _cert(public: bytes, secret: bytes | None, name: str) -> str:
    lines = [
        f"#   mesh CURVE {'secret' if secret else 'public'} key: {name}",
        *(["#   keep this file secret (mode 0600); never copy it off its host"] if secret else []),
        "",
        "metadata",
        f'    name = "{name}"',
        "curve",
        f'    public-key = "{public.decode()}"',
        *([f'    secret-key = "{secret.decode()}"'] if secret else []),
        "",
    ]
    return "\n".join(lines)


def generate_keys(directory: Path, names: Iterable[str], *, force: bool = False) -> list[Path]:
    """Write a new pair for each name, and its public key into the allow-list.

    Refuses (ConfigError, nothing written) if any file exists, unless ``force``.
    Returns the files written.
    """
    names = [check_name(n) for n in dict.fromkeys(names)]
    targets = generation_targets(directory, names)
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise ConfigError(f"keys exist already ({shown}); use --force to replace them")
    (directory / ALLOW_DIR).mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for name in names:
        public, secret = zmq.curve_keypair()
        _write(pair_path(directory, name), _cert(public, secret, name), 0o600)
        _write(public_path(directory, name), _cert(public, None, name), 0o644)
        _write(public_path(directory / ALLOW_DIR, name), _cert(public, None, name), 0o644)
    return targets


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
        z85.decode(public)
        if secret is not None:
            z85.decode(secret)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc}") from None
    if len(public) != 40 or (secret is not None and len(secret) != 40):
        raise ConfigError(f"{path} holds no CURVE key (expected 40 Z85 characters)")
    return public, secret


def load_pair(directory: Path, names: Sequence[str]) -> KeyPair:
    """The first pair of ``names`` found in ``directory``; ConfigError if none is."""
    for name in names:
        path = pair_path(directory, name)
        if path.exists():
            public, secret = _load(path)
            if secret is None:
                raise ConfigError(f"{path} holds no secret key")
            return KeyPair(name=name, public=public, secret=secret, path=path)
    tried = " or ".join(str(pair_path(directory, n)) for n in names)
    raise ConfigError(f"no key pair: {tried} does not exist (see mesh keys generate)")


def load_public(paths: Sequence[Path]) -> bytes:
    """The public key in the first of ``paths`` that exists; ConfigError if none does."""
    for path in paths:
        if path.exists():
            return _load(path)[0]
    raise ConfigError(
        f"no public key: none of {', '.join(str(p) for p in paths)} exists "
        "(copy the server's NAME.key there)"
    )


#: The file of the coordinator's HTTP token, in the keys directory.
HTTP_TOKEN_FILE = "http.token"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,128}$")


def http_token_path(directory: Path) -> Path:
    """Where the coordinator's HTTP token is kept."""
    return directory / HTTP_TOKEN_FILE


def write_http_token(directory: Path, *, force: bool = False) -> Path | None:
    """Write a new random HTTP token (mode 0600) unless one exists and not ``force``;
    returns the file written, or None."""
    path = http_token_path(directory)
    if path.exists() and not force:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    _write(path, secrets.token_urlsafe(32) + "\n", 0o600)
    return path


def load_http_token(directory: Path) -> str:
    """The HTTP token in ``directory``; ConfigError if it is missing or malformed."""
    path = http_token_path(directory)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no HTTP token: {path} does not exist (mesh keys generate {directory} writes one "
            "next to existing keys)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the HTTP token {path}: {exc}") from None
    if not _TOKEN.match(token):
        raise ConfigError(f"{path} holds no HTTP token (expected 32-128 URL-safe characters)")
    return token
