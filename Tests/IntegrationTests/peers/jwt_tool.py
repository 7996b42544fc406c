"""Test keys and JWTs made with the openssl CLI (no third-party Python packages).

  jwt_tool.py keys DIR           -> DIR/rsa.pem, DIR/ec.pem, DIR/other.pem; prints the JWKS (rsa + ec)
  jwt_tool.py token DIR ALG KEY CLAIMS_JSON [HEADER_JSON]
                                 -> prints header.payload.signature, signed with DIR/KEY.pem
"""
import base64, json, subprocess, sys, os


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, check=True, capture_output=True).stdout


def keys(d):
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f"{d}/rsa.pem")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f"{d}/other.pem")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{d}/ec.pem")
    modulus = openssl("rsa", "-in", f"{d}/rsa.pem", "-noout", "-modulus").decode().strip().split("=", 1)[1]
    ec_der = openssl("pkey", "-in", f"{d}/ec.pem", "-pubout", "-outform", "DER")
    point = ec_der[-64:]
    jwks = {"keys": [
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "n": b64(bytes.fromhex(modulus)), "e": "AQAB"},
        {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(point[:32]), "y": b64(point[32:])},
    ]}
    print(json.dumps(jwks))


def der_to_raw(sig):
    # ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } -> r||s, 32 bytes each
    assert sig[0] == 0x30
    i = 2 if sig[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert sig[i] == 0x02
        n = sig[i + 1]
        v = sig[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        i += 2 + n
    return out


def token(d, alg, key, claims, header=None):
    head = json.loads(header) if header else {"alg": alg, "typ": "JWT"}
    signing_input = (b64(json.dumps(head).encode()) + "." + b64(claims.encode())).encode()
    sig = openssl("dgst", "-sha256", "-sign", f"{d}/{key}.pem", data=signing_input)
    if alg == "ES256":
        sig = der_to_raw(sig)
    print(signing_input.decode() + "." + b64(sig))


if __name__ == "__main__":
    if sys.argv[1] == "keys":
        keys(sys.argv[2])
    else:
        token(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6] if len(sys.argv) > 6 else None)
