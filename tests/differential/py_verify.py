#!/usr/bin/env python3
"""Differential oracle: verifies WebAuthn ceremony responses with py_webauthn.

Usage: py_verify.py CASES.json

CASES.json is a JSON list of objects:
  id                          any JSON value, echoed back
  ceremony                    "registration" | "authentication"
  credential                  RegistrationResponseJSON / AuthenticationResponseJSON
  expected_challenge_b64url   the challenge the relying party issued
  expected_origins            list of allowed origins
  expected_rp_id              RP id
  require_uv                  bool
  supported_algs              list of COSE algorithm ids the RP offered (registration)
  public_key_b64url           stored COSE_Key (authentication)
  sign_count                  stored signature counter (authentication)

Prints a JSON list of verdicts, one per case, in order:
  {"id": ..., "ok": true} or {"id": ..., "ok": false, "error": "ExceptionClass", "message": "..."}

Exits 3 (and prints nothing on stdout) when the `webauthn` package is missing, so the caller
can tell "not installed" from a verdict.
"""

import json
import sys

try:
    from webauthn import verify_authentication_response, verify_registration_response
    from webauthn.helpers import base64url_to_bytes
    from webauthn.helpers.cose import COSEAlgorithmIdentifier
except ImportError as exc:  # pragma: no cover - environment check
    print(f"py_webauthn is not installed: {exc}", file=sys.stderr)
    sys.exit(3)


# The algorithms this py_webauthn knows (it has no ES384, for one).
KNOWN_ALGS = {a.value for a in COSEAlgorithmIdentifier}


def verify(case):
    challenge = base64url_to_bytes(case["expected_challenge_b64url"])
    if case["ceremony"] == "registration":
        verify_registration_response(
            credential=case["credential"],
            expected_challenge=challenge,
            expected_rp_id=case["expected_rp_id"],
            expected_origin=case["expected_origins"],
            require_user_verification=case["require_uv"],
            supported_pub_key_algs=[
                COSEAlgorithmIdentifier(a)
                for a in case["supported_algs"]
                if a in KNOWN_ALGS
            ],
        )
    else:
        verify_authentication_response(
            credential=case["credential"],
            expected_challenge=challenge,
            expected_rp_id=case["expected_rp_id"],
            expected_origin=case["expected_origins"],
            credential_public_key=base64url_to_bytes(case["public_key_b64url"]),
            credential_current_sign_count=case["sign_count"],
            require_user_verification=case["require_uv"],
        )


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    verdicts = []
    for case in cases:
        try:
            verify(case)
            verdicts.append({"id": case["id"], "ok": True})
        except Exception as exc:  # every refusal, whatever its class, is a verdict
            verdicts.append(
                {
                    "id": case["id"],
                    "ok": False,
                    "error": type(exc).__name__,
                    "message": str(exc)[:300],
                }
            )
    json.dump(verdicts, sys.stdout)


if __name__ == "__main__":
    main()
