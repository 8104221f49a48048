"""The dask cluster factory: built from a spec by the caller, never inside the compute code.

Kinds:

``local``
    A :class:`distributed.LocalCluster` of worker processes, one thread each by
    default, with the BLAS/OpenMP/torch thread counts pinned to the worker's
    threads so that workers do not oversubscribe the cores.
``cuda``
    :class:`dask_cuda.LocalCUDACluster`: one worker per GPU (``pip install
    'survey-seg[gpu]'``).
``auto``
    ``cuda`` when a GPU and dask-cuda are present, ``local`` otherwise.
``address``
    An existing scheduler (``tcp://host:8786``, ``tls://host:8786``).
``slurm``
    :class:`dask_jobqueue.SLURMCluster`, one worker job per ``n_workers``, its
    options (queue, cores, memory, GPUs as ``--gres``) in ``options``
    (``pip install 'survey-seg[slurm]'``).
``kubernetes``
    :class:`dask_kubernetes.operator.KubeCluster` from a ``DaskCluster``
    resource given in ``options`` (``pip install 'survey-seg[kubernetes]'``).
    Without TLS only: KubeCluster reaches its scheduler in plain TCP. With TLS,
    apply ``deploy/kubernetes/dask-cluster.yaml`` with kubectl and connect
    with ``kind: address``.

TLS: ``tls_ca_file``, ``tls_cert`` and ``tls_key`` (made by ``survey-seg certs
DIR``, see :mod:`survey_seg.security`) make every connection between client,
scheduler and workers encrypted and authenticated; plain TCP is then refused.

Specs live in YAML files (``deploy/clusters/*.yaml``); :meth:`ClusterSpec.from_file`
reads them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from distributed import Client, LocalCluster, Security

from survey_seg.errors import InputError
from survey_seg.security import dask_security

__all__ = [
    "CLUSTER_KINDS",
    "ClusterSpec",
    "build_batch_cluster",
    "check_spec_file_alone",
    "dask_client",
    "gpu_count",
    "resolve_kind",
]

CLUSTER_KINDS = ("auto", "local", "cuda", "address", "slurm", "kubernetes")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
KUBERNETES_TLS_MANIFEST = "deploy/kubernetes/dask-cluster.yaml"


@dataclass(frozen=True)
class ClusterSpec:
    """How to get dask workers."""

    kind: str = "auto"
    """One of ``auto``, ``local``, ``cuda``, ``address``, ``slurm``, ``kubernetes``."""
    n_workers: int | None = None
    """Worker processes (``local``: default the number of cores; ``cuda``: one per GPU)."""
    threads_per_worker: int = 1
    """Threads per worker process; torch and BLAS get the same count."""
    address: str | None = None
    """Scheduler address for ``kind="address"``."""
    memory_limit: str = "auto"
    """Memory limit per worker, as dask understands it."""
    dashboard_address: str = "127.0.0.1:0"
    """Dashboard bind address: localhost and a free port by default."""
    connect_timeout: str = "20s"
    """How long to try reaching an existing scheduler."""
    options: dict = field(default_factory=dict)
    """Keyword arguments of the SLURMCluster, or the DaskCluster resource of KubeCluster."""
    tls_ca_file: str | None = None
    """PEM certificate of the CA that signed ``tls_cert``; setting it turns TLS on."""
    tls_cert: str | None = None
    """PEM certificate that the scheduler, the workers and the client all present."""
    tls_key: str | None = None
    """PEM private key of ``tls_cert`` (unless ``tls_cert`` holds it)."""

    def __post_init__(self) -> None:
        if self.kind not in CLUSTER_KINDS:
            raise InputError(
                f"unknown cluster kind {self.kind!r}; use one of {', '.join(CLUSTER_KINDS)}"
            )
        if self.kind == "address" and not self.address:
            raise InputError("cluster kind 'address' needs a scheduler address (--scheduler)")
        if self.n_workers is not None and (
            isinstance(self.n_workers, bool) or int(self.n_workers) < 1
        ):
            raise InputError(f"--workers must be a positive integer, got {self.n_workers!r}")
        if isinstance(self.threads_per_worker, bool) or int(self.threads_per_worker) < 1:
            raise InputError(
                f"threads per worker must be a positive integer, got {self.threads_per_worker!r}"
            )
        self._check_tls()

    @property
    def tls(self) -> bool:
        """Whether the cluster's communications use TLS (``tls_ca_file`` is set)."""
        return self.tls_ca_file is not None

    def security(self) -> Security | None:
        """The :class:`distributed.Security` of the spec's TLS files, or None without TLS.

        Raises
        ------
        InputError
            A TLS file is missing, unreadable or not PEM (the message names it).
        """
        if not self.tls:
            return None
        return dask_security(self.tls_ca_file, self.tls_cert, self.tls_key)

    def _check_tls(self) -> None:
        if not self.tls:
            if self.tls_cert or self.tls_key:
                raise InputError(
                    "tls_cert and tls_key need tls_ca_file, the CA certificate that checks "
                    "them; add tls_ca_file (ca.pem from `survey-seg certs DIR`)"
                )
            return
        if not self.tls_cert:
            raise InputError(
                "tls_ca_file is set without tls_cert; add tls_cert and tls_key "
                "(cert.pem and key.pem from `survey-seg certs DIR`)"
            )
        if self.kind == "kubernetes":
            raise InputError(
                "a kubernetes cluster spec cannot use TLS (dask-kubernetes' KubeCluster reaches "
                f"its scheduler in plain TCP); apply {KUBERNETES_TLS_MANIFEST} with kubectl and "
                "connect with kind: address (see deploy/clusters/kubernetes.yaml)"
            )
        if self.kind == "address" and not str(self.address).startswith("tls://"):
            raise InputError(
                f"scheduler address {self.address} is not a TLS address but the spec sets "
                "tls_ca_file; use tls://HOST:PORT"
            )
        if self.kind == "slurm":
            clashing = sorted({"security", "protocol"} & set(self.options))
            if clashing:
                raise InputError(
                    f"options {clashing} clash with the spec's tls_* files; remove them "
                    "from options (TLS sets the security and tls:// protocol)"
                )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ClusterSpec:
        """Read a spec from a YAML file whose keys are this class's fields.

        Raises
        ------
        InputError
            Unreadable YAML, or keys that are not fields (named in the message).
        """
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise InputError(f"cannot read cluster spec {path} ({error}); fix the file") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"cluster spec {path} has unknown keys {unknown}; use only {sorted(known)}"
            )
        return cls(**data)


