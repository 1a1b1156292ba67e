"""Per-cluster TLS: a certificate authority made on the user's machine for each cluster.

Every Dask connection of a remote cluster is TLS with both ends proving themselves: the
nodes hold a certificate signed by the cluster's own CA, and so does the kernel's client.
A peer without one (anyone else who finds the scheduler's port) cannot connect, so cannot
send a pickle. Files are written 0600 in the cluster's folder of the state folder; the
node's key reaches the node over a short-lived channel, never in user data.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import pathlib
import shutil
import tarfile
import time
from dataclasses import dataclass

from jupyter_burst.errors import ClusterError
from jupyter_burst.store import store_key

CA, NODE, CLIENT = "ca", "node", "client"


@dataclass(frozen=True)
class ClusterCerts:
    """The files of one cluster's TLS: the CA's certificate, the nodes' and the client's pairs."""

    folder: pathlib.Path

    def cert(self, who: str) -> pathlib.Path:
        return self.folder / f"{who}.pem"

    def key(self, who: str) -> pathlib.Path:
        return self.folder / f"{who}.key"

    def client_security(self):
        return security(self.cert(CA), self.cert(CLIENT), self.key(CLIENT))

    def node_bundle(self) -> bytes:
        """What a node needs, as a tar: the CA's certificate and the node's pair (no CA key),
        and the user's store key, with which it signs checkpoints (store/store_key.py)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in (self.cert(CA), self.cert(NODE), self.key(NODE)):
                tar.add(path, arcname=path.name)
            tar.add(store_key.ensure(), arcname=store_key.FILE)
        return buffer.getvalue()


def can_make() -> bool:
    """Whether this process can make certificates (cryptography: the notebook's side)."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return False
    return True


def make(folder: pathlib.Path, cluster_id: str, days: int = 30) -> ClusterCerts:
    """A new CA for ``cluster_id``, and a node and a client certificate it signed.

    The folders of clusters whose certificates have expired go first: a cluster whose
    record was never removed (its machine ended while no kernel watched) leaves its keys.
    """
    _remove_expired(folder.parent, days)
    try:
        import cryptography  # noqa: F401 - the notebook's side only (the lab extra)
    except ImportError:
        raise ClusterError(
            "a remote cluster's TLS certificates need cryptography; install it with: "
            "pip install 'jupyter-burst[lab]'"
        ) from None
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=days)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"jupyter-burst CA {cluster_id}")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    certs = ClusterCerts(folder)
    _write(certs.cert(CA), ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(certs.key(CA), _pem_key(ca_key))
    for who in (NODE, CLIENT):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(f"jupyter-burst {who} {cluster_id}"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write(certs.cert(who), cert.public_bytes(serialization.Encoding.PEM))
        _write(certs.key(who), _pem_key(key))
    return certs


def _remove_expired(parent: pathlib.Path, days: int) -> None:
    """Clusters' key folders under ``parent`` older than their certificates' ``days``."""
    oldest = time.time() - (days + 1) * 86400
    with contextlib.suppress(FileNotFoundError):
        for folder in parent.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if folder.is_dir() and folder.stat().st_mtime < oldest:
                    shutil.rmtree(folder, ignore_errors=True)


def unpack_bundle(data: bytes, folder: pathlib.Path) -> pathlib.Path:
    """On a node: the bundle's files into ``folder`` (0600); the folder."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or member.name.startswith("."):
                raise ValueError(f"unexpected entry in the key bundle: {member.name!r}")
            extracted = tar.extractfile(member)
            assert extracted is not None
            _write(folder / member.name, extracted.read())
    return folder


def node_security(folder: pathlib.Path):
    """The Security a node's scheduler, workers and nannies use (from an unpacked bundle)."""
    return security(folder / f"{CA}.pem", folder / f"{NODE}.pem", folder / f"{NODE}.key")


def security(ca: pathlib.Path, cert: pathlib.Path, key: pathlib.Path):
    from distributed.security import Security

    files = {"cert": str(cert), "key": str(key)}
    return Security(
        tls_ca_file=str(ca),
        tls_scheduler_cert=files["cert"],
        tls_scheduler_key=files["key"],
        tls_worker_cert=files["cert"],
        tls_worker_key=files["key"],
        tls_client_cert=files["cert"],
        tls_client_key=files["key"],
        require_encryption=True,
    )


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: pathlib.Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def main(argv: list[str]) -> None:
    """``python -m jupyter_burst.clusters.tls unpack BUNDLE FOLDER``, as a node's boot script runs it."""
    if len(argv) != 3 or argv[0] != "unpack":
        raise SystemExit("usage: python -m jupyter_burst.clusters.tls unpack BUNDLE FOLDER")
    unpack_bundle(pathlib.Path(argv[1]).read_bytes(), pathlib.Path(argv[2]))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
