"""pingap's AES scheme (``/api/aes`` and secret storages): AES-256-GCM-SIV, base64 text.

As pingap: the key is the text's UTF-8 bytes cut or zero-padded to 32 bytes, the nonce is
the fixed ``b"pingap nonce"`` (GCM-SIV stays safe under nonce reuse, short of revealing
equal plaintexts), and the ciphertext (with its 16-byte tag) is standard base64. The
cipher is the ``cryptography`` package's ``AESGCMSIV``.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

NONCE = b"pingap nonce"
KEY_SIZE = 32


def _cipher(key: str) -> AESGCMSIV:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV  # used by the admin only

    raw = key.encode()[:KEY_SIZE]
    return AESGCMSIV(raw.ljust(KEY_SIZE, b"\0"))


def aes_encrypt(key: str, data: str) -> str:
    cipher = _cipher(key)
    return base64.b64encode(cipher.encrypt(NONCE, data.encode(), None)).decode()


def aes_decrypt(key: str, data: str) -> str:
    """The plaintext of ``data``; ValueError when it is not base64, was encrypted with
    another key or altered, or is not UTF-8 text."""
    from cryptography.exceptions import InvalidTag

    try:
        sealed = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from None
    try:
        plain = _cipher(key).decrypt(NONCE, sealed, None)
    except InvalidTag:
        raise ValueError("aead::Error: wrong key or altered data") from None
    try:
        return plain.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid utf-8: {exc}") from None
