"""Real deployment helpers: TLS certificates, SuperNode keys, and a loopback federation.

``python -m simulations.deploy certs DIR [--host NAME ...]`` writes a CA and a SuperLink
certificate (``ca.crt``, ``server.pem``, ``server.key``) for the SuperLink's host names.
``python -m simulations.deploy keys DIR N`` writes N SuperNode key pairs (OpenSSH ECDSA,
as ``flwr supernode register`` and ``flower-supernode --auth-supernode-private-key`` take).
``python -m simulations.deploy loopback --nodes 2 --run-config "num-server-rounds=2 ..."``
runs the whole thing on 127.0.0.1: a TLS SuperLink with SuperNode authentication, N
SuperNodes each with its own ``partition-id``, one ``flwr run``, its final status, and
every process stopped at the end. docs/deployment.md gives the same steps by hand (flwr
1.42: the SuperLink serves its Fleet, Control and runtime APIs on one port, ``--port``).
Keys and certificates are made with the ``cryptography`` package (a Flower dependency),
so no openssl binary is needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from pathlib import Path

from simulations.superlink import Federation, flwr_bin, free_port


def make_certs(folder: Path, hosts: list[str]) -> dict[str, Path]:
    """A self-signed CA and a server certificate for ``hosts`` (names or IPs), signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def cert(subject, issuer, key, signer, days, ca, sans=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flbench CA")])
    ca_cert = cert(ca_name, ca_name, ca_key, ca_key, 3650, True)
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    server_cert = cert(name, ca_name, key, ca_key, 365, False, sans)
    pem = serialization.Encoding.PEM
    paths = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(pem))
    paths["cert"].write_bytes(server_cert.public_bytes(pem))
    paths["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


def make_node_keys(folder: Path, n: int) -> list[tuple[Path, Path]]:
    """N SuperNode key pairs in OpenSSH format: ``node<i>`` and ``node<i>.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP384R1())
        private, public = folder / f"node{i}", folder / f"node{i}.pub"
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()))
        private.chmod(0o600)
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                         serialization.PublicFormat.OpenSSH))
        pairs.append((private, public))
    return pairs


class LoopbackDeployment(Federation):
    """A TLS SuperLink with SuperNode authentication and ``nodes`` SuperNodes on 127.0.0.1.

    Each SuperNode gets ``partition-id=i num-partitions=nodes data-root=DATA`` as its node
    config: a real node reads its data from its own ``data-root`` (here all share one
    folder, ``data_root``; default: the default data folder), never from the run config.
    """

    connection = "deployment"

    def __init__(self, nodes: int = 2, data_root: str = ""):
        from datasets.registry import resolve_root

        super().__init__()
        self.nodes = nodes
        self.data_root = str(resolve_root(data_root))

    def __enter__(self) -> "LoopbackDeployment":
        tls = make_certs(self.home / "certs", ["127.0.0.1", "localhost"])
        keys = make_node_keys(self.home / "keys", self.nodes)
        self.write_connection(**{"root-certificates": str(tls["ca"])})
        self.start("superlink", [
            flwr_bin("flower-superlink"), "--ssl-ca-certfile", str(tls["ca"]), "--ssl-certfile", str(tls["cert"]),
            "--ssl-keyfile", str(tls["key"]), "--enable-supernode-auth", "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", str(self.port), "--health-server-address",
            f"127.0.0.1:{free_port()}", "--database", str(self.home / "state.db"),
            "--disable-runtime-dependency-installation",
        ], port=self.port)
        for i, (private, public) in enumerate(keys):
            out = self.flwr("supernode", "register", str(public), self.connection)
            if out.returncode:
                self.__exit__()
                raise RuntimeError(f"registering SuperNode {i} failed: {(out.stdout + out.stderr)[-500:]}")
            node_port = free_port()
            self.start(f"supernode{i}", [
                flwr_bin("flower-supernode"), "--root-certificates", str(tls["ca"]),
                "--superlink", f"127.0.0.1:{self.port}", "--auth-supernode-private-key", str(private),
                "--node-config", f"partition-id={i} num-partitions={self.nodes} data-root='{self.data_root}'",
                "--host", "127.0.0.1", "--port", str(node_port), "--health-server-address",
                f"127.0.0.1:{free_port()}",
            ], port=node_port)
        return self


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.deploy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("certs", help="write ca.crt, server.pem, server.key")
    c.add_argument("folder", type=Path)
    c.add_argument("--host", action="append", default=None, help="SuperLink host name or IP (repeatable)")
    k = sub.add_parser("keys", help="write N SuperNode key pairs")
    k.add_argument("folder", type=Path)
    k.add_argument("n", type=int)
    lo = sub.add_parser("loopback", help="run the app on a TLS SuperLink + SuperNodes on 127.0.0.1")
    lo.add_argument("--nodes", type=int, default=2)
    lo.add_argument("--run-config", default="", help='e.g. "num-server-rounds=2 out-dir=\'/tmp/out\'"')
    args = parser.parse_args(argv)
    if args.cmd == "certs":
        paths = make_certs(args.folder, args.host or ["127.0.0.1", "localhost"])
        print("\n".join(f"{k}: {v}" for k, v in paths.items()))
        return 0
    if args.cmd == "keys":
        for private, public in make_node_keys(args.folder, args.n):
            print(private, public)
        return 0
    import tomllib

    from simulations.config import ConfigError, resolve

    try:
        overrides = tomllib.loads(args.run_config.replace(" ", "\n")) if args.run_config else {}
        overrides.setdefault("partition-assignment", "node")  # real SuperNodes keep their own partition
        cfg = resolve(overrides)
    except (ConfigError, tomllib.TOMLDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg["run-name"] = cfg["run-name"] or "deployment"
    cfg["out-dir"] = str(Path(cfg["out-dir"]).expanduser().resolve())  # from here, not the SuperLink's folder
    out = Path(cfg["out-dir"]) / cfg["run-name"]
    out.mkdir(parents=True, exist_ok=True)
    with LoopbackDeployment(args.nodes) as fed:
        record = fed.run(cfg, out / "flwr.log")
    print(f"status: {record['status']} {record.get('status-details', '')}")
    return 0 if record["status"] == "finished:completed" else 1


if __name__ == "__main__":
    sys.exit(main())
