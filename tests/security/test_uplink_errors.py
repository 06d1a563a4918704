"""Connection failures in plain words: each kind of TLS or login failure names what to check,
also when aiomqtt re-raises it as a bare MqttError, and never carries a credential."""

from __future__ import annotations

import ssl

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gateway.sync.uplink import PinMismatch, cert_pins, explain

NOT_AUTHORIZED = ReasonCode(PacketTypes.CONNACK, identifier=135)  # type: ignore[no-untyped-call]


def wrapped(inner: BaseException) -> aiomqtt.MqttError:
    """What aiomqtt raises: ``raise MqttError(str(exc)) from None`` inside an except block."""
    try:
        try:
            raise inner
        except OSError as exc:
            raise aiomqtt.MqttError(str(exc)) from None
    except aiomqtt.MqttError as e:
        return e


def verify_error(message: str) -> ssl.SSLCertVerificationError:
    err = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    err.verify_message = message
    return err


@pytest.mark.parametrize(
    ("err", "logged", "expected"),
    [
        (verify_error("unable to get local issuer certificate"), None, "check [broker] ca_file"),
        (PinMismatch("the broker's certificate matches none of pin_sha256"), None, "pin_sha256"),
        (
            TimeoutError(),
            "failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] "
            "tlsv13 alert certificate required",
            "set cert_file and key_file",
        ),
        (
            ssl.SSLError(1, "[SSL: TLSV13_ALERT_UNKNOWN_CA] tlsv13 alert unknown ca"),
            None,
            "refused our client certificate",
        ),
        (aiomqtt.MqttCodeError(NOT_AUTHORIZED, "Connection refused"), None, "refused the login"),
        (ConnectionResetError(104, "Connection reset by peer"), None, "client certificate"),
        (aiomqtt.MqttError("Operation timed out"), None, "Operation timed out"),
    ],
)
def test_failures_name_what_to_check(err: BaseException, logged: str | None, expected: str) -> None:
    assert expected in explain(err, logged)
    if isinstance(err, OSError):
        assert explain(wrapped(err), logged) == explain(err, logged)


def test_pins_cover_the_certificate_and_its_public_key(tmp_path: object) -> None:
    import datetime as dt
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    der = cert.public_bytes(ser.Encoding.DER)
    spki = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    assert cert_pins(der) == {hashlib.sha256(der).hexdigest(), hashlib.sha256(spki).hexdigest()}
    assert cert_pins(b"not a certificate") == {hashlib.sha256(b"not a certificate").hexdigest()}
