#!/usr/bin/env python3
"""Ceremony verification rate of py_webauthn (PyPI `webauthn`) and of a raw
P-256 ECDSA verify through OpenSSL (PyPI `cryptography`), on one core.

    py_verify.py SAMPLE.json {auth|reg|raw} SECONDS

Prints one JSON line: ops, wall seconds, CPU seconds (all threads of the
process), and the rates per wall second and per CPU second. SAMPLE is
crates/webauthn/tests/data/chromium-virtual-authenticator-sample.json: the
same registration and assertion every implementation verifies.
"""
import base64
import hashlib
import json
import sys
import time


def b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def main():
    sample_path, what, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sample = json.load(open(sample_path))
    origin, rp_id = sample["origin"], sample["rpId"]
    reg_json = json.dumps(sample["reg"])
    auth_json = json.dumps(sample["auth"])

    from webauthn import verify_authentication_response, verify_registration_response

    def reg():
        return verify_registration_response(
            credential=reg_json,
            expected_challenge=b64(sample["regChallenge"]),
            expected_origin=origin,
            expected_rp_id=rp_id,
            require_user_verification=True,
        )

    cose_key = reg().credential_public_key

    def auth():
        v = verify_authentication_response(
            credential=auth_json,
            expected_challenge=b64(sample["authChallenge"]),
            expected_rp_id=rp_id,
            expected_origin=origin,
            credential_public_key=cose_key,
            credential_current_sign_count=1,
            require_user_verification=True,
        )
        assert v.new_sign_count == 2

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pub = serialization.load_der_public_key(b64(sample["reg"]["response"]["publicKey"]))
    r = sample["auth"]["response"]
    signed = b64(r["authenticatorData"]) + hashlib.sha256(b64(r["clientDataJSON"])).digest()
    sig = b64(r["signature"])
    algo = ec.ECDSA(hashes.SHA256())

    def raw():
        # The physical limit: SHA-256 of the signed bytes plus one ECDSA verify.
        pub.verify(sig, signed, algo)

    fn = {"auth": auth, "reg": reg, "raw": raw}[what]
    fn()  # once outside the clock: imports, caches
    ops = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        ops += 50
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - start
    cpu = time.process_time() - cpu0
    print(json.dumps({"ops": ops, "seconds": elapsed, "cpu_seconds": cpu,
                      "per_sec": ops / elapsed, "per_cpu_sec": ops / cpu}))


if __name__ == "__main__":
    main()
