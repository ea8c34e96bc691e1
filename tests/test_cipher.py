"""The event-callback cipher against the protocol's vectors and hostile input.

Vectors come from ``dingtalk-protocol.md`` section 9. Crafted ciphertexts are
built here with raw AES and hashlib, independently of the code under test.
"""

import base64
import hashlib
import logging
import string

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.errors import ConfigError, RequestRejected
from bot.inbound.cipher import CallbackCipher, CallbackRejectedError

V3_PLAINTEXT = (
    '{"EventType":"check_create_suite_url","Random":"LPIdSnlF",'
    '"TestSuiteKey":"suite4xxxxxxxxxxxxxxx"}'
)

# name: (token, aes_key, receive_id, timestamp, nonce, signature, plaintext,
#        encrypt, random prefix, decrypted size, pad byte)
VECTORS = {
    "V1": (
        "mryue",
        "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7",
        "ding6ccabc44d2c8d38b",
        "1608001896814",
        "WL4PK6yA",
        "03044561471240d4a14bb09372dfcfd4fd0e40cb",
        '{"EventType":"check_url"}',
        "0vJiX6vliEpwG3U45CtXqi+m8PXbQRARJ8p8BbDuD1EMTDf0jKpQ79QS93qEk7XHpP6u+oTTrd15"
        "NRPvNvmBKyDCYxxOK+HZeKju4yhELOFchzNukR+t8SB/qk4ROMu3",
        b"l7Y3EcX2CU5w8av3",
        96,
        31,
    ),
    "V2": (
        "tokenxxxx",
        "o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus",
        "dingxxxxxx",
        "1605695694141",
        "WelUQl6bCqcBa2fM",
        "f36f4ba5337d426c7d4bca0dbcb06b3ddc1388fc",
        "success",
        "X1VSe9cTJUMZu60d3kyLYTrBq5578ZRJtteU94wG0Q4Uk6E/wQYeJRIC0/UFW5Wkya1Ihz9oXAdL"
        "lyC9TRaqsQ==",
        b"WelUQl6bCqcBa2fM",
        64,
        27,
    ),
    "V3": (
        "123456",
        "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij",
        "suite4xxxxxxxxxxxxxxx",
        "1445827045067",
        "nEXhMP4r",
        "5a65ceeef9aab2d149439f82dc191dd6c5cbe2c0",
        V3_PLAINTEXT,
        "1a3NBxmCFwkCJvfoQ7WhJHB+iX3qHPsc9JbaDznE1i03peOk1LaOQoRz3+nlyGNhwmwJ3vDMG+Oz"
        "rHMeiZI7gTRWVdUBmfxjZ8Ej23JVYa9VrYeJ5as7XM/ZpulX8NEQis44w53h1qAgnC3PRzM7Zc/D"
        "6Ibr0rgUathB6zRHP8PYrfgnNOS9PhSBdHlegK+AGGanfwjXuQ9+0pZcy0w9lQ==",
        b"hU3bEfGZZewzhG5a",
        160,
        22,
    ),
    "V5": (
        "123456",
        "1234567890123456789012345678901234567890123",
        "dingsnotzck6pm5veliw",
        "1614767836",
        "A7Co0cJLMzIDtMMI",
        "9a95a004dd16f5c307e849b994173f76aa26e5eb",
        "success",
        "YvkvaGe4hQxd3VxRmEty0dVlnCOAqwf56xwTRHDHoOURqhalbmBJQk5FNcRk42Gl5T0YQXZNwpwW"
        "Sm1xAFJ5ZA==",
        b"dICkEDLj0eb6yAbc",
        64,
        17,
    ),
}

TOKEN, AES_KEY, RECEIVE_ID = VECTORS["V1"][:3]
MESSAGE = '{"EventType":"check_url"}'


