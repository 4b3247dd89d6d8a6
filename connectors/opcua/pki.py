"""The client's certificate store: its own certificate, and the trust list for server certificates.

Layout under ``DATA_DIR/pki``::

    own/cert.der, own/key.pem   generated once (asyncua's generator, in the adapter), kept across restarts
    trusted/*.der               server certificates the operator approved
    rejected/*.der              server certificates seen but not trusted (``edge-gateway pki trust NAME``)

A certificate is identified by its SHA-1 thumbprint, the form OPC-UA tools show; file names carry the
subject CN and the first 16 hex digits of it, so ``pki list`` can be read and ``pki trust`` takes a prefix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertInfo:
    path: Path
    thumbprint: str
    subject: str
    uris: tuple[str, ...]
    not_after: str


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest()  # the OPC-UA certificate thumbprint is SHA-1 by definition


def describe(der: bytes, path: Path | None = None) -> CertInfo:
    cert = x509.load_der_x509_certificate(der)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        uris = ()
    return CertInfo(
        path=path or Path(),
        thumbprint=thumbprint(der),
        subject=str(cn[0].value) if cn else cert.subject.rfc4514_string(),
        uris=uris,
        not_after=cert.not_valid_after_utc.isoformat(),
    )


def _file_name(der: bytes) -> str:
    info = describe(der)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", info.subject)[:40] or "cert"
    return f"{safe}-{info.thumbprint[:16]}.der"


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.own = root / "own"
        self.trusted = root / "trusted"
        self.rejected = root / "rejected"

    @property
    def cert_path(self) -> Path:
        return self.own / "cert.der"

    @property
    def key_path(self) -> Path:
        return self.own / "key.pem"

    def ensure_dirs(self) -> None:
        for d in (self.own, self.trusted, self.rejected):
            d.mkdir(parents=True, exist_ok=True)

    def is_trusted(self, der: bytes) -> bool:
        return (self.trusted / _file_name(der)).exists() or any(
            p.read_bytes() == der for p in self.trusted.glob("*.der")
        )

    def reject(self, der: bytes) -> Path:
        """Keep an untrusted certificate where ``pki trust`` finds it."""
        self.ensure_dirs()
        path = self.rejected / _file_name(der)
        path.write_bytes(der)
        return path

    def add_trusted(self, der: bytes) -> Path:
        self.ensure_dirs()
        path = self.trusted / _file_name(der)
        path.write_bytes(der)
        return path

    def list(self, which: str) -> list[CertInfo]:
        folder = {"trusted": self.trusted, "rejected": self.rejected}[which]
        return [describe(p.read_bytes(), p) for p in sorted(folder.glob("*.der"))]

    def list_own(self) -> CertInfo:
        return describe(self.cert_path.read_bytes(), self.cert_path)

    def trust(self, ref: str) -> Path:
        """Move a rejected certificate (file name, or thumbprint prefix of 6+ hex digits) to the trust list."""
        matches = [
            c for c in self.list("rejected")
            if c.path.name == ref or c.path.stem == ref or (len(ref) >= 6 and c.thumbprint.startswith(ref.lower()))
        ]
        if not matches:
            raise LookupError(f"no rejected certificate matches {ref!r} (see `edge-gateway pki list`)")
        if len(matches) > 1:
            raise LookupError(f"{ref!r} matches {len(matches)} rejected certificates; give more of the thumbprint")
        src = matches[0].path
        dst = self.trusted / src.name
        self.ensure_dirs()
        src.replace(dst)
        return dst
