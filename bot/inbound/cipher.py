"""DingTalk's encrypted event-callback scheme: SHA-1 signature and AES-256-CBC.

See ``dingtalk-protocol.md`` sections 1.2-1.5. The layout inside the
ciphertext is ``16 random bytes | 4-byte big-endian length | message |
receive id``, PKCS#7-padded to a **32**-byte block (not AES's 16).

Every way an inbound callback can fail raises the same
``CallbackRejectedError`` with the same reason, so a caller learns nothing
about which step failed. The step is logged at DEBUG as a bare label.
"""

import base64
import hashlib
import hmac
import logging
import re
import secrets
import string
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bot.errors import ConfigError, RequestRejected

logger = logging.getLogger(__name__)

#: DingTalk pads to 32 bytes (Java SDK, 007gzs SDK, vectors V1/V3 with pad
#: bytes 31 and 22); a 16-padded reply is not known to be accepted.
PAD_BLOCK = 32

_PREFIX_SIZE = 16
_LENGTH_SIZE = 4
_AES_KEY_PATTERN = re.compile(r"[A-Za-z0-9]{43}")

# 248 = 4 * 62, so mapping bytes below 248 onto the 62 alphanumerics is
# uniform; bytes 248-255 are dropped rather than folded in (that would bias).
_ALNUM = (string.ascii_letters + string.digits).encode("ascii")
_ALNUM_TABLE = (_ALNUM * 5)[:256]
_ALNUM_OVERFLOW = bytes(range(4 * len(_ALNUM), 256))


class CallbackRejectedError(RequestRejected):
    """An encrypted event callback failed verification, decryption or parsing.

    The reason is always the same fixed phrase, whatever failed, so the
    answer is no oracle for forging signatures or probing the padding.
    """

    #: One status for every failure, or the status itself would tell which
    #: step failed. 401: whatever failed, the request was not shown to come
    #: from DingTalk holding our token and key, which is what 401 means; a
    #: body too broken to check is equally unauthenticated.
    status = 401
    REASON = "invalid callback"

    def __init__(self) -> None:
        super().__init__(self.REASON)

    @classmethod
    def at(cls, step: str) -> "CallbackRejectedError":
        """Log the failed step at DEBUG (a fixed label, no values); return the error.

        Callers raise the result outside any ``except`` block, so the error
        carries no ``__context__`` whose text (a UnicodeDecodeError quotes the
        bytes) could reach a traceback or Sentry.
        """
        logger.debug("event callback rejected at step %s", step)
        return cls()


