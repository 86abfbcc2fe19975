"""TLS for tests: a CA made for the test run (trustme), a certificate for 127.0.0.1 signed by it,
and a simulator serving https:// and wss:// with it.

Every client is made to trust the CA the way an operator would: `SSL_CERT_FILE` (Python's
ssl default context: the hub clients) and `REQUESTS_CA_BUNDLE` (requests: the REST client,
the harness), in the environment the test and its child processes inherit."""
from __future__ import annotations

from pathlib import Path

import trustme

from tests.harness.sim import SimProcess


class TestCA:
    __test__ = False                              # not a test class for pytest

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_pem = directory / "test-ca.pem"
        self.cert_pem = directory / "sim-cert.pem"
        self.key_pem = directory / "sim-key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        cert.private_key_pem.write_to_path(str(self.key_pem))
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(self.cert_pem), append=i > 0)

    def env(self) -> dict[str, str]:
        return {"SSL_CERT_FILE": str(self.ca_pem), "REQUESTS_CA_BUNDLE": str(self.ca_pem)}


class TlsSimProcess(SimProcess):
    """The simulator on https:// and wss:// with a certificate from `ca`."""

    def __init__(self, tmp_path: Path, ca: TestCA, **sim):
        super().__init__(tmp_path, tls_cert=str(ca.cert_pem), tls_key=str(ca.key_pem), **sim)
        self.ca = ca

    base_url = property(lambda self: f"https://127.0.0.1:{self.port}")
