"""CurveZMQ keys and authentication for the robot <-> learner links.

Every socket between robots and the learner uses CurveZMQ: the learner is the CURVE server (its
episode port and its weights port), each robot is a CURVE client that knows the learner's public key.
The learner runs a ZAP authenticator that admits only the robot public keys found in its allow-list
directory; a robot whose key is not there completes no handshake, so it can neither deliver episodes
nor receive weights (libzmq drops the connection before any message is read).

Key files are the ZeroMQ certificate files that ``robot-rl keygen`` writes (the format of pyzmq's
``zmq.auth.create_certificates``)::

    keys/learner.key          public key, give it to every robot
    keys/learner.key_secret   public + secret key, stays on the learner (mode 0600)
    keys/robot1.key           public key, copy it into the learner's allow-list directory
    keys/robot1.key_secret    stays on robot1

The allow-list is a directory of ``*.key`` files; a robot is named by its file's stem in the learner's
logs. The directory is re-read when a key is not found, so adding a robot needs no learner restart.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("robot_rl.transport.security")


class KeyFileError(ValueError):
    """A key file that is missing or not a ZeroMQ certificate; the message names the file."""


def generate_keypair(directory: str | Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.key`` and ``<name>.key_secret`` into ``directory``; returns (public, secret)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"key name {name!r}: expected a plain file name such as 'learner' or 'robot1'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise FileExistsError(f"{public} or {secret} already exists; pass --force to replace the key pair")
    for p in (public, secret):
        p.unlink(missing_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def load_public_key(path: str | Path) -> bytes:
    public, _ = _load(path)
    return public


def load_keypair(path: str | Path) -> tuple[bytes, bytes]:
    public, secret = _load(path)
    if secret is None:
        raise KeyFileError(f"{path}: holds only a public key; the secret key file is <name>.key_secret")
    return public, secret


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"key file {path} does not exist (create keys with `robot-rl keygen`)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise KeyFileError(f"{path}: not a ZeroMQ certificate file: {exc}") from exc
    if not public or len(public) != 40:
        raise KeyFileError(f"{path}: has no valid public key")
    return public, secret


@dataclass
class ServerKeys:
    """The learner side: its key pair and the directory of allowed robot public keys."""

    secret_file: str
    allowed_dir: str

    def __post_init__(self) -> None:
        self.public, self.secret = load_keypair(self.secret_file)
        if not Path(self.allowed_dir).is_dir():
            raise KeyFileError(f"allow-list directory {self.allowed_dir} does not exist (put robots' *.key files there)")


@dataclass
class ClientKeys:
    """A robot's side: its own key pair and the learner's public key."""

    secret_file: str
    server_public_file: str

    def __post_init__(self) -> None:
        self.public, self.secret = load_keypair(self.secret_file)
        self.server_public = load_public_key(self.server_public_file)


class AllowList:
    """Robot public keys (z85) -> robot names, from a directory of ``*.key`` files."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.lock = threading.Lock()
        self.names: dict[bytes, str] = {}
        self.denied = 0
        self.reload()

    def reload(self) -> None:
        names = {}
        for path in sorted(self.directory.glob("*.key")):
            try:
                names[load_public_key(path)] = path.stem
            except KeyFileError as exc:
                log.error("allow-list: skipping %s", exc)
        with self.lock:
            self.names = names

    def name(self, z85_key: bytes) -> str | None:
        with self.lock:
            found = self.names.get(z85_key)
        if found is None:
            self.reload()  # a key added since start
            with self.lock:
                found = self.names.get(z85_key)
        return found

    # the ZAP credentials-provider protocol of pyzmq
    def callback(self, domain: str, z85_key: bytes) -> bool:
        if self.name(z85_key) is not None:
            return True
        self.denied += 1
        log.warning("refused a connection from an unknown robot key %s (not in %s)", z85_key.decode(), self.directory)
        return False


class _NamingAuthenticator(ThreadAuthenticator):
    """Names authenticated peers by their allow-list file (the ZMTP User-Id of their messages)."""

    allow_list: AllowList

    def curve_user_id(self, client_public_key: bytes) -> str:
        from zmq.utils import z85

        return self.allow_list.name(z85.encode(client_public_key)) or "unknown"


def start_authenticator(context: zmq.Context, keys: ServerKeys) -> tuple[ThreadAuthenticator, AllowList]:
    """A ZAP handler on ``context`` admitting only the allow-listed robot keys (stop it on close)."""
    allow = AllowList(keys.allowed_dir)
    auth = _NamingAuthenticator(context)
    auth.allow_list = allow
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=allow)
    return auth, allow


def make_server_socket(context: zmq.Context, kind: int, keys: ServerKeys) -> zmq.Socket:
    sock = context.socket(kind)
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True
    return sock


def make_client_socket(context: zmq.Context, kind: int, keys: ClientKeys) -> zmq.Socket:
    sock = context.socket(kind)
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server_public
    return sock
