"""The HMAC secret behind every pseudonym: loaded from a key file or the environment.

There is deliberately no default key: without one, pseudonyms could be recomputed by
anyone who has the original identifiers.
"""

from __future__ import annotations

from dicom_deid.keyfile import KEY_ENV, MIN_KEY_BYTES, generate_key_file, load_key, parse_key

__all__ = ["KEY_ENV", "MIN_KEY_BYTES", "generate_key_file", "load_key", "parse_key"]