class CallbackCipher:
    """Verifies, opens and seals DingTalk event callbacks for one app.

    Thread-safe: the AES cipher built here is stateless; each call makes its
    own encryptor or decryptor context.

    Raises ``ConfigError`` when the token or receive id is empty or the
    EncodingAESKey is not 43 characters of ``[A-Za-z0-9]``.
    """

    def __init__(self, token: str, aes_key: str, receive_id: str) -> None:
        if not token:
            raise ConfigError(
                "DINGTALK_CALLBACK_TOKEN",
                "is empty",
                "copy the callback token from the app's event settings",
            )
        if not _AES_KEY_PATTERN.fullmatch(aes_key):
            raise ConfigError(
                "DINGTALK_CALLBACK_AES_KEY",
                "is not 43 letters and digits",
                "copy the EncodingAESKey from the app's event settings",
            )
        if not receive_id:
            raise ConfigError(
                "DINGTALK_APP_KEY",
                "is empty but is needed as the callback receive id",
                "set it to the app key (or corp id / suite key, see the docs)",
            )

        # The 43 characters carry 2 spare bits; b64decode ignores them, as
        # DingTalk's keys need (the official Rust port allows trailing bits).
        key = base64.b64decode(aes_key + "=")
        self._token = token
        self._receive_id = receive_id.encode("utf-8")
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(key[:16]))

    def __repr__(self) -> str:
        receive_id = self._receive_id.decode("utf-8")
        return f"CallbackCipher(receive_id={receive_id!r})"

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        """Return the 40-char lowercase SHA-1 hex over the four sorted strings."""
        joined = "".join(sorted((self._token, timestamp, nonce, encrypt)))
        # surrogatepass: a hostile query string must give a wrong signature,
        # not a UnicodeEncodeError.
        return hashlib.sha1(joined.encode("utf-8", "surrogatepass")).hexdigest()

    def open(self, *, signature: str, timestamp: str, nonce: str, encrypt: str) -> str:
        """Check the signature, decrypt ``encrypt`` and return the message text.

        Raises ``CallbackRejectedError`` on any failure: wrong signature,
        bad base64, bad length, bad padding, bad length field, wrong receive
        id, or a message that is not UTF-8.
        """
        expected = self.signature(timestamp, nonce, encrypt).encode("ascii")
        given = signature.encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(expected, given):
            raise CallbackRejectedError.at("signature")

        padded = self._decrypt(encrypt)
        content = _unpad(padded)
        message, receive_id = _split(content)
        if not hmac.compare_digest(receive_id, self._receive_id):
            raise CallbackRejectedError.at("receive_id")

        return _decode_utf8(message)

    def seal(
        self,
        plaintext: str,
        *,
        timestamp: str | None = None,
        nonce: str | None = None,
        random_prefix: bytes | None = None,
    ) -> dict[str, str]:
        """Encrypt and sign ``plaintext`` into DingTalk's four-key reply body.

        ``timestamp`` defaults to now in epoch milliseconds, ``nonce`` and
        ``random_prefix`` to 16 fresh random alphanumerics; pass them only to
        reproduce a known vector. Raises ``ValueError`` if ``random_prefix``
        is not 16 bytes.
        """
        if random_prefix is None:
            random_prefix = _random_alnum(_PREFIX_SIZE)
        elif len(random_prefix) != _PREFIX_SIZE:
            raise ValueError("random_prefix must be exactly 16 bytes")
        if timestamp is None:
            timestamp = str(time.time_ns() // 1_000_000)
        if nonce is None:
            nonce = _random_alnum(16).decode("ascii")

        # The length counts UTF-8 bytes; the official Python 3 sample counts
        # characters, which breaks on Chinese text.
        message = plaintext.encode("utf-8")
        content = b"".join(
            (
                random_prefix,
                len(message).to_bytes(_LENGTH_SIZE, "big"),
                message,
                self._receive_id,
            )
        )
        encrypt = base64.b64encode(self._encrypt(_pad(content))).decode("ascii")

        return {
            "msg_signature": self.signature(timestamp, nonce, encrypt),
            "timeStamp": timestamp,
            "nonce": nonce,
            "encrypt": encrypt,
        }

    def seal_success(self) -> dict[str, str]:
        """Return the encrypted ``success`` reply DingTalk expects to every push."""
        return self.seal("success")

    def _encrypt(self, padded: bytes) -> bytes:
        encryptor = self._cipher.encryptor()
        return encryptor.update(padded) + encryptor.finalize()

    def _decrypt(self, encrypt: str) -> bytes:
        """Base64-decode strictly and AES-decrypt; padding is left on."""
        ciphertext = _b64decode_strict(encrypt)
        if not ciphertext or len(ciphertext) % 16:
            raise CallbackRejectedError.at("ciphertext_length")

        decryptor = self._cipher.decryptor()
        padded = decryptor.update(ciphertext)
        # CBC without cryptography's own padding holds nothing back, since
        # the input is block-aligned: finalize() only closes the context.
        decryptor.finalize()
        return padded


def _b64decode_strict(encrypt: str) -> bytes:
    try:
        return base64.b64decode(encrypt, validate=True)
    except (ValueError, TypeError):
        pass
    raise CallbackRejectedError.at("base64")


def _decode_utf8(message: memoryview) -> str:
    try:
        return str(message, "utf-8")
    except UnicodeDecodeError:
        pass
    raise CallbackRejectedError.at("utf8")


def _pad(content: bytes) -> bytes:
    size = PAD_BLOCK - len(content) % PAD_BLOCK
    return content + bytes((size,)) * size


def _unpad(padded: bytes) -> memoryview:
    """Strip 32-block PKCS#7 padding, checking the pad byte and every copy."""
    size = padded[-1]
    if not 1 <= size <= PAD_BLOCK or size > len(padded):
        raise CallbackRejectedError.at("padding")
    if padded[-size:] != bytes((size,)) * size:
        raise CallbackRejectedError.at("padding")
    return memoryview(padded)[:-size]


def _split(content: memoryview) -> tuple[memoryview, memoryview]:
    """Split the unpadded plaintext into the message and the receive id."""
    header = _PREFIX_SIZE + _LENGTH_SIZE
    if len(content) < header:
        raise CallbackRejectedError.at("length")

    size = int.from_bytes(content[_PREFIX_SIZE:header], "big")
    if header + size > len(content):
        raise CallbackRejectedError.at("length")
    return content[header : header + size], content[header + size :]


def _random_alnum(size: int) -> bytes:
    """Return ``size`` uniformly random ASCII letters and digits."""
    out = b""
    while len(out) < size:
        out += secrets.token_bytes(size + 8).translate(_ALNUM_TABLE, _ALNUM_OVERFLOW)
    return out[:size]
