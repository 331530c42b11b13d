#!/usr/bin/python3
"""Independent DKIM check for rmilter's end-to-end tests, using dkimpy (Debian: python3-dkim).

usage: /usr/bin/python3 dkimverify.py MESSAGE_FILE DNS_JSON_FILE

DNS_JSON_FILE holds {"name": "TXT value", ...}; DNS queries are answered from it only (never
live DNS), names compared without a trailing dot and case-insensitively. Prints a JSON list
with one object per DKIM-Signature header field, in message order:
  {"d": ..., "s": ..., "a": ..., "pass": true/false, "detail": "...", "queried": [...]}
Exit status 0 whenever the message could be read, whatever the results.
"""
import json
import logging
import sys

import dkim
from dkim.util import parse_tag_value


class Collect(logging.Handler):
    """Keeps dkimpy's log lines so a failing signature says why."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main():
    with open(sys.argv[1], "rb") as f:
        message = f.read()
    with open(sys.argv[2], "rb") as f:
        records = {k.lower().rstrip("."): v for k, v in json.load(f).items()}

    count = sum(1 for name, _ in dkim.DKIM(message).headers if name.lower() == b"dkim-signature")
    results = []
    for idx in range(count):
        queried = []

        def dnsfunc(name, timeout=5):
            key = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
            queried.append(key)
            value = records.get(key)
            return value.encode() if value is not None else None

        logger = logging.getLogger("dkimverify.%d" % idx)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        collect = Collect()
        logger.addHandler(collect)
        verifier = dkim.DKIM(message, logger=logger)
        sig_value = [v for n, v in verifier.headers if n.lower() == b"dkim-signature"][idx]
        try:
            tags = parse_tag_value(sig_value)
        except Exception as e:  # a malformed tag list is a result, not a crash
            tags = {}
            collect.lines.append("unparsable tag list: %s" % e)
        try:
            ok = bool(verifier.verify(idx=idx, dnsfunc=dnsfunc))
        except Exception as e:
            ok = False
            collect.lines.append("exception: %r" % e)
        text = lambda k: tags.get(k, b"").decode("ascii", "replace")
        results.append({
            "d": text(b"d"),
            "s": text(b"s"),
            "a": text(b"a"),
            "pass": ok,
            # the last lines carry the reason ("body hash mismatch", "signature verification failed")
            "detail": " | ".join(collect.lines[-4:]),
            "queried": queried,
        })
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
