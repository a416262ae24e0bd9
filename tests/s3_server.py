"""A real S3-compatible server on 127.0.0.1 for the object-storage tests: moto's server mode
(Werkzeug serving moto's S3 backend in a thread), on a free port, stopped at the end."""

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

# Recognisable in any output: a test searches logs and MLflow params for it.
SECRET = "recmtl-secret-" + secrets.token_hex(8)
ACCESS_KEY = "recmtl-test-key"


@contextmanager
def s3_server() -> Iterator[str]:
    """Serves S3 on 127.0.0.1 until the block ends; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    """The standard variables pyarrow, boto3 (MLflow) and Ray's workers read."""
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}


def create_bucket(name: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
