"""The mesh CA: the one key that admits datacenters into a mesh, and can throw them out.

Why a CA rather than a list of trusted node keys: a certificate carries what placement depends
on (datacenter and region) under a signature the peer cannot forge, and revocation is one signed
file that every node can fetch.  The CA lives in a directory, normally offline::

    ca.key       Ed25519 private key, PEM PKCS8, mode 0600
    ca.crt       self-signed CA certificate (distributed to every node)
    crl.pem      the signed revocation list (distributed to every node)
    issued.json  index of issued certificates, so they can be listed and revoked by serial

Keys and serials come from the OS CSPRNG unless the caller passes them in: the in-memory network
and the simulator pass seeded keys and serials to stay reproducible; Ed25519 signatures are
deterministic, so the same inputs give the same certificate bytes.  Writes never overwrite a key;
the index and the CRL are replaced atomically under an advisory lock, re-read inside it, so two
``p2pstore ca`` commands racing cannot lose each other's work.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from p2pstore.errors import IdentityError
from p2pstore.identity.ca_index import (
    IssuedCertificate,
    Revocation,
    check_file_name,
    ed25519_key,
    parse_reason,
    read_index,
    sign_crl,
    validity,
    write_index,
)
from p2pstore.identity.certificates import (
    CLOCK_SKEW,
    Role,
    TrustAnchor,
    as_utc,
    check_ca_certificate,
    format_serial,
    load_certificate,
    load_crl,
    validate_datacenter,
    validate_region,
    validate_tenant,
)
from p2pstore.identity.credentials import (
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    NodeCredentials,
    load_private_key,
    private_key_pem,
    replace_file,
    write_new_file,
)
from p2pstore.identity.nodeid import (
    node_id_from_public_key,
    public_key_bytes,
)
from p2pstore.identity.profile import build_ca_certificate, build_node_certificate

CA_KEY_FILE = "ca.key"
CA_CERTIFICATE_FILE = "ca.crt"
CRL_FILE = "crl.pem"
INDEX_FILE = "issued.json"
LOCK_FILE = ".lock"
SERIAL_BITS = 64
STATEMENT_PREFIX = b"p2pstore-"
"""What every byte string the CA signs besides certificates and CRLs starts with."""


class MeshCA:
    """A mesh CA, on disk (:meth:`create`, :meth:`load`) or in memory (:meth:`create_in_memory`).

    Not thread-safe; concurrent processes on one directory are serialised by a file lock.
    """

    __slots__ = (
        "_crl",
        "_issued",
        "_issued_in_memory",
        "_key",
        "_revocations",
        "certificate",
        "directory",
        "mesh_name",
    )

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        certificate: x509.Certificate,
        directory: Path | None,
    ) -> None:
        """Wrap an existing key and CA certificate; prefer the classmethods.

        Raises :class:`IdentityError` if the certificate is not a CA certificate for this key.
        """
        check_ca_certificate(certificate)
        if public_key_bytes(private_key.public_key()) != public_key_bytes(ed25519_key(certificate)):
            raise IdentityError("the CA key does not match the CA certificate")
        organisations = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if len(organisations) != 1:
            raise IdentityError("the CA certificate's subject must hold one O (mesh name)")
        self._key = private_key
        self.certificate = certificate
        self.directory = directory
        self.mesh_name = str(organisations[0].value)
        self._issued: dict[int, IssuedCertificate] = {}
        self._issued_in_memory: dict[int, IssuedCertificate] = {}
        self._revocations: dict[int, Revocation] = {}
        self._crl: x509.CertificateRevocationList | None = None

    # -- creating and loading ------------------------------------------------------------

    @classmethod
    def create_in_memory(
        cls,
        *,
        mesh_name: str,
        now: datetime,
        valid_days: int = 3650,
        key: Ed25519PrivateKey | None = None,
    ) -> MeshCA:
        """A CA that writes no files (tests, the in-memory network, the simulator).

        Raises :class:`IdentityError` if ``mesh_name`` or ``valid_days`` is invalid.
        """
        key = Ed25519PrivateKey.generate() if key is None else key
        now = as_utc(now)
        certificate = build_ca_certificate(
            key,
            mesh_name=mesh_name,
            not_before=now - CLOCK_SKEW,
            not_after=now + validity(valid_days),
            serial=secrets.randbits(SERIAL_BITS) | 1,
        )
        ca = cls(key, certificate, None)
        ca._crl = ca._sign_crl(now, number=1)
        return ca

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        mesh_name: str,
        now: datetime,
        valid_days: int = 3650,
        passphrase: bytes | None = None,
    ) -> MeshCA:
        """Create a new CA in ``directory`` (made with mode 0700 if missing), its key encrypted
        with ``passphrase`` if given.

        Raises :class:`IdentityError` if a CA already exists there (nothing is overwritten),
        if ``mesh_name`` or ``valid_days`` is invalid, or if the files cannot be written.
        """
        paths = [directory / name for name in (CA_KEY_FILE, CA_CERTIFICATE_FILE, CRL_FILE)]
        for path in paths:
            if path.exists():
                raise IdentityError(f"{path} already exists; refusing to overwrite a mesh CA")
        ca = cls.create_in_memory(mesh_name=mesh_name, now=now, valid_days=valid_days)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise IdentityError(f"cannot create {directory}: {error.strerror or error}") from error
        ca.directory = directory
        with ca._locked():
            write_new_file(paths[0], private_key_pem(ca._key, passphrase), PRIVATE_FILE_MODE)
            write_new_file(paths[1], ca.certificate_pem(), PUBLIC_FILE_MODE)
            write_new_file(paths[2], ca.revocation_list_pem(), PUBLIC_FILE_MODE)
            write_index(directory / INDEX_FILE, {})
        return ca

    @classmethod
    def load(cls, directory: Path, passphrase: bytes | None = None) -> MeshCA:
        """Load the CA in ``directory`` with its index and revocation list.

        Raises :class:`KeyEncrypted` if its key is encrypted and no ``passphrase`` was given,
        :class:`IdentityError` naming the file that is missing, too open, or invalid.
        """
        key_path = directory / CA_KEY_FILE
        if not key_path.exists():
            raise IdentityError(
                f"no mesh CA in {directory} ({key_path} is missing): "
                f"create one with 'p2pstore ca init'"
            )
        key = load_private_key(key_path, passphrase)
        certificate = load_certificate(directory / CA_CERTIFICATE_FILE)
        try:
            ca = cls(key, certificate, directory)
        except IdentityError as error:
            raise IdentityError(f"{directory}: {error}") from error
        ca._reload()
        return ca

    def _reload(self) -> None:
        """Re-read the index and the CRL from the directory (no-op in memory)."""
        if self.directory is None:
            return
        self._issued = read_index(self.directory / INDEX_FILE)
        crl_path = self.directory / CRL_FILE
        if not crl_path.exists():
            return
        crl = load_crl(crl_path)
        if crl.issuer != self.certificate.subject or not crl.is_signature_valid(
            ed25519_key(self.certificate)
        ):
            raise IdentityError(f"{crl_path} is not signed by this CA; restore it from a backup")
        self._crl = crl
        self._revocations = {}
        for revoked in crl:
            try:
                reason: x509.ReasonFlags | None = revoked.extensions.get_extension_for_class(
                    x509.CRLReason
                ).value.reason
            except x509.ExtensionNotFound:
                reason = None
            self._revocations[revoked.serial_number] = Revocation(
                revoked.serial_number, revoked.revocation_date_utc, reason
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the directory's advisory lock and see its latest state (no-op in memory)."""
        if self.directory is None:
            yield
            return
        lock_path = self.directory / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        except OSError as error:
            raise IdentityError(f"cannot lock {lock_path}: {error.strerror or error}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._reload()
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- issuing -------------------------------------------------------------------------

    def issue_in_memory(
        self,
        *,
        datacenter: str,
        region: str,
        role: Role = Role.NODE,
        now: datetime,
        valid_days: int = 365,
        key: Ed25519PrivateKey | None = None,
        serial: int | None = None,
        tenant: str | None = None,
    ) -> NodeCredentials:
        """Issue a certificate for ``key`` (a fresh key if None) without writing files; a
        client's may name the ``tenant`` it acts for.

        The serial is remembered by this object only (revocable through it, not listed in the
        index file).  Raises :class:`IdentityError` if an argument is invalid or the
        certificate would outlive the CA.
        """
        key = Ed25519PrivateKey.generate() if key is None else key
        certificate = self._certify(
            None, key.public_key(), datacenter=datacenter, region=region, role=role,
            now=as_utc(now), valid_days=valid_days, serial=serial, tenant=tenant,
        )  # fmt: skip
        return NodeCredentials.from_objects(key, certificate)

    def issue(
        self,
        out_dir: Path,
        name: str,
        *,
        datacenter: str,
        region: str,
        role: Role = Role.NODE,
        now: datetime,
        valid_days: int = 365,
        tenant: str | None = None,
    ) -> NodeCredentials:
        """Issue a fresh key and certificate as ``out_dir/<name>.key`` (0600) and ``.crt``; a
        client's may name the ``tenant`` it acts for.

        The serial is recorded in the CA's index before the files are written.  Raises
        :class:`IdentityError` if either file exists (nothing is overwritten), an argument is
        invalid, or the files cannot be written.
        """
        check_file_name(name)
        key_path, certificate_path = out_dir / f"{name}.key", out_dir / f"{name}.crt"
        for path in (key_path, certificate_path):
            if path.exists():
                raise IdentityError(f"{path} already exists; refusing to overwrite it")
        try:
            out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise IdentityError(f"cannot create {out_dir}: {error.strerror or error}") from error
        key = Ed25519PrivateKey.generate()
        certificate = self._certify(
            name, key.public_key(), datacenter=datacenter, region=region, role=role,
            now=as_utc(now), valid_days=valid_days, tenant=tenant,
        )  # fmt: skip
        credentials = NodeCredentials.from_objects(key, certificate)
        write_new_file(key_path, private_key_pem(credentials.private_key), PRIVATE_FILE_MODE)
        try:
            write_new_file(certificate_path, credentials.certificate_pem(), PUBLIC_FILE_MODE)
        except IdentityError:
            key_path.unlink(missing_ok=True)
            raise
        return replace(credentials, key_path=key_path, certificate_path=certificate_path)

    def certify(
        self,
        public_key: Ed25519PublicKey,
        name: str | None,
        *,
        datacenter: str,
        region: str,
        role: Role = Role.NODE,
        now: datetime,
        valid_days: int = 365,
        tenant: str | None = None,
    ) -> x509.Certificate:
        """A certificate for a key the CA never sees the private half of (a node's request, a
        renewal), recorded in the index.  Raises :class:`IdentityError` if an argument is
        invalid or it would outlive the CA."""
        return self._certify(
            None if name is None else check_file_name(name),
            public_key,
            datacenter=datacenter,
            region=region,
            role=role,
            now=as_utc(now),
            valid_days=valid_days,
            persist=True,
            tenant=tenant,
        )

    def _certify(
        self,
        name: str | None,
        public_key: Ed25519PublicKey,
        *,
        datacenter: str,
        region: str,
        role: Role,
        now: datetime,
        valid_days: int,
        serial: int | None = None,
        persist: bool = False,
        tenant: str | None = None,
    ) -> x509.Certificate:
        validate_datacenter(datacenter)
        validate_region(region)
        if tenant is not None:
            validate_tenant(tenant)
        not_after = now + validity(valid_days)
        ca_expiry = self.certificate.not_valid_after_utc
        if not_after > ca_expiry:
            raise IdentityError(
                f"a certificate valid {valid_days} days would outlive the mesh CA, which expires "
                f"at {ca_expiry.isoformat()}: issue it for fewer days or renew the CA"
            )
        persist = (persist or name is not None) and self.directory is not None
        with self._locked() if persist else nullcontext():
            if serial is None:
                serial = self._fresh_serial()
            elif serial <= 0 or serial in self._issued or serial in self._issued_in_memory:
                raise IdentityError(f"serial {format_serial(serial)} is not positive or taken")
            certificate = build_node_certificate(
                self._key,
                self.certificate,
                public_key,
                datacenter=datacenter,
                region=region,
                role=role,
                not_before=now - CLOCK_SKEW,
                not_after=not_after,
                serial=serial,
                tenant=tenant,
            )
            node_id = node_id_from_public_key(public_key)
            entry = IssuedCertificate(
                serial, name, node_id, datacenter, region, role, not_after, tenant
            )
            if persist and self.directory is not None:
                self._issued[serial] = entry
                write_index(self.directory / INDEX_FILE, self._issued)
            else:
                self._issued_in_memory[serial] = entry
        return certificate

    def _fresh_serial(self) -> int:
        while True:
            serial = secrets.randbits(SERIAL_BITS)
            if serial and serial not in self._issued and serial not in self._issued_in_memory:
                return serial

    # -- revoking ------------------------------------------------------------------------

    def revoke(self, serial: int, *, now: datetime, reason: str | None = None) -> Path:
        """Revoke ``serial``, re-sign ``crl.pem`` (next update in 30 days) and return its path.

        Idempotent: revoking an already revoked serial keeps its first date and reason and only
        refreshes the CRL.  Raises :class:`IdentityError` if the serial was never issued by this
        CA, the reason is unknown, this CA has no directory, or the file cannot be written.
        """
        return self._write_crl(lambda: self.revoke_in_memory(serial, now=now, reason=reason))

    def refresh_revocation_list(self, *, now: datetime) -> Path:
        """Re-sign ``crl.pem`` with the same revocations, the next number and a next update 30
        days after ``now`` (``ca publish`` does, so the list in force never goes stale)."""
        return self._write_crl(lambda: self._sign_crl(as_utc(now), number=self._next_crl_number()))

    def _write_crl(self, sign: Callable[[], x509.CertificateRevocationList]) -> Path:
        if self.directory is None:
            raise IdentityError("this mesh CA lives in memory; use revoke_in_memory()")
        with self._locked():
            self._crl = sign()
            replace_file(self.directory / CRL_FILE, self.revocation_list_pem(), PUBLIC_FILE_MODE)
        return self.directory / CRL_FILE

    def revoke_in_memory(
        self, serial: int, *, now: datetime, reason: str | None = None
    ) -> x509.CertificateRevocationList:
        """Like :meth:`revoke` without writing ``crl.pem``; returns the new signed CRL."""
        now = as_utc(now)
        flag = parse_reason(reason)
        known = {*self._issued, *self._issued_in_memory, *self._revocations}
        if serial not in known:
            raise IdentityError(
                f"serial {format_serial(serial)} was not issued by this CA; list issued "
                f"certificates with 'p2pstore ca list'"
            )
        self._revocations.setdefault(serial, Revocation(serial, now, flag))
        self._crl = self._sign_crl(now, number=self._next_crl_number())
        return self._crl

    def _next_crl_number(self) -> int:
        if self._crl is None:
            return 1
        try:
            return self._crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
        except x509.ExtensionNotFound:
            return 1

    def _sign_crl(self, now: datetime, *, number: int) -> x509.CertificateRevocationList:
        revocations = [self._revocations[serial] for serial in sorted(self._revocations)]
        return sign_crl(self._key, self.certificate, revocations, now, number)

    # -- reading -------------------------------------------------------------------------

    def revocation_list(self) -> x509.CertificateRevocationList:
        """The current signed CRL."""
        if self._crl is None:  # a CA directory made by other tools, with no crl.pem yet
            self._crl = self._sign_crl(self.certificate.not_valid_before_utc, number=1)
        return self._crl

    def revocation_list_pem(self) -> bytes:
        """The current CRL as PEM, the format of ``crl.pem``."""
        return self.revocation_list().public_bytes(serialization.Encoding.PEM)

    def certificate_pem(self) -> bytes:
        """The CA certificate as PEM, the format of ``ca.crt``."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign_statement(self, data: bytes) -> bytes:
        """Sign ``data`` with the CA key: only the mesh's own domain-separated statements (a
        DHT record the CA publishes, such as its revocation list or the mesh policy), never
        anything that could pass for a certificate.  Raises :class:`IdentityError` otherwise."""
        if not data.startswith(STATEMENT_PREFIX):
            raise IdentityError("the CA signs only p2pstore statements (a domain-separated prefix)")
        return self._key.sign(data)

    def trust_anchor(self) -> TrustAnchor:
        """What nodes of this mesh trust: this CA certificate and its current CRL."""
        return TrustAnchor.from_objects(self.certificate, self.revocation_list())

    def issued_certificates(self) -> list[IssuedCertificate]:
        """Certificates issued by this CA (index file plus this object's in-memory ones),
        ordered by serial."""
        merged = {**self._issued, **self._issued_in_memory}
        return [merged[serial] for serial in sorted(merged)]

    def revocations(self) -> list[Revocation]:
        """Revoked certificates, ordered by serial."""
        return [self._revocations[serial] for serial in sorted(self._revocations)]
