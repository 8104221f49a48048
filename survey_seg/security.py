"""TLS for dask communications: the certificates and the `distributed.Security` of a cluster.

One self-signed certificate authority (CA) signs one certificate that the
scheduler, the workers and the client all present. distributed does not check
host names; every end checks that the other's certificate was signed by the CA,
and with ``require_encryption`` nothing talks in plain TCP.

Create the files with ``survey-seg certs DIR`` (:func:`write_tls_certificates`),
or with openssl; name them in a cluster spec (``tls_ca_file``, ``tls_cert``,
``tls_key``). ``ca-key.pem`` only signs further certificates: keep it off the
cluster.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
from collections.abc import Sequence
from pathlib import Path

from distributed import Security

from survey_seg.errors import InputError

__all__ = ["CERTIFICATE_FILES", "dask_security", "write_tls_certificates"]

CERTIFICATE_FILES = {
    "ca_file": "ca.pem",
    "ca_key": "ca-key.pem",
    "cert": "cert.pem",
    "key": "key.pem",
}
"""File names that :func:`write_tls_certificates` writes, by role."""

_HOST_NAME = re.compile(r"[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def write_tls_certificates(
    directory: str | os.PathLike,
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 825,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Create a CA and one certificate signed by it for the whole dask cluster.

    The certificate (EC P-256, SHA-256) names ``hosts`` as subject alternative
    names and may serve both ends of a connection (extended key usage
    serverAuth and clientAuth), so the scheduler, the workers and the client
    share it. Private keys are written readable by their owner only (0o600).

    Parameters
    ----------
    directory : path-like
        Where to write ``ca.pem``, ``ca-key.pem``, ``cert.pem`` and ``key.pem``
        (created if missing).
    hosts : sequence of str
        DNS names and IP addresses the certificate names.
    days : int
        Validity of both certificates, in days.
    overwrite : bool
        Replace certificate files already in ``directory``.

    Returns
    -------
    dict of str to Path
        The files by role: ``ca_file``, ``ca_key``, ``cert``, ``key``.

    Raises
    ------
    InputError
        A bad host name or validity, files already there (without
        ``overwrite``), or a directory that cannot be written.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = _alternative_names(hosts)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InputError(
            f"certificate validity must be a positive number of days, got {days!r}; use e.g. 825"
        )
    directory = Path(directory)
    paths = {role: directory / name for role, name in CERTIFICATE_FILES.items()}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise InputError(
            f"TLS files already exist: {', '.join(existing)}; keep them, or replace them "
            "with --overwrite (every node then needs the new files)"
        )
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "survey-seg dask CA")])
    ca_public = ca_key.public_key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage("digital_signature", "key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_public), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "survey-seg dask")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage("digital_signature", "key_agreement"),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def private(private_key) -> bytes:
        return private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    contents = {
        "ca_file": (ca.public_bytes(serialization.Encoding.PEM), 0o644),
        "ca_key": (private(ca_key), 0o600),
        "cert": (certificate.public_bytes(serialization.Encoding.PEM), 0o644),
        "key": (private(key), 0o600),
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for role, (data, mode) in contents.items():
            _write(paths[role], data, mode)
    except OSError as error:
        raise InputError(
            f"cannot write the TLS files to {directory} ({error.strerror or error}); "
            "choose a directory you can write"
        ) from None
    return paths


def dask_security(
    ca_file: str | os.PathLike, cert: str | os.PathLike, key: str | os.PathLike | None = None
) -> Security:
    """The :class:`distributed.Security` of a cluster whose ends all share one certificate.

    Parameters
    ----------
    ca_file : path-like
        PEM certificate of the CA that signed ``cert``.
    cert : path-like
        PEM certificate of the scheduler, the workers and the client.
    key : path-like, optional
        PEM private key of ``cert`` (default: ``cert`` holds it).

    Returns
    -------
    distributed.Security
        With ``require_encryption=True``: no end accepts plain TCP.

    Raises
    ------
    InputError
        A file is missing or unreadable, or the files are not a CA, a
        certificate and its key in PEM.
    """
    files = [ca_file, cert] if key is None else [ca_file, cert, key]
    for path in files:
        _check_readable(Path(path))
    ca_file, cert = os.fspath(ca_file), os.fspath(cert)
    key = None if key is None else os.fspath(key)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise InputError(
            f"TLS files {', '.join(map(os.fspath, files))} are not a CA certificate, a "
            f"certificate and its key in PEM ({error.reason or error}); create them again "
            "with `survey-seg certs DIR`"
        ) from None
    return Security(
        tls_ca_file=ca_file,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        require_encryption=True,
    )


KEY_USAGES = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)  # fmt: skip


def _key_usage(*allowed: str):
    """An ``x509.KeyUsage`` that allows exactly ``allowed`` (names of :data:`KEY_USAGES`)."""
    from cryptography import x509

    return x509.KeyUsage(**{usage: usage in allowed for usage in KEY_USAGES})


def _alternative_names(hosts: Sequence[str]) -> list:
    from cryptography import x509

    if isinstance(hosts, str) or not hosts:
        raise InputError(
            f"hosts must be a list of host names or IP addresses, got {hosts!r}; "
            "pass e.g. ['localhost', '127.0.0.1']"
        )
    names = []
    for host in hosts:
        if isinstance(host, str):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
                continue
            except ValueError:
                pass
        if not isinstance(host, str) or not _HOST_NAME.fullmatch(host):
            raise InputError(
                f"host {host!r} is neither a DNS name nor an IP address; "
                "pass names like scheduler.example.org or 10.0.0.5"
            )
        names.append(x509.DNSName(host))
    return names


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode`` (an old file is replaced)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as stream:
        os.fchmod(stream.fileno(), mode)  # whatever the umask
        stream.write(data)


def _check_readable(path: Path) -> None:
    if not path.is_file():
        raise InputError(
            f"TLS file {path} does not exist; create the certificates with "
            "`survey-seg certs DIR` (see README) or fix the path"
        )
    if not os.access(path, os.R_OK):
        raise InputError(
            f"TLS file {path} is not readable by this user; fix its permissions "
            "(chmod 600 for a key, as its owner)"
        )
