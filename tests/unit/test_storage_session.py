"""The Cloud Storage client's HTTP session reads the proxy settings of the environment once, when
it is built, instead of on every request (``core.storage.environment_read_once``): a proxy still
applies, ``NO_PROXY`` still exempts the endpoint, a CA bundle variable is still honoured."""

from __future__ import annotations

import pytest

from batchctl.core.storage import EMULATOR_VAR, Storage

PROXY = "http://proxy.invalid:3128"
VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def session() -> object:
    return Storage({EMULATOR_VAR: "storage.invalid:9"}).client._http


def test_the_proxy_is_taken_once_and_requests_no_longer_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    built = session()
    assert built.trust_env is False  # type: ignore[attr-defined]
    assert built.proxies["http"] == PROXY  # type: ignore[attr-defined]


def test_no_proxy_still_exempts_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    monkeypatch.setenv("NO_PROXY", "storage.invalid")
    assert "http" not in session().proxies  # type: ignore[attr-defined]


def test_a_ca_bundle_variable_is_still_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/corporate.pem")
    assert session().verify == "/etc/ssl/certs/corporate.pem"  # type: ignore[attr-defined]