def aes(aes_key: str) -> Cipher:
    """AES-256-CBC as the protocol derives it: key = b64(key + '='), IV = key[:16]."""
    key = base64.b64decode(aes_key + "=")
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def raw_encrypt(padded: bytes, aes_key: str = AES_KEY) -> str:
    """Encrypt already-padded bytes with no checks, as a holder of the key could."""
    encryptor = aes(aes_key).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def raw_decrypt(encrypt: str, aes_key: str) -> bytes:
    """Decrypt without unpadding, to look at the layout inside a vector."""
    decryptor = aes(aes_key).decryptor()
    return decryptor.update(base64.b64decode(encrypt)) + decryptor.finalize()


def sha1_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """The protocol's signature, computed independently of the code under test."""
    joined = "".join(sorted([token, timestamp, nonce, encrypt]))
    return hashlib.sha1(joined.encode()).hexdigest()


def open_signed(cipher: CallbackCipher, encrypt: str) -> str:
    """Open ``encrypt`` under a correct signature, so later checks are reached."""
    signature = sha1_signature(TOKEN, "1700000000000", "nonce123", encrypt)
    return cipher.open(
        signature=signature,
        timestamp="1700000000000",
        nonce="nonce123",
        encrypt=encrypt,
    )


def layout(
    message: bytes, receive_id: bytes = RECEIVE_ID.encode(), size: int | None = None
) -> bytes:
    """The unpadded plaintext: prefix, big-endian length, message, receive id."""
    length = len(message) if size is None else size
    return b"A" * 16 + length.to_bytes(4, "big") + message + receive_id


def pad32(content: bytes) -> bytes:
    """Correct PKCS#7 padding to a 32-byte block."""
    size = 32 - len(content) % 32
    return content + bytes([size]) * size


def assert_uniform_rejection(error: pytest.ExceptionInfo) -> None:
    """Every failure must look the same to the caller and chain nothing."""
    assert type(error.value) is CallbackRejectedError
    assert isinstance(error.value, RequestRejected)
    assert error.value.reason == "invalid callback" == str(error.value)
    assert error.value.status == 401
    assert error.value.__context__ is None and error.value.__cause__ is None


@pytest.fixture
def cipher() -> CallbackCipher:
    """The V1 app's cipher."""
    return CallbackCipher(TOKEN, AES_KEY, RECEIVE_ID)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vectors_open_to_expected_plaintext(name: str) -> None:
    """V1, V2, V3 and V5 pass the signature check and open to their plaintext."""
    token, key, rid, ts, nonce, sig, plaintext, encrypt = VECTORS[name][:8]
    cipher = CallbackCipher(token, key, rid)

    assert cipher.signature(ts, nonce, encrypt) == sig
    assert cipher.open(signature=sig, timestamp=ts, nonce=nonce, encrypt=encrypt) == (
        plaintext
    )


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_internals_match_the_published_table(name: str) -> None:
    """Each vector's prefix, size, pad byte and length field are as tabled."""
    _, key, rid, _, _, _, plaintext, encrypt, prefix, size, pad = VECTORS[name]
    decrypted = raw_decrypt(encrypt, key)

    assert decrypted[:16] == prefix
    assert len(decrypted) == size
    assert decrypted[-pad:] == bytes([pad]) * pad
    assert int.from_bytes(decrypted[16:20], "big") == len(plaintext.encode())
    assert decrypted[20:-pad] == plaintext.encode() + rid.encode()


def test_v4_sealing_reproduces_ciphertext_and_signature() -> None:
    """Sealing V3's plaintext with a fixed prefix gives V4's exact output."""
    cipher = CallbackCipher(*VECTORS["V3"][:3])

    reply = cipher.seal(
        V3_PLAINTEXT,
        timestamp="1445827045067",
        nonce="nEXhMP4r",
        random_prefix=b"1234567890123456",
    )

    assert reply == {
        "msg_signature": "bcf6dcefa4ce2dbaf7b0666c7264d46fd9aad4bd",
        "timeStamp": "1445827045067",
        "nonce": "nEXhMP4r",
        "encrypt": "5DJFWzjRNOQk+5GSZxW+VrFMDWCIidPjEjg3//gm5x556BedVi62rDj1F9uXU97a"
        "4jw1R4FACUv9RCpoDobNqxhxRB2YtW901k4KHbP1/wpFJ3xdLG0n0A8U1VhENg80zKJd+YROR0YM"
        "Gum4WYuoXJ6J98vt0ihYeIFoapNddLML5MyNAGM9saSpkouDMSvD+iU14i7V8ix1ia1Tb9ogog==",
    }


