"""Real deployment on loopback: a TLS SuperLink with SuperNode authentication and two
SuperNodes; and a simulation attached to an existing Ray cluster."""

import pandas as pd
import psutil
import pytest

from simulations.config import resolve
from simulations.deploy import LoopbackDeployment, make_certs
from simulations.superlink import LocalSuperLink, RayCluster, process_tree


def _tree(procs) -> set[int]:
    return {p.pid for proc in procs for p in process_tree(proc.pid)}


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_certificates_name_the_superlink_hosts(tmp_path):
    from cryptography import x509

    paths = make_certs(tmp_path, ["127.0.0.1", "link.example.org"])
    cert = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["link.example.org"]
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)  # raises if the CA did not sign it


def test_tls_superlink_two_authenticated_supernodes_run_two_rounds(tmp_path):
    # One run serves every check (each run costs ~40 s of SuperNode polls and process starts):
    # GIFD attacks round 1, so the server asks the real SuperNodes for their ground truth and
    # they refuse; round 2 is a plain FedAvg round (3 local epochs), which must learn.
    cfg = resolve({"num-server-rounds": 2, "local-epochs": 3, "out-dir": str(tmp_path), "run-name": "deploy",
                   "seed": 1, "partition-assignment": "node",  # real SuperNodes keep their own partitions
                   "method": "gifd", "attack": "ig", "attack-round": "1", "attack-num-images": 1, "attack-budget": 2,
                   "attack-restarts": 1})
    (tmp_path / "deploy").mkdir()
    with LoopbackDeployment(nodes=2) as fed:
        assert fed.port and (fed.home / "certs" / "ca.crt").exists()
        # Plain-text clients are refused by the TLS SuperLink.
        with open(fed.home / "config.toml", "a") as toml:
            toml.write(f'\n[superlink.plaintext]\naddress = "127.0.0.1:{fed.port}"\ninsecure = true\n')
        assert fed.flwr("ls", "plaintext").returncode != 0
        assert fed.flwr("ls", fed.connection).returncode == 0
        record = fed.run(cfg, tmp_path / "deploy" / "flwr.log")
        node_logs = [(fed.home / f"supernode{i}.log").read_text() for i in range(2)]
        started = _tree(fed.procs)  # SuperLink, SuperExec and its children, SuperNodes
    # The run's final status comes from the SuperLink, not from `flwr run`'s exit code.
    assert record["status"] == "finished:completed", record
    frame = pd.read_csv(tmp_path / "deploy" / "metrics.csv")
    assert list(frame["round"]) == [0, 1, 2]
    assert (frame["failures"].fillna(0) == 0).all()  # a refused ground truth is no failure
    assert frame["accuracy"].iloc[-1] > 0.5
    # Both SuperNodes took part: the personalized mean is over the two partitions' test splits.
    assert frame["personalized-accuracy"].iloc[-1] > 0.5
    # The attacked round: each node refused (one warning line each), the attack still ran,
    # and attacks.csv says "no ground truth".
    rows = pd.read_csv(tmp_path / "deploy" / "attacks.csv")
    assert len(rows) == 1 and (rows["note"] == "no ground truth").all() and rows["psnr"].isna().all()
    assert not (tmp_path / "deploy" / "attacks.png").exists()  # no image of a node's data reached the server
    for text in node_logs:
        assert text.count("refused the server's request 'sim-ground-truth'") == 1, text[-2000:]
    assert len(started) >= 4
    assert not _alive(started), "processes left running after the deployment stopped"


@pytest.mark.xdist_group("own-ray")  # a Ray head of its own: one such test at a time (conftest)
def test_simulation_attaches_to_an_existing_ray_cluster(tmp_path):
    cfg = resolve({"num-server-rounds": 1, "local-epochs": 1, "out-dir": str(tmp_path), "run-name": "ray"})
    (tmp_path / "ray").mkdir()
    with RayCluster(num_cpus=2, object_store_mb=200) as cluster:
        assert cluster.jobs() == []
        with LocalSuperLink(env={"RAY_ADDRESS": cluster.address}) as link:
            record = link.run(cfg, tmp_path / "ray" / "flwr.log", {"num-supernodes": 2})
        jobs = cluster.jobs()
        started = _tree(cluster.procs)
    assert record["status"] == "finished:completed", record
    assert len(jobs) == 1 and "flwr-simulation" in jobs[0]  # the simulation ran on this cluster
    assert not _alive(started)
