"""The environment variables a local cluster's node starts with: what running Python, CUDA
and the cell's libraries needs, not the kernel's whole environment.

A cloud node never sees the notebook's variables, and a cell that works on the local
cluster should not start failing on a cloud one because it read ``HF_TOKEN`` there. Nor
should the notebook's API keys sit in the environment of a cluster that other kernels of
this user reuse. So: an allowlist of settings (paths, locale, proxies, compilers, CUDA,
accelerator and thread settings, Python's, Dask's and ours), never a secret-looking name or
a URL with a user in it (a password or token), and two ways to say more: the checkpoint store's own credentials when
``burst.checkpoints.url`` is a remote store the node writes to, and the names in
``burst.local.pass-env``, passed as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from jupyter_burst import credentials
from jupyter_burst.errors import OptionError

_NAMES = frozenset(
    {
        # where things are, who runs them, how text is read
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
        "TMPDIR", "TEMP", "TMP", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
        "LD_LIBRARY_PATH", "MPLBACKEND", "MPLCONFIGDIR", "CC", "CXX",
        # certificates and proxies a download in a cell goes through
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
        "http_proxy", "https_proxy", "no_proxy", "all_proxy",
        # where model hubs keep their caches (a token of theirs is not here)
        "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE",
        "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
        # what Python needs to start at all on Windows
        "SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC", "PATHEXT", "APPDATA",
        "LOCALAPPDATA", "USERPROFILE", "USERNAME", "HOMEDRIVE", "HOMEPATH", "PROGRAMDATA",
        "NUMBER_OF_PROCESSORS", "PROCESSOR_ARCHITECTURE",
    }
)  # fmt: skip
_PREFIXES = (
    "LC_", "XDG_", "PYTHON", "DASK_", "JUPYTER_BURST_", "CUDA_", "NVIDIA_", "NCCL_",
    "HIP_", "ROCM_", "ROCR_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "TORCH_", "PYTORCH_",
    "TORCHINDUCTOR_", "TRITON_", "JAX_", "XLA_", "TF_", "UV_", "PIP_", "COVERAGE_",
)  # fmt: skip
# Where AWS credentials are, not what they are: the same files this user's node can read.
_AWS_SETTINGS = frozenset(
    {
        "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE", "AWS_EC2_METADATA_DISABLED",
        "AWS_STS_REGIONAL_ENDPOINTS", "AWS_ENDPOINT_URL",
    }
)  # fmt: skip
# The credentials a remote checkpoint store's backend reads, by its URL's scheme.
_STORE_CREDENTIALS = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS",),
    "gcs": ("GOOGLE_APPLICATION_CREDENTIALS",),
    "az": ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME",
           "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"),
    "abfs": ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME",
             "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"),
}  # fmt: skip
# A URL with a user in it (https://user:password@..., https://token@...): a credential.
_URL_USER = re.compile(r"://[^/@\s]+@")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def node_environ(
    environ: Mapping[str, str], store_url: str | None, pass_env: object = None
) -> dict[str, str]:
    """The node's variables, taken from ``environ`` (the kernel's)."""
    passed = pass_names(pass_env)
    scheme = store_url.split("://", 1)[0].lower() if store_url and "://" in store_url else ""
    store = _STORE_CREDENTIALS.get(scheme, ())
    env = {}
    for name, value in environ.items():
        if name in passed or name in store:
            env[name] = value
        elif _setting(name) and not _holds_secret(name, value):
            env[name] = value
    return env


def pass_names(pass_env: object) -> frozenset[str]:
    """``burst.local.pass-env``: variable names; anything else refused in one line."""
    if pass_env is None:
        return frozenset()
    if isinstance(pass_env, str):
        pass_env = [pass_env]
    if not isinstance(pass_env, Iterable) or not all(
        isinstance(name, str) and _NAME.fullmatch(name) for name in pass_env
    ):
        raise OptionError(
            f"burst.local.pass-env is {pass_env!r}: give a list of environment variable "
            "names, such as [HF_TOKEN]"
        )
    return frozenset(pass_env)


def _setting(name: str) -> bool:
    return (
        name in _NAMES
        or name in _AWS_SETTINGS
        or name.startswith(_PREFIXES)
        or name.startswith("AWS_ENDPOINT_URL_")  # one service's endpoint
    )


def _holds_secret(name: str, value: str) -> bool:
    return credentials.secret_name(name) or bool(_URL_USER.search(value))
