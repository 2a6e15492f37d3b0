"""A node's (or client's) own credentials: its private key and the certificate that vouches for it.

Why a separate value: the private key never leaves this object except as a file path handed to
``ssl.SSLContext.load_cert_chain`` (Python's ssl cannot load a key from memory) and as signatures
made by :meth:`NodeCredentials.sign`.  Loading checks what operators get wrong: a key file other
users can read, or a key and a certificate that do not belong together.

The file helpers here write keys the safe way: created with mode 0600, never over an existing
file, published with a link so a crash leaves no half-written key under the final name.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from p2pstore.errors import IdentityError, IntegrityError, KeyEncrypted, PeerRefused
from p2pstore.identity.certificates import (
    PeerIdentity,
    identity_from_certificate,
    load_certificate,
)
from p2pstore.identity.nodeid import NodeId, node_id_from_public_key, public_key_bytes

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class NodeCredentials:
    """What a node or client presents to peers: its key, its certificate and who that makes it."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate
    identity: PeerIdentity
    key_path: Path | None = None
    certificate_path: Path | None = None

    def __post_init__(self) -> None:
        if public_key_bytes(self.private_key.public_key()) != _certificate_key_bytes(
            self.certificate
        ):
            raise IdentityError("the private key does not match the certificate's public key")
        if self.identity.node_id != node_id_from_public_key(self.private_key.public_key()):
            raise IdentityError("the identity's node id is not the hash of the private key")

    @classmethod
    def from_objects(
        cls,
        private_key: Ed25519PrivateKey,
        certificate: x509.Certificate,
        *,
        key_path: Path | None = None,
        certificate_path: Path | None = None,
    ) -> NodeCredentials:
        """Pair a key with its certificate.  Raises :class:`IdentityError` if the certificate
        is not a p2pstore certificate or does not certify this key."""
        try:
            identity = identity_from_certificate(certificate)
        except PeerRefused as error:
            raise IdentityError(str(error)) from error
        return cls(private_key, certificate, identity, key_path, certificate_path)

    @classmethod
    def load(cls, key_path: Path, certificate_path: Path) -> NodeCredentials:
        """Load a key file (PEM PKCS8, mode 0600) and its certificate file.

        Raises :class:`IdentityError` naming the file if it is unreadable or invalid, if the key
        file is accessible to group or others, or if the key does not match the certificate.
        """
        key = load_private_key(key_path)
        certificate = load_certificate(certificate_path)
        try:
            return cls.from_objects(
                key, certificate, key_path=key_path, certificate_path=certificate_path
            )
        except IdentityError as error:
            raise IdentityError(f"{key_path} and {certificate_path}: {error}") from error

    @property
    def node_id(self) -> NodeId:
        """This holder's node id (the hash of its public key)."""
        return self.identity.node_id

    def public_key_bytes(self) -> bytes:
        """The raw 32-byte public key, for records that carry their signer's key."""
        return public_key_bytes(self.private_key.public_key())

    def certificate_der(self) -> bytes:
        """The certificate in DER, as TLS and the in-memory transport carry it."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def certificate_pem(self) -> bytes:
        """The certificate in PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``data`` (deterministic for a given key and data)."""
        return self.private_key.sign(data)


def verify_signature(
    public_key: Ed25519PublicKey | bytes,
    data: bytes,
    signature: bytes,
    *,
    expected_node_id: bytes | None = None,
) -> NodeId:
    """Check an Ed25519 signature; return the signer's node id.

    ``public_key`` may be the raw 32 bytes a record carries.  If ``expected_node_id`` is given the
    key must hash to it.  Raises :class:`IntegrityError` if the key is malformed, does not match
    ``expected_node_id``, or the signature is wrong.
    """
    if isinstance(public_key, bytes):
        raw = public_key
        try:
            public_key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as error:
            raise IntegrityError(
                f"signer key is not a raw 32-byte Ed25519 public key ({len(raw)} bytes)"
            ) from error
    signer = node_id_from_public_key(public_key)
    if expected_node_id is not None and signer != expected_node_id:
        raise IntegrityError(
            f"record signed by node {signer.hex()} claims to come from node "
            f"{expected_node_id.hex()}: drop it"
        )
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        raise IntegrityError(
            f"bad signature by node {signer.hex()} over {len(data)} bytes: the data or the "
            f"signature was altered; drop it"
        ) from None
    return signer


def _certificate_key_bytes(certificate: x509.Certificate) -> bytes:
    key = certificate.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError(f"certificate key is {type(key).__name__}, expected Ed25519")
    return public_key_bytes(key)


def check_private_file_mode(path: Path) -> None:
    """Refuse a secret file that group or others may access.  Raises :class:`IdentityError`."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as error:
        raise IdentityError(f"cannot read key {path}: {error.strerror or error}") from error
    if mode & 0o077:
        raise IdentityError(
            f"key file {path} has mode {mode:04o}, so other users can access it: "
            f"run 'chmod 600 {path}'"
        )


def private_key_pem(key: Ed25519PrivateKey, passphrase: bytes | None = None) -> bytes:
    """``key`` as PEM PKCS8, the format key files use; encrypted with ``passphrase`` if given
    (the best scheme ``cryptography`` has: scrypt and AES-256 today)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Read an Ed25519 key file (PEM PKCS8) after checking its mode is 0600.

    Raises :class:`KeyEncrypted` if the key is encrypted and no ``passphrase`` was given, and
    :class:`IdentityError` naming the file if it is unreadable, too open, the passphrase is
    wrong, or it is not an Ed25519 key.
    """
    check_private_file_mode(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise IdentityError(f"cannot read key {path}: {error.strerror or error}") from error
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as error:
        if passphrase is None:
            raise KeyEncrypted(f"key {path} is encrypted: its passphrase is needed") from error
        raise IdentityError(f"key {path} is not encrypted; give no passphrase") from error
    except ValueError as error:
        if passphrase is not None and b"ENCRYPTED" in data:
            raise IdentityError(f"wrong passphrase for key {path}") from error
        raise IdentityError(f"{path} is not a PEM private key: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"key {path} is {type(key).__name__}, expected an Ed25519 key")
    return key


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file ``path`` with exactly ``mode``; never overwrite.

    The bytes go to a temporary file in the same directory, are fsynced, and are published with
    a hard link, so ``path`` either does not exist or is complete.  Raises :class:`IdentityError`
    if ``path`` already exists or cannot be written.
    """
    tmp = _write_temporary(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise IdentityError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as error:
        raise IdentityError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        tmp.unlink(missing_ok=True)


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace ``path`` with ``data`` (written with ``mode`` and fsynced).

    Raises :class:`IdentityError` if it cannot be written.
    """
    tmp = _write_temporary(path, data, mode)
    try:
        tmp.replace(path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise IdentityError(f"cannot write {path}: {error.strerror or error}") from error


def _write_temporary(path: Path, data: bytes, mode: int) -> Path:
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise IdentityError(f"cannot write {path}: {error.strerror or error}") from error
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise IdentityError(f"cannot write {path}: {error.strerror or error}") from error
    return tmp
