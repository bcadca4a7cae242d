"""The DynamoDB Local launcher, exercised against the real jar (each test starts its own server)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from chathist.local import (
    LOCAL_CREDENTIALS,
    DynamoDBLocal,
    LocalDatabaseError,
    find_dynamodb_local,
    free_port,
    use_local_credentials,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def client_for(server: DynamoDBLocal) -> DynamoDBClient:
    return boto3.client(
        "dynamodb",
        endpoint_url=server.endpoint_url,
        region_name=LOCAL_CREDENTIALS["region_name"],
        aws_access_key_id=LOCAL_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=LOCAL_CREDENTIALS["aws_secret_access_key"],
    )


def create_simple_table(client: DynamoDBClient, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name)


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def test_find_dynamodb_local_returns_the_jar_folder() -> None:
    folder = find_dynamodb_local(install=False)
    assert (folder / "DynamoDBLocal.jar").is_file()
    assert (folder / "DynamoDBLocal_lib").is_dir()


def test_env_dir_must_hold_the_jar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHATHIST_DYNAMODB_LOCAL_DIR", str(tmp_path))
    with pytest.raises(LocalDatabaseError, match="CHATHIST_DYNAMODB_LOCAL_DIR"):
        find_dynamodb_local(install=False)


def test_in_memory_server_on_a_chosen_port_starts_serves_and_stops() -> None:
    port = free_port()
    server = DynamoDBLocal(port=port)
    assert server.endpoint_url == f"http://127.0.0.1:{port}"
    with server:
        assert server.running
        client = client_for(server)
        create_simple_table(client, "launcher-test")
        assert client.list_tables()["TableNames"] == ["launcher-test"]
        item = {"pk": {"S": "a"}, "text": {"S": "héllo"}}
        client.put_item(TableName="launcher-test", Item=item)
        got = client.get_item(TableName="launcher-test", Key={"pk": {"S": "a"}})
        assert got["Item"] == item
    assert not server.running
    assert not port_answers(port)
    server.stop()  # idempotent


def test_start_twice_is_a_no_op_and_a_second_server_is_independent() -> None:
    with DynamoDBLocal() as first, DynamoDBLocal() as second:
        assert first.start() is first
        assert first.port != second.port
        create_simple_table(client_for(first), "only-in-first")
        assert client_for(second).list_tables()["TableNames"] == []


def test_db_path_persists_tables_across_restarts(tmp_path: Path) -> None:
    db_path = tmp_path / "nested" / "db"
    with DynamoDBLocal(db_path=db_path) as server:
        client = client_for(server)
        create_simple_table(client, "persisted")
        client.put_item(TableName="persisted", Item={"pk": {"S": "kept"}})
    assert db_path.is_dir()
    assert any(db_path.iterdir())
    with DynamoDBLocal(db_path=db_path) as server:
        client = client_for(server)
        assert client.list_tables()["TableNames"] == ["persisted"]
        got = client.get_item(TableName="persisted", Key={"pk": {"S": "kept"}})
        assert got["Item"] == {"pk": {"S": "kept"}}


def test_wrong_jar_dir_is_a_clear_error(tmp_path: Path) -> None:
    server = DynamoDBLocal(jar_dir=tmp_path)
    with pytest.raises(LocalDatabaseError, match=r"DynamoDBLocal\.jar"):
        server.start()
    assert not server.running
    server.stop()


def test_broken_jar_reports_the_log_tail(tmp_path: Path) -> None:
    (tmp_path / "DynamoDBLocal.jar").write_bytes(b"not a jar")
    (tmp_path / "DynamoDBLocal_lib").mkdir()
    server = DynamoDBLocal(jar_dir=tmp_path, startup_timeout=30)
    with pytest.raises(LocalDatabaseError, match="exited with status") as caught:
        server.start()
    assert "jar" in str(caught.value).lower()
    assert not server.running
    assert server.log_path is None  # the temporary log is cleaned up


def test_a_taken_fixed_port_is_refused() -> None:
    with DynamoDBLocal() as server:
        with pytest.raises(LocalDatabaseError, match="already in use"):
            DynamoDBLocal(port=server.port).start()
        assert server.running


def test_use_local_credentials_fills_only_unset_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    use_local_credentials()
    assert os.environ["AWS_ACCESS_KEY_ID"] == "local"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "local"
    assert os.environ["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert all(v.isalnum() for k, v in LOCAL_CREDENTIALS.items() if k.startswith("aws_"))