def check_spec_file_alone(spec_file_name: str, others: dict[str, object]) -> None:
    """Refuse a cluster spec file given together with other options on where tiles run.

    Parameters
    ----------
    spec_file_name : str
        How the user named the spec file (an option or a field, with its value).
    others : dict
        The other placement options by the name the user gave them; ``None`` is unset.

    Raises
    ------
    InputError
        Any of ``others`` is set: the message names them and says to drop one side.
    """
    clashing = [name for name, value in others.items() if value is not None]
    if clashing:
        named = " and ".join(clashing)
        raise InputError(
            f"{spec_file_name} and {named} both say where tiles run; "
            f"drop {named} (or put it in the spec file) or drop the spec file"
        )


def gpu_count() -> int:
    """Number of CUDA devices visible to torch (0 without a GPU or a CUDA build)."""
    try:
        import torch
    except ImportError:
        return 0
    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except RuntimeError:
        return 0


def resolve_kind(spec: ClusterSpec) -> str:
    """The concrete kind that ``spec`` asks for (``auto`` resolved).

    Raises
    ------
    InputError
        ``cuda`` asked for without a GPU or without dask-cuda.
    """
    if spec.kind in ("address", "slurm", "kubernetes"):
        return spec.kind
    has_dask_cuda = _has_dask_cuda()
    gpus = gpu_count()
    if spec.kind == "auto":
        return "cuda" if gpus and has_dask_cuda else "local"
    if spec.kind == "cuda":
        if not gpus:
            raise InputError(
                "--cluster cuda needs an NVIDIA GPU and none was found; use --cluster local"
            )
        if not has_dask_cuda:
            raise InputError(
                "--cluster cuda needs dask-cuda; install it with pip install 'survey-seg[gpu]'"
            )
    return spec.kind


