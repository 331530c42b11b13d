#!/usr/bin/python3
"""Sign a message with dkimpy (Debian: python3-dkim) for rmilter's interop tests.

usage: /usr/bin/python3 dkimsign.py MESSAGE_FILE SELECTOR DOMAIN KEY_FILE ALGORITHM CANON
ALGORITHM is rsa-sha256 or ed25519-sha256 (the key file then holds the base64 seed);
CANON is e.g. relaxed/simple. Prints the signed message (signature prepended).
"""
import sys

import dkim


def main():
    message_path, selector, domain, key_path, algorithm, canon = sys.argv[1:7]
    with open(message_path, "rb") as f:
        message = f.read()
    with open(key_path, "rb") as f:
        key = f.read()
    header, body = canon.split("/")
    signature = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key,
        canonicalize=(header.encode(), body.encode()),
        signature_algorithm=algorithm.encode(),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    sys.stdout.buffer.write(signature + message)


if __name__ == "__main__":
    main()
