"""Secrets at rest: connection passwords are encrypted with a Fernet key that lives outside the
database (a file, an environment variable or a systemd credential)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

from syncd import private_files

log = logging.getLogger(__name__)

KEY_ENV = "SYNCD_SECRET_KEY"
CREDENTIAL_NAME = "syncd-secret-key"


class SecretError(Exception):
    pass


def key_sources(key_file: Path) -> str:
    """Where the key is looked for, in order, for messages that must say so."""
    return f"${KEY_ENV}, $CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME}, {key_file}"


def load_key(key_file: Path) -> bytes | None:
    """The key from $SYNCD_SECRET_KEY, a systemd credential, or ``key_file``; None if absent."""
    if env := os.environ.get(KEY_ENV):
        return env.strip().encode()
    if creds := os.environ.get("CREDENTIALS_DIRECTORY"):
        cred = Path(creds) / CREDENTIAL_NAME
        if cred.exists():
            return cred.read_bytes().strip()
    try:
        if key_file.exists():
            private_files.tighten(key_file)
        return key_file.read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretError(f"cannot read the secret key {key_file}: {exc.strerror}") from None


def load_or_create_key(key_file: Path) -> bytes:
    """:func:`load_key`, generating ``key_file`` when there is no key anywhere (the daemon and
    the demo only: a command run without the service's credentials must not invent a key that
    differs from the service's)."""
    if (key := load_key(key_file)) is not None:
        return key
    if not key_file.parent.exists():
        private_files.private_dir(key_file.parent)
    from cryptography.fernet import Fernet

    key = Fernet.generate_key()
    private_files.write_private(key_file, key + b"\n")
    log.warning(
        "generated a new secret key at %s: back it up, without it stored calendar passwords "
        "cannot be decrypted",
        key_file,
    )
    return key


def require_key(key_file: Path) -> bytes:
    """The existing key, or a one-line SecretError saying where it was looked for."""
    if (key := load_key(key_file)) is not None:
        return key
    raise SecretError(
        f"no secret key (looked at {key_sources(key_file)}): run this command with the "
        "service's credentials (docs/operations.md), or start `syncd run` once to generate one"
    )


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            from cryptography.fernet import Fernet  # loaded by the commands that use secrets

            self._fernet = Fernet(key)
        except ValueError as exc:
            raise SecretError("the secret key is not a valid Fernet key") from exc
        self._key = key

    def derive(self, purpose: bytes) -> bytes:
        """A key for ``purpose`` (e.g. signing links), derived from, never equal to, the secret
        key: one secret to back up, and no derived key reveals it or another derived key."""
        return hmac.new(self._key, purpose, hashlib.sha256).digest()

    def seal(self, plain: str) -> bytes:
        return self._fernet.encrypt(plain.encode())

    def open(self, sealed: bytes) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken as exc:
            raise SecretError(
                "cannot decrypt a stored secret: the secret key changed since it was stored"
            ) from exc


def read_secret_file(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from exc
    if not value:
        raise SecretError(f"secret file {path} is empty")
    return value
