"""Coverage-guided fuzzing of the response parser (atheris / libFuzzer).

Any input must give a token or a typed error (TokenRequestError, CredentialUnavailableError),
never another exception, and no error message may quote a token-shaped string.

    python tests/fuzz/fuzz_response_parser.py -max_total_time=20      # what CI runs
    python tests/fuzz/fuzz_response_parser.py -runs=1000000 corpus/   # longer, keeping a corpus
"""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from legacy_msi_credential._errors import CredentialUnavailableError, TokenRequestError
    from legacy_msi_credential._protocol import parse_response

NOW = 1_700_000_000.0
FIELDS = (
    "access_token",
    "expires_in",
    "expires_on",
    "not_before",
    "token_type",
    "resource",
    "error",
    "error_description",
)
SECRET = "eyJhbGciOiJSUzI1NiJ9.eyJzZWNyZXQiOiJ4In0.c2lnbmF0dXJl"


def _value(data: atheris.FuzzedDataProvider) -> object:
    kind = data.ConsumeIntInRange(0, 6)
    if kind == 0:
        return data.ConsumeUnicodeNoSurrogates(40)
    if kind == 1:
        return data.ConsumeInt(8)
    if kind == 2:
        return data.ConsumeFloat()
    if kind == 3:
        return str(data.ConsumeIntInRange(-(10**12), 10**12))
    if kind == 4:
        return None
    if kind == 5:
        return [data.ConsumeUnicodeNoSurrogates(5)]
    return SECRET


def test_one_input(raw: bytes) -> None:
    data = atheris.FuzzedDataProvider(raw)
    status = data.PickValueInList([200, 200, 400, 401, 404, 410, 429, 500, 503, 302])
    if data.ConsumeBool():
        document = {name: _value(data) for name in FIELDS if data.ConsumeBool()}
        body = json.dumps(document, allow_nan=True).encode()
    else:
        body = data.ConsumeBytes(data.remaining_bytes())
    try:
        result = parse_response(
            status, "application/json", body, now=NOW, url="http://127.0.0.1:1/oauth2/token", resource="r"
        )
    except (TokenRequestError, CredentialUnavailableError) as error:
        if SECRET in error.message:
            raise AssertionError("a token-shaped string reached an error message") from None
        return
    if status != 200 or not result.token or result.expires_on <= NOW:
        raise AssertionError(f"accepted an unusable answer: {status} {result!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
