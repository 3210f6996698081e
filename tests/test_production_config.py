"""The production config.properties, token authorization on, run by a real TorchServe.

Only the ports differ (free ones, on loopback: nothing here binds a public address).
"""

import ipaddress
import json
from urllib.parse import urlsplit

import psutil
import pytest
import yaml
from skimage import data

from humanserve_client import AuthenticationError, ServerError
from runtime.torchserve import PRODUCTION_CONFIG, TorchServe, loopback_overrides, read_properties
from tests.fixtures.serving import clients, encode, run_cli
from tests.manifests import K8S

ORACLE = "pose_oracle"


@pytest.fixture(scope="module")
def production(model_store, tmp_path_factory):
    server = TorchServe(
        tmp_path_factory.mktemp("production"), [ORACLE], model_store, overrides=loopback_overrides(model_store)
    )
    assert server.properties["disable_token_authorization"] == "false"
    with server.running(timeout=300):  # ready with the generated inference and management keys
        yield server


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(data.astronaut(), "PNG")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_inference_needs_the_generated_inference_key(production, http, photo):
    url = f"{production.inference_url}/predictions/{ORACLE}"
    headers = {"Content-Type": "image/png"}
    assert http.post(url, data=photo, headers=headers, timeout=60).status_code == 400  # InvalidKeyException
    assert http.post(url, data=photo, headers={**headers, **bearer("not-the-key")}, timeout=60).status_code == 400
    # The management key is not an inference key.
    assert (
        http.post(
            url, data=photo, headers={**headers, **bearer(production.token("management"))}, timeout=60
        ).status_code
        == 400
    )
    answer = http.post(url, data=photo, headers={**headers, **bearer(production.token("inference"))}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == ORACLE and len(answer.json()["people"]) == 1


def test_model_registration_is_refused_even_with_the_management_key(production, http):
    url = f"{production.management_url}/models"
    archive = {"url": f"{ORACLE}.mar", "model_name": "another"}
    assert http.post(url, params=archive, headers=bearer(production.token("management")), timeout=30).status_code == 405
    assert http.post(url, params=archive, timeout=30).status_code in (400, 405)
    assert http.get(f"{url}/another", headers=bearer(production.token("management")), timeout=30).status_code == 404


def test_management_and_metrics_listen_on_loopback_only(production):
    production_hosts = read_properties(PRODUCTION_CONFIG)
    listening = {}
    for process in [
        psutil.Process(production.process.pid),
        *psutil.Process(production.process.pid).children(recursive=True),
    ]:
        for connection in process.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                address = ipaddress.ip_address(connection.laddr.ip)
                listening[connection.laddr.port] = address.ipv4_mapped or address  # Java listens on IPv6 sockets
    for key in ("management_address", "metrics_address"):
        port = urlsplit(production.properties[key]).port
        assert urlsplit(production_hosts[key]).hostname == "127.0.0.1"
        assert listening[port].is_loopback, f"{key} listens on {listening[port]}"
    assert listening[int(production.properties["grpc_management_port"])].is_loopback


def test_metrics_carry_the_series_the_autoscaler_reads(production, http, photo):
    headers = {"Content-Type": "image/png", **bearer(production.token("inference"))}
    assert (
        http.post(
            f"{production.inference_url}/predictions/{ORACLE}", data=photo, headers=headers, timeout=60
        ).status_code
        == 200
    )
    # TorchServe's metrics API asks for no key: Prometheus scrapes it as it is.
    metrics = http.get(f"{production.metrics_url}/metrics", timeout=30)
    assert metrics.status_code == 200
    (rule,) = yaml.safe_load((K8S / "prometheus" / "adapter-rules.yaml").read_text())
    series = rule["seriesQuery"].split("{")[0]
    samples = [line for line in metrics.text.splitlines() if line.startswith(series + "{")]
    assert samples and any(f'model_name="{ORACLE}"' in line for line in samples), metrics.text[:2000]
    assert f"# TYPE {series} counter" in metrics.text  # a counter: the rule takes its rate


def test_grpc_needs_the_key_as_rest_does_and_answers_the_same_with_it(production, photo):
    anonymous = clients(production)
    keyed = clients(production, token=production.token("inference"), management_token=production.token("management"))
    refusals = []
    for client in anonymous:
        with pytest.raises(ServerError) as caught:
            client.predict(ORACLE, photo)
        refusals.append(caught.value.as_dict())
    assert refusals[0] == refusals[1]
    assert refusals[0]["code"] == 400 and refusals[0]["type"] == "InvalidKeyException"
    rest, remote = keyed
    assert remote.predict(ORACLE, photo).body == rest.predict(ORACLE, photo).body
    assert [m["modelName"] for m in remote.models()] == [m["modelName"] for m in rest.models()] == [ORACLE]
    wrong = clients(production, token=production.token("management"))[1]  # a key, but not the inference one
    with pytest.raises(ServerError, match="InvalidKeyException"):
        wrong.predict(ORACLE, photo)


@pytest.mark.parametrize("protocol", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_a_refused_key_is_an_authentication_error_that_says_which_key_and_where_from(
    production, photo, tmp_path, protocol
):
    for client in clients(production):
        with pytest.raises(AuthenticationError, match="needs its inference key and none was sent"):
            client.predict(ORACLE, photo)
    # Keys of an earlier start: TorchServe made new ones since.
    stale = tmp_path / "key_file.json"
    stale.write_text(json.dumps({api: {"key": "stale0000"} for api in ("inference", "management")}))
    image = tmp_path / "astronaut.png"
    image.write_bytes(photo)
    done = run_cli(production, "predict", ORACLE, str(image), "--key-file", str(stale), *protocol)
    (line,) = map(json.loads, done.stdout.splitlines())
    assert done.returncode == 1 and line["error"]["code"] == 400 and line["error"]["type"] == "InvalidKeyException"
    assert f"refused the inference key from {stale}" in line["error"]["message"]
    assert "new keys at every start" in line["error"]["message"]