def test_a6_key_and_iv_derivation_matches_raw_aes() -> None:
    """The key is b64decode(key + '=') with IV = its first 16 bytes (A6, V1)."""
    raw = b"5p7b4jXMWUshiBCosucc111esssuite4xxxxxxxxxxxxxxx221"
    padded = raw + bytes([14]) * 14

    assert raw_encrypt(padded, "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij") == (
        "DwCJ9BMxu4r+VTe9TD+AWc1yfxqs7d2YgepFe4XruMgh1+6pTjCCq4nqAM6StRcafOx5a1Ofw"
        "mX3ckSBifatlA=="
    )
    assert base64.b64decode(AES_KEY + "=").hex() == (
        "62e7b411f74de7dd3473571ee5c7fa035e7673adc30ded7cd3c6bad1ce5e71de"
    )


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=300))
@example(text="")
@example(text="新同事加入：张三 ✓ 𝄞")
def test_sealed_text_opens_to_the_same_text(text: str) -> None:
    """Whatever is sealed, including Chinese and astral text, opens unchanged."""
    cipher = CallbackCipher(TOKEN, AES_KEY, RECEIVE_ID)
    reply = cipher.seal(text)

    opened = cipher.open(
        signature=reply["msg_signature"],
        timestamp=reply["timeStamp"],
        nonce=reply["nonce"],
        encrypt=reply["encrypt"],
    )

    assert opened == text


def test_seal_counts_the_length_in_utf8_bytes_and_pads_to_32(
    cipher: CallbackCipher,
) -> None:
    """The length field counts bytes, not characters, and padding fills to 32."""
    text = "部署完成"
    decrypted = raw_decrypt(cipher.seal(text)["encrypt"], AES_KEY)

    assert int.from_bytes(decrypted[16:20], "big") == len(text.encode()) == 12
    assert len(decrypted) % 32 == 0
    content = 16 + 4 + 12 + len(RECEIVE_ID)
    assert decrypted[-1] == 32 - content % 32


def test_success_reply_has_exactly_four_fresh_keys(cipher: CallbackCipher) -> None:
    """The reply has DingTalk's four keys, a ms timestamp and fresh randomness."""
    first, second = cipher.seal_success(), cipher.seal_success()

    assert set(first) == {"msg_signature", "timeStamp", "nonce", "encrypt"}
    assert first["timeStamp"].isdigit() and len(first["timeStamp"]) == 13
    assert len(first["nonce"]) == 16
    assert set(first["nonce"]) <= set(string.ascii_letters + string.digits)
    assert first["nonce"] != second["nonce"]
    assert "\n" not in first["encrypt"]
    assert raw_decrypt(first["encrypt"], AES_KEY)[:16] != (
        raw_decrypt(second["encrypt"], AES_KEY)[:16]
    )
    assert first["msg_signature"] == sha1_signature(
        TOKEN, first["timeStamp"], first["nonce"], first["encrypt"]
    )
    assert open_signed(cipher, first["encrypt"]) == "success"


def test_seal_refuses_a_prefix_that_is_not_16_bytes(cipher: CallbackCipher) -> None:
    """A wrong-sized fixed prefix is a programming error, not a silent mis-layout."""
    with pytest.raises(ValueError):
        cipher.seal("x", random_prefix=b"short")