@contextlib.contextmanager
def dask_client(spec: ClusterSpec) -> Iterator[Client]:
    """Start (or connect to) the cluster described by ``spec`` and yield a client.

    The cluster is closed on exit when this function started it. With TLS
    (``spec.tls``) the scheduler, the workers and the client all use the spec's
    certificates and refuse plain TCP; the client of a started cluster takes
    the cluster's security.

    Parameters
    ----------
    spec : ClusterSpec
        What to start.

    Yields
    ------
    distributed.Client

    Raises
    ------
    InputError
        An unreachable scheduler, a missing TLS file, a missing library.
    """
    kind = resolve_kind(spec)
    security = spec.security()
    protocol = "tls://" if security is not None else None
    if kind == "address":
        try:
            client = Client(spec.address, timeout=spec.connect_timeout, security=security)
        except (OSError, TimeoutError) as error:
            raise InputError(
                f"could not reach the dask scheduler at {spec.address} ({error}); check the "
                "address, or start one with `dask scheduler`"
            ) from None
        with client:
            yield client
        return
    if kind in ("slurm", "kubernetes"):
        with _batch_cluster(kind, spec) as cluster, Client(cluster) as client:
            yield client
        return
    threads = str(spec.threads_per_worker)
    env = {name: threads for name in THREAD_VARIABLES}
    if kind == "cuda":
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(
            n_workers=spec.n_workers,
            threads_per_worker=spec.threads_per_worker,
            dashboard_address=spec.dashboard_address,
            memory_limit=spec.memory_limit,
            env=env,
            security=security,
            protocol=protocol,
        )
    else:
        cluster = LocalCluster(
            n_workers=spec.n_workers or os.cpu_count() or 1,
            threads_per_worker=spec.threads_per_worker,
            processes=True,
            dashboard_address=spec.dashboard_address,
            memory_limit=spec.memory_limit,
            env=env,
            security=security,
            protocol=protocol,
        )
    with cluster, Client(cluster) as client:
        yield client


def build_batch_cluster(kind: str, spec: ClusterSpec):
    """The SLURM or Kubernetes cluster object of a spec, not yet scaled.

    With TLS, SLURM workers get the spec's ``--tls-*`` files and a ``tls://``
    scheduler address in their job script: the files must be at the same paths
    on every node (a shared filesystem), readable by the jobs' user.

    Raises
    ------
    InputError
        The library for that kind is not installed, or a TLS file is missing.
    """
    if kind == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise InputError(
                "--cluster slurm needs dask-jobqueue: pip install 'survey-seg[slurm]'"
            ) from None
        security = spec.security()
        if security is None:
            return SLURMCluster(**spec.options)
        return SLURMCluster(security=security, protocol="tls://", **spec.options)
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError:
        raise InputError(
            "--cluster kubernetes needs dask-kubernetes: pip install 'survey-seg[kubernetes]'"
        ) from None
    return KubeCluster(custom_cluster_spec=spec.options)


@contextlib.contextmanager
def _batch_cluster(kind: str, spec: ClusterSpec):
    cluster = build_batch_cluster(kind, spec)
    with cluster:
        if kind == "slurm":
            cluster.scale(jobs=spec.n_workers or 1)
        else:
            cluster.scale(spec.n_workers or 1)
        yield cluster


def _has_dask_cuda() -> bool:
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return False
    return True
