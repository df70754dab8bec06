#!/usr/bin/env python3
"""Keys and tokens for the auth rows of bench/run.sh.

jwt.py DIR: writes DIR/jwks.json (an RSA-2048 and a P-256 key) and prints
two lines, an RS256 token and an ES256 token, both valid for a day, for
issuer https://issuer.bench and audience bench (see bench/routes.py).
Needs the `cryptography` package (run.sh installs it with pip if missing).
"""
import base64
import json
import os
import sys
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int, size: int) -> bytes:
    return n.to_bytes(size, "big")


def token(alg: str, kid: str, sign) -> str:
    now = int(time.time())
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    claims = {"iss": "https://issuer.bench", "aud": "bench", "sub": "bench-user",
              "iat": now, "exp": now + 86400}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def main():
    out = sys.argv[1]
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rn = rsa_key.public_key().public_numbers()
    en = ec_key.public_key().public_numbers()
    jwks = {"keys": [
        {"kty": "RSA", "kid": "bench-rs", "alg": "RS256", "use": "sig",
         "n": b64(uint(rn.n, 256)), "e": b64(uint(rn.e, 3))},
        {"kty": "EC", "kid": "bench-es", "alg": "ES256", "use": "sig", "crv": "P-256",
         "x": b64(uint(en.x, 32)), "y": b64(uint(en.y, 32))},
    ]}
    with open(os.path.join(out, "jwks.json"), "w") as f:
        json.dump(jwks, f)

    def rs256(data):
        return rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def es256(data):
        r, s = decode_dss_signature(ec_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return uint(r, 32) + uint(s, 32)

    print(token("RS256", "bench-rs", rs256))
    print(token("ES256", "bench-es", es256))


if __name__ == "__main__":
    main()