@pytest.mark.parametrize(
    "aes_key",
    [
        AES_KEY[:42],
        AES_KEY + "a",
        AES_KEY[:42] + "+",
        AES_KEY[:42] + "é",
        "",
    ],
)
def test_malformed_aes_key_is_a_config_error_naming_the_setting(aes_key: str) -> None:
    """A key that is not 43 letters/digits stops start-up and is not echoed."""
    with pytest.raises(ConfigError) as error:
        CallbackCipher(TOKEN, aes_key, RECEIVE_ID)

    assert error.value.setting == "DINGTALK_CALLBACK_AES_KEY"
    assert "DINGTALK_CALLBACK_AES_KEY" in str(error.value)
    if aes_key:
        assert aes_key not in str(error.value)


def test_empty_token_or_receive_id_is_a_config_error() -> None:
    """An empty token or receive id would make every check meaningless."""
    with pytest.raises(ConfigError):
        CallbackCipher("", AES_KEY, RECEIVE_ID)
    with pytest.raises(ConfigError):
        CallbackCipher(TOKEN, AES_KEY, "")


def test_repr_shows_neither_token_nor_key() -> None:
    """The repr is safe to log: receive id only."""
    text = repr(CallbackCipher("tok3nSecret", AES_KEY, RECEIVE_ID))

    assert "tok3nSecret" not in text and AES_KEY not in text
    assert RECEIVE_ID in text


def test_forged_signature_is_rejected(cipher: CallbackCipher) -> None:
    """A signature that is not ours over these four strings is refused."""
    _, _, _, ts, nonce, sig, _, encrypt = VECTORS["V1"][:8]
    for forged in ("0" * 40, sig.upper(), sig[:-1], "", "签名"):
        with pytest.raises(CallbackRejectedError) as error:
            cipher.open(signature=forged, timestamp=ts, nonce=nonce, encrypt=encrypt)
        assert_uniform_rejection(error)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_bit_flip_in_the_ciphertext_is_rejected(data: st.DataObject) -> None:
    """Flipping any bit of V1's ciphertext breaks its signature."""
    _, _, _, ts, nonce, sig, _, encrypt = VECTORS["V1"][:8]
    raw = bytearray(base64.b64decode(encrypt))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= 1 << data.draw(st.integers(0, 7))
    tampered = base64.b64encode(raw).decode()
    cipher = CallbackCipher(TOKEN, AES_KEY, RECEIVE_ID)

    with pytest.raises(CallbackRejectedError) as error:
        cipher.open(signature=sig, timestamp=ts, nonce=nonce, encrypt=tampered)
    assert_uniform_rejection(error)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_resigned_flip_in_the_last_block_fails_padding_or_receive_id(
    data: st.DataObject,
) -> None:
    """With a valid signature, a garbled last block is still caught after decryption."""
    raw = bytearray(base64.b64decode(VECTORS["V1"][7]))
    position = data.draw(st.integers(len(raw) - 16, len(raw) - 1))
    raw[position] ^= 1 << data.draw(st.integers(0, 7))
    cipher = CallbackCipher(TOKEN, AES_KEY, RECEIVE_ID)

    with pytest.raises(CallbackRejectedError) as error:
        open_signed(cipher, base64.b64encode(raw).decode())
    assert_uniform_rejection(error)


def _with_padding(pad: bytes) -> bytes:
    """MESSAGE laid out and followed by ``pad``, stretched to a 16-byte multiple."""
    message = MESSAGE.encode()
    while (len(layout(message)) + len(pad)) % 16:
        message += b" "
    return layout(message) + pad


