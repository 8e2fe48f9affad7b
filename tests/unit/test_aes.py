"""pingap's AES scheme and ``POST /api/aes``: AES-256-GCM-SIV with pingap's key shaping
and fixed nonce, base64 text; bad input is a clear 400."""

from __future__ import annotations

import base64
import json

import pytest

from pingap.actions import Respond
from pingap.admin.api import AdminRequest, route
from pingap.aes import aes_decrypt, aes_encrypt

KEY = "12345678901234567890123456789012"


@pytest.mark.parametrize("key", [KEY, KEY + "ABC", KEY[:-1]])
def test_round_trip_for_pingaps_key_lengths(key: str) -> None:
    sealed = aes_encrypt(key, "hello")
    assert len(base64.b64decode(sealed)) == len("hello") + 16  # text + GCM-SIV tag
    assert aes_decrypt(key, sealed) == "hello"


def test_key_is_cut_or_zero_padded_to_32_bytes_and_the_nonce_is_fixed() -> None:
    assert aes_encrypt(KEY + "ABC", "x") == aes_encrypt(KEY, "x")
    assert aes_encrypt("short", "x") == aes_encrypt("short" + "\0" * 27, "x")
    assert aes_encrypt("short", "x") != aes_encrypt("shorT", "x")
    assert aes_encrypt(KEY, "same") == aes_encrypt(KEY, "same")  # pingap's fixed nonce


def test_wrong_key_altered_or_non_base64_data_is_a_value_error() -> None:
    sealed = aes_encrypt(KEY, "secret")
    with pytest.raises(ValueError, match="wrong key"):
        aes_decrypt("other", sealed)
    altered = base64.b64encode(bytes([base64.b64decode(sealed)[0] ^ 1]) +
                               base64.b64decode(sealed)[1:]).decode()
    with pytest.raises(ValueError, match="wrong key or altered"):
        aes_decrypt(KEY, altered)
    with pytest.raises(ValueError, match="base64"):
        aes_decrypt(KEY, "not base64!")


def _aes(body: object) -> tuple[int, dict[str, str]]:
    answer = route(AdminRequest(method="POST", path="/api/aes",
                                body=json.dumps(body).encode()), {})
    assert isinstance(answer, Respond)
    return answer.status, json.loads(answer.body)


def test_api_aes_encrypts_decrypts_and_rejects_bad_input() -> None:
    status, sealed = _aes({"category": "encrypt", "key": KEY, "data": "pass"})
    assert status == 200 and sealed["value"] == aes_encrypt(KEY, "pass")
    assert _aes({"category": "decrypt", "key": KEY, "data": sealed["value"]}) == \
        (200, {"value": "pass"})
    status, body = _aes({"category": "decrypt", "key": "other", "data": sealed["value"]})
    assert status == 400 and "wrong key" in body["message"]
    status, body = _aes({"category": "encrypt", "key": KEY})
    assert status == 400 and "expected" in body["message"]
