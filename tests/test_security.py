"""TLS for dask: certificates, the Security object, a TLS cluster, and ``survey-seg certs``."""

from __future__ import annotations

import gc
import ipaddress
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from distributed import Client

from survey_seg.cli import main
from survey_seg.cluster import ClusterSpec, dask_client
from survey_seg.errors import InputError
from survey_seg.security import dask_security, write_tls_certificates


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return write_tls_certificates(tmp_path_factory.mktemp("tls"))


def _tls(files) -> dict[str, str]:
    return {f"tls_{role}": str(files[role]) for role in ("ca_file", "cert", "key")}


def test_certificates_are_signed_by_the_ca_with_private_keys(tmp_path):
    hosts = ["localhost", "10.0.0.5", "scheduler.example.org"]
    files = write_tls_certificates(tmp_path / "tls", hosts=hosts, days=30)
    assert {path.name for path in files.values()} == {"ca.pem", "ca-key.pem", "cert.pem", "key.pem"}
    for role in ("ca_key", "key"):
        assert stat.S_IMODE(files[role].stat().st_mode) == 0o600, role
    ca = x509.load_pem_x509_certificate(files["ca_file"].read_bytes())
    cert = x509.load_pem_x509_certificate(files["cert"].read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "scheduler.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 30 <= lifetime.days <= 31


def test_existing_certificates_are_kept_unless_overwrite(tmp_path):
    files = write_tls_certificates(tmp_path)
    before = {role: path.read_bytes() for role, path in files.items()}
    with pytest.raises(InputError, match=r"already exist.*--overwrite"):
        write_tls_certificates(tmp_path)
    assert {role: path.read_bytes() for role, path in files.items()} == before
    files["key"].chmod(0o644)
    write_tls_certificates(tmp_path, overwrite=True)
    assert files["cert"].read_bytes() != before["cert"]
    assert stat.S_IMODE(files["key"].stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hosts": []}, "list of host names"),
        ({"hosts": "localhost"}, "list of host names"),
        ({"hosts": ["bad host"]}, "neither a DNS name nor an IP address"),
        ({"days": 0}, "positive number of days"),
    ],
)
def test_bad_certificate_requests_are_refused(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        write_tls_certificates(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_dask_security_names_a_missing_file_and_the_fix(tls_files, tmp_path):
    missing = tmp_path / "nowhere" / "cert.pem"
    with pytest.raises(InputError, match=re.escape(f"TLS file {missing} does not exist")) as caught:
        dask_security(tls_files["ca_file"], missing, tls_files["key"])
    assert "create the certificates with `survey-seg certs DIR`" in str(caught.value)


def test_dask_security_refuses_a_key_of_another_certificate(tls_files, tmp_path):
    other = write_tls_certificates(tmp_path)
    with pytest.raises(InputError, match="not a CA certificate, a certificate and its key"):
        dask_security(tls_files["ca_file"], tls_files["cert"], other["key"])


def test_dask_security_uses_one_certificate_everywhere_and_requires_encryption(tls_files):
    security = dask_security(tls_files["ca_file"], tls_files["cert"], tls_files["key"])
    assert security.require_encryption
    for role in ("client", "scheduler", "worker"):
        config = security.get_tls_config_for_role(role)
        assert config["cert"] == str(tls_files["cert"]) and config["key"] == str(tls_files["key"])
        assert config["ca_file"] == str(tls_files["ca_file"])


def test_tls_local_cluster_refuses_plain_tcp(tls_files):
    spec = ClusterSpec(kind="local", n_workers=1, **_tls(tls_files))
    with dask_client(spec) as client:
        address = client.scheduler.address
        assert address.startswith("tls://")
        assert all(worker.startswith("tls://") for worker in client.scheduler_info()["workers"])
        assert client.submit(lambda x: x + 1, 1).result() == 2
        connect = ClusterSpec(kind="address", address=address, **_tls(tls_files))
        with dask_client(connect) as second:
            assert second.submit(lambda x: x * 3, 2).result() == 6
        with pytest.raises(OSError):
            Client(address.replace("tls://", "tcp://"), timeout="3s")
        # the failed Client closes in __del__: let it now, not inside another Client's start,
        # where distributed's loop-runner lock would deadlock
        gc.collect()


def test_certs_command_writes_the_files_and_says_what_next(tmp_path, capsys):
    directory = tmp_path / "tls"
    assert main(["certs", str(directory), "--host", "node1", "--host", "10.1.2.3"]) == 0
    out = capsys.readouterr().out
    assert 3 <= len(out.splitlines()) <= 4
    [secret] = [line for line in out.splitlines() if "create secret generic" in line]
    assert "survey-seg-dask-tls" in secret and "ca-key.pem" not in secret
    assert all(f"--from-file={directory / name}" in secret for name in ("ca.pem", "key.pem"))
    assert f"tls_ca_file: {directory / 'ca.pem'}" in out
    cert = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["node1"]

    assert main(["certs", str(directory)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("survey-seg: error: TLS files already exist") and err.count("\n") == 1
    assert "--overwrite" in err
    assert main(["certs", str(directory), "--overwrite"]) == 0


# --------------------------------------------------------------------------- no unpickling

UNPICKLERS = {
    ("pickle", "load"), ("pickle", "loads"), ("pd", "read_pickle"), ("pandas", "read_pickle"),
    ("joblib", "load"), ("dill", "load"), ("marshal", "load"), ("shelve", "open"),
    ("yaml", "load"), ("yaml", "unsafe_load"),
}  # fmt: skip


def _unsafe_loads(source: str) -> list[str]:
    """Calls in ``source`` that could unpickle (or construct objects) from a file."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        name = (owner.id if isinstance(owner, ast.Name) else "", node.func.attr)
        keywords = {k.arg: k.value for k in node.keywords}
        safe_torch = isinstance(keywords.get("weights_only"), ast.Constant) and (
            keywords["weights_only"].value is True
        )
        pickled_numpy = isinstance(keywords.get("allow_pickle"), ast.Constant) and (
            keywords["allow_pickle"].value is True
        )
        if (
            name in UNPICKLERS
            or (name == ("torch", "load") and not safe_torch)
            or (name[1] == "load" and pickled_numpy)
        ):
            found.append(f"line {node.lineno}: {'.'.join(name)}")
    return found


def test_the_checker_finds_unsafe_loads():
    source = (
        "torch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\n"
        "np.load(p, allow_pickle=True)\nyaml.load(s)\n"
        "torch.load(p, weights_only=True)\nyaml.safe_load(s)\nnp.load(p)\n"
    )
    assert len(_unsafe_loads(source)) == 5


def test_nothing_unpickles_data_from_a_file():
    root = Path(__file__).resolve().parents[1]
    offenders = {
        str(path.relative_to(root)): found
        for folder in ("survey_seg", "flows", "benchmarks")
        for path in sorted((root / folder).rglob("*.py"))
        if (found := _unsafe_loads(path.read_text()))
    }
    assert offenders == {}
