"""A burst never ships the user's cloud credentials by accident, and the ledger never keeps them."""

from __future__ import annotations

import boto3
import botocore.credentials
import pytest

from jupyter_burst import credentials
from jupyter_burst.errors import SendError
from jupyter_burst.store.ledger import open_ledger
from tests.harness import cluster_record

KEY_ID = "AKIAIOSFODNN7EXAMPLE"  # AWS's own documentation example, not a real key
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


class Holder:
    def __init__(self, client):
        self.settings = {"bucket": "data"}
        self.s3 = client


def refused(values: dict, send: tuple[str, ...] = ()) -> str:
    with pytest.raises(SendError) as info:
        credentials.refuse(values, send=send)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_sdk_sessions_clients_credentials_and_key_shaped_strings_are_refused_by_path():
    session = boto3.session.Session(
        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name="us-east-1"
    )
    client = session.client("s3")
    creds = botocore.credentials.Credentials(KEY_ID, SECRET)
    assert refused({"session": session}).startswith(
        "burst: 'session' holds a boto3.session.Session at session, and a burst does not send "
        "credentials unless asked: create it inside the cell, exclude=session, or send=session"
    )
    assert "holds a botocore.client.S3 at job.s3" in refused({"job": Holder(client)})
    assert "holds a botocore.credentials.Credentials at creds" in refused({"creds": creds})
    text = refused({"paths": ["s3://x", {"note": f"key {KEY_ID}"}]})
    assert "a string shaped like an AWS access key id at paths[1]['note']" in text
    text = refused({"cfg": {"lr": 0.1, "aws_secret_access_key": SECRET}})
    assert (
        "under the secret-looking key 'aws_secret_access_key' at cfg['aws_secret_access_key']"
        in text
    )


def test_variables_named_like_secrets_are_refused_unless_send_names_them():
    for name in ("hf_token", "apiKey", "AWS_SECRET_ACCESS_KEY", "db_password"):
        assert refused({name: "s3cr3t-value-123"}).startswith(
            f"burst: '{name}' is named like a credential, and a burst does not send credentials "
            f"unless asked: send={name} if the cell needs it"
        )
    credentials.refuse({"hf_token": "s3cr3t-value-123"}, send=("hf_token",))
    credentials.refuse({"job": Holder(None)}, send=())
    # Names that only look alike, and values that are not text: sent as usual.
    credentials.refuse(
        {
            "tokens": ["the", "cat"],
            "token_ids": [101, 2023, 102],
            "max_tokens": 512,
            "key_size": 2048,
            "tokenizer_config": {"lowercase": True},
        }
    )


# A notebook's cell: its functions and classes live in __main__, so pickling sends them by
# value, with every global they use, their closures, defaults and class attributes.
NOTEBOOK = """
hf_token = 'hf_abcdefghijklmnopqrst'
def fetch():
    return hf_token
def train():
    return fetch()
def with_default(header='Bearer ' + hf_token, token=hf_token):
    return token
def make():
    wandb_api_key = 'w' * 40
    def log():
        return wandb_api_key
    return log
class Hub:
    headers = {'Authorization': hf_token}
class Downloader:
    def get(self):
        return hf_token
"""


def _notebook() -> dict:
    namespace = {"__name__": "__main__"}
    exec(NOTEBOOK, namespace)
    return namespace


@pytest.mark.parametrize(
    ("name", "path", "named"),
    [
        ("fetch", "fetch.__globals__['hf_token']", "hf_token"),
        ("train", "train.__globals__['fetch'].__globals__['hf_token']", "hf_token"),
        ("with_default", "with_default.__defaults__['token']", "hf_token"),
        ("log", "log.__closure__['wandb_api_key']", "wandb_api_key"),
        ("Hub", "Hub.headers['Authorization']", "hf_token"),
        ("loader", "loader.__class__.get.__globals__['hf_token']", "hf_token"),
    ],
)
def test_a_secret_that_a_notebook_function_or_class_reaches_is_refused_by_its_path(
    name, path, named
):
    notebook = _notebook()
    values = {**notebook, "log": notebook["make"](), "loader": notebook["Downloader"]()}
    secrets = credentials.notebook_secrets(notebook)
    with pytest.raises(SendError) as refused:
        credentials.refuse({name: values[name]}, secrets=secrets)
    said = str(refused.value)
    assert f" at {path}, " in said and said.endswith(f"or send={named} if you mean it"), said
    credentials.refuse({name: values[name]}, send=(named,), secrets=secrets)  # yes, send it


def test_functions_and_classes_of_libraries_are_not_searched_and_not_refused():
    import json

    import numpy

    secrets = credentials.notebook_secrets(_notebook())
    credentials.refuse({"np": numpy, "mean": numpy.mean, "dumps": json.dumps}, secrets=secrets)


def test_redaction_replaces_key_ids_secret_settings_and_the_notebooks_own_secrets():
    notebook = {"hf_token": "hf_abcdefghijklmnop", "tokens": "not a secret at all"}
    credentials.remember(credentials.notebook_secrets(notebook))
    text = credentials.redact(
        f"id {KEY_ID}; aws_secret_access_key = {SECRET}; sent hf_abcdefghijklmnop; "
        "tokens=12345678; lr=0.1; not a secret at all"
    )
    assert text == (
        "id [redacted]; aws_secret_access_key = [redacted]; sent [redacted]; "
        "tokens=12345678; lr=0.1; not a secret at all"
    )


def test_the_ledger_keeps_cell_sources_output_lines_and_errors_redacted(tmp_path):
    ledger = open_ledger(tmp_path)
    ledger.job_started("j1", "c1", "kernel", f"api_key = '{SECRET}'\nprint({KEY_ID!r})", {})
    ledger.add_lines("j1", [(0.0, 0, "stdout", f"connecting with {KEY_ID}")])
    ledger.job_ended("j1", "failed", f"ValueError: bad secret_key={SECRET}")
    assert [row["text"] for row in ledger.lines("j1")] == ["connecting with [redacted]"]
    assert ledger.job("j1")["error"] == "ValueError: bad secret_key=[redacted]"
    assert ledger.job("j1")["source"] == "api_key = '[redacted]'\nprint('[redacted]')"


def test_a_cell_reading_a_secret_is_stopped_before_anything_starts(kernel):
    kernel.ok(f"hf_token = 'hf_{'x' * 20}'\nboto3_session = __import__('boto3').session.Session()")
    run = kernel.execute("%%burst\nprint(len(hf_token))\n")
    assert run.status == "error" and run.traceback == [run.evalue]
    assert run.evalue.startswith("burst: 'hf_token' is named like a credential")
    run = kernel.execute("%%burst\nprint(boto3_session.region_name)\n")
    assert run.evalue.startswith("burst: 'boto3_session' holds a boto3.session.Session")
    # through a function of the notebook, which travels with the globals it uses
    kernel.ok("def fetch():\n    return hf_token\n")
    run = kernel.execute("%%burst\nx = fetch()\n")
    assert run.status == "error" and run.traceback == [run.evalue]
    assert "at fetch.__globals__['hf_token']" in run.evalue, run.evalue
    assert run.evalue.endswith("or send=hf_token if you mean it"), run.evalue
    assert cluster_record(kernel.state_dir) is None  # $0: nothing was started
