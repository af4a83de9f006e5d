"""The official SDKs over HTTPS: Tollgate serving `[server.tls]` with a certificate from a CA the
test makes (the `cryptography` package), the SDKs trusting that CA only. A call and a stream with
each SDK are answered as over plain HTTP and recorded the same; a client that does not trust the
CA is refused, and plain HTTP to the port is told to use https://."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import httpx2
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google import genai
from google.genai import types

from conftest import running_gateway
from harness import CHUNKS, answer, http, prompt_tokens
from test_genai_sdk import assert_row as assert_gemini_row
from test_openai_sdk import assert_row as assert_openai_row

PROMPT = "Say hello over TLS please"  # 5 words


def make_certificates(d):
    """A CA, and a certificate for 127.0.0.1 and localhost signed by it, as PEM files in `d`:
    (ca.pem, cert.pem holding the certificate then the CA, key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tollgate SDK test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tollgate")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = d / "ca.pem", d / "cert.pem", d / "key.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    cert_file.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_file, cert_file, key_file


@pytest.fixture(scope="module")
def tls_gateway(fake, tmp_path_factory):
    d = tmp_path_factory.mktemp("tollgate-tls")
    ca_file, cert_file, key_file = make_certificates(d)
    # Trusting this CA only: not the system's roots, not $SSL_CERT_FILE.
    context = ssl.create_default_context(cafile=str(ca_file))
    with running_gateway(fake, d, tls=(cert_file, key_file, context)) as gw:
        gw.ssl_context = context
        yield gw
    log = gw.proc.stderr(tail=0)
    key_body = [line for line in key_file.read_text().splitlines() if not line.startswith("-----")]
    assert key_body and not any(line in log for line in key_body), "key material in the gateway's log"


def openai_client(gw, jwt: str) -> openai.OpenAI:
    assert gw.openai_base.startswith("https://")
    return openai.OpenAI(base_url=gw.openai_base, api_key=jwt, max_retries=0, timeout=15,
                         http_client=httpx2.Client(verify=gw.ssl_context))


def genai_client(gw, jwt: str) -> genai.Client:
    assert gw.gemini_base.startswith("https://")
    opts = types.HttpOptions(base_url=gw.gemini_base, timeout=15_000,
                             retry_options=types.HttpRetryOptions(attempts=1),
                             client_args={"verify": gw.ssl_context})
    return genai.Client(api_key=jwt, http_options=opts)


def test_openai_chat_over_https(tls_gateway, user):
    c = openai_client(tls_gateway, tls_gateway.token(user))
    r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    p = prompt_tokens(PROMPT)
    assert r.choices[0].message.content == answer()
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (p, CHUNKS)
    [row] = tls_gateway.rows(user, 1)
    assert_openai_row(row, user=user, model="gpt-4o-mini", endpoint="chat.completions", streamed=False,
                      input_tokens=p, output_tokens=CHUNKS)


def test_openai_chat_stream_over_https(tls_gateway, user):
    c = openai_client(tls_gateway, tls_gateway.token(user))
    chunks = list(c.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True))
    assert len(chunks) == 1 + CHUNKS + 1, "role chunk, content chunks, finish chunk"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == answer()
    [row] = tls_gateway.rows(user, 1)
    assert_openai_row(row, user=user, model="gpt-4o-mini", endpoint="chat.completions", streamed=True,
                      input_tokens=prompt_tokens(PROMPT), output_tokens=CHUNKS)


def test_genai_generate_content_over_https(tls_gateway, user):
    c = genai_client(tls_gateway, tls_gateway.token(user))
    r = c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    p = prompt_tokens(PROMPT)
    assert r.text == answer()
    assert (r.usage_metadata.prompt_token_count, r.usage_metadata.candidates_token_count) == (p, CHUNKS)
    [row] = tls_gateway.rows(user, 1)
    assert_gemini_row(row, user=user, model="gemini-2.5-flash", endpoint="generateContent", streamed=False,
                      input_tokens=p, output_tokens=CHUNKS)


def test_genai_stream_over_https(tls_gateway, user):
    c = genai_client(tls_gateway, tls_gateway.token(user))
    chunks = list(c.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT))
    assert "".join(ch.text or "" for ch in chunks) == answer()
    p = prompt_tokens(PROMPT)
    assert chunks[-1].usage_metadata.candidates_token_count == CHUNKS
    [row] = tls_gateway.rows(user, 1)
    assert_gemini_row(row, user=user, model="gemini-2.5-flash", endpoint="streamGenerateContent",
                      streamed=True, input_tokens=p, output_tokens=CHUNKS)


def test_untrusted_clients_and_plain_http_are_refused(tls_gateway, user):
    # A client with the default roots does not trust the test's CA: the handshake fails.
    c = openai.OpenAI(base_url=tls_gateway.openai_base, api_key=tls_gateway.token(user), max_retries=0,
                      timeout=15, http_client=httpx2.Client(verify=ssl.create_default_context()))
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    # Plain HTTP to the HTTPS port: a plain 400 that says what to do.
    status, _, body = http("GET", tls_gateway.url.replace("https://", "http://") + "/healthz")
    assert status == 400 and b"https://" in body, (status, body)
    # Over HTTPS it answers.
    status, _, _ = http("GET", f"{tls_gateway.url}/healthz", context=tls_gateway.ssl_context)
    assert status == 200
    assert tls_gateway.rows(user, 0) == []