@pytest.mark.parametrize(
    "pad",
    [b"\x00", bytes([33]) * 33, bytes([1, 5, 5, 5, 5]), bytes([4, 4, 4, 9])],
    ids=["zero", "thirty-three", "inconsistent", "inconsistent-last"],
)
def test_bad_padding_is_rejected(
    cipher: CallbackCipher, pad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Pad bytes of 0, 33 or disagreeing values are refused at the padding step."""
    encrypt = raw_encrypt(_with_padding(pad))
    caplog.set_level(logging.DEBUG, logger="bot.inbound.cipher")

    with pytest.raises(CallbackRejectedError) as error:
        open_signed(cipher, encrypt)

    assert_uniform_rejection(error)
    assert "padding" in caplog.text


def test_well_formed_crafted_plaintext_opens(cipher: CallbackCipher) -> None:
    """The crafting helpers themselves produce what the cipher accepts."""
    assert open_signed(cipher, raw_encrypt(pad32(layout(MESSAGE.encode())))) == MESSAGE


@pytest.mark.parametrize(
    ("padded", "step"),
    [
        (pad32(layout(MESSAGE.encode(), size=len(MESSAGE) + 100)), "length"),
        (pad32(layout(MESSAGE.encode(), size=2**32 - 1)), "length"),
        (pad32(b"A" * 10), "length"),
        (pad32(layout(MESSAGE.encode(), receive_id=b"dingSomeoneElse")), "receive_id"),
        (pad32(layout(MESSAGE.encode(), receive_id=b"")), "receive_id"),
        (pad32(layout(b"\xff\xfe{}")), "utf8"),
    ],
    ids=[
        "length-beyond-data",
        "length-max",
        "shorter-than-header",
        "wrong-receive-id",
        "missing-receive-id",
        "not-utf8",
    ],
)
def test_bad_layout_inside_a_signed_ciphertext_is_rejected(
    cipher: CallbackCipher,
    padded: bytes,
    step: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bad length field, receive id or encoding is refused at its own step."""
    caplog.set_level(logging.DEBUG, logger="bot.inbound.cipher")

    with pytest.raises(CallbackRejectedError) as error:
        open_signed(cipher, raw_encrypt(padded))

    assert_uniform_rejection(error)
    assert f"step {step}" in caplog.text


def test_vector_for_another_receive_id_is_rejected() -> None:
    """V1 opened by a cipher expecting another receive id is refused."""
    _, _, _, ts, nonce, sig, _, encrypt = VECTORS["V1"][:8]
    cipher = CallbackCipher(TOKEN, AES_KEY, "dingAnotherApp")

    with pytest.raises(CallbackRejectedError) as error:
        cipher.open(signature=sig, timestamp=ts, nonce=nonce, encrypt=encrypt)
    assert_uniform_rejection(error)


@pytest.mark.parametrize(
    "encrypt",
    [
        "",
        "not base64!",
        "QUJD",
        "QUJDREVGR0hJSktMTU5PUFFSUw==",
        base64.b64encode(b"x" * 16).decode()[:-2],
        "ＡＢＣＤ",
        base64.encodebytes(b"\x00" * 64).decode(),
    ],
    ids=[
        "empty",
        "bad-alphabet",
        "three-bytes",
        "not-multiple-of-16",
        "missing-padding",
        "non-ascii",
        "line-broken",
    ],
)
def test_malformed_ciphertext_is_rejected(cipher: CallbackCipher, encrypt: str) -> None:
    """Bad base64 or a length that is not a positive multiple of 16 is refused."""
    with pytest.raises(CallbackRejectedError) as error:
        open_signed(cipher, encrypt)
    assert_uniform_rejection(error)


def test_failed_open_logs_no_secret_or_plaintext(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG a rejection logs a step label, never the token, key or plaintext."""
    token, secret_text = "T0kenVerySecret", "salary-of-zhangsan-4242"
    cipher = CallbackCipher(token, AES_KEY, RECEIVE_ID)
    other = CallbackCipher(token, AES_KEY, "dingOtherReceiver")
    reply = other.seal(secret_text)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(CallbackRejectedError) as error:
        cipher.open(
            signature=reply["msg_signature"],
            timestamp=reply["timeStamp"],
            nonce=reply["nonce"],
            encrypt=reply["encrypt"],
        )

    assert "receive_id" in caplog.text
    for secret in (token, AES_KEY, secret_text, reply["msg_signature"]):
        assert secret not in caplog.text
        assert secret not in repr(error.value)
