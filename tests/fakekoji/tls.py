"""A throw-away CA, hub certificate and client certificate made with openssl(1).

``ClientSession.ssl_login`` and ``gssapi_login`` insist on https, so the tests
of those paths run the fake hub with TLS; the client certificate's CN is the
Koji user name, as a hub configured with ``DNUsernameComponent = CN`` reads it.
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    #: client certificate and key in one PEM file, as koji's ``cert`` option wants
    client_pem: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        ctx.load_cert_chain(str(self.server_cert), str(self.server_key))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(directory: Path, client_cn: str = "rpmgate") -> Pki:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca = d / "ca.key", d / "ca.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=fake koji CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    ext = d / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    pairs = {}
    for name, subj, extfile in (
        ("server", "/CN=127.0.0.1", ext),
        ("client", f"/CN={client_cn}", None),
    ):
        key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subj,
            "-keyout",
            str(key),
            "-out",
            str(csr),
        )
        args = [
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            str(crt),
        ]
        if extfile:
            args += ["-extfile", str(extfile)]
        _openssl(*args)
        pairs[name] = (crt, key)
    client_pem = d / "client.pem"
    client_pem.write_text(pairs["client"][0].read_text() + pairs["client"][1].read_text())
    return Pki(
        ca=ca, server_cert=pairs["server"][0], server_key=pairs["server"][1], client_pem=client_pem
    )
