#!/usr/bin/env python3
"""Build the fuzz seed corpus (fuzz/corpus/<target>/) from the shared test
data (tests/data/third-party, third-party: see fuzz/corpus/README.md for origins
and licenses) and rmilter's own test files (tests/corpus, config/,
tests/config/bad). Each target's input format is documented in
tests/properties/checks.rs (the input_* functions).

Seeds are written as seed-<origin>-<name>; files named regress-* (crash
inputs found by fuzzing) are kept. Run from anywhere:

    python3 fuzz/make_corpus.py [TESTDATA_DIR]

Needs PyYAML for the OpenSPF suite (seeds for the spf target).
"""

import os
import re
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests", "data", "third-party")
OUT = os.path.join(REPO, "fuzz", "corpus")

TARGETS = ["from_gate", "header_assembly", "authserv_id", "authres_render", "spf",
           "dkim_signature", "dkim_key", "dmarc_record", "config", "signer"]


def read(*path):
    with open(os.path.join(*path), "rb") as f:
        return f.read()


def clean(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


seeds = {t: {} for t in TARGETS}


def add(target, origin, name, data):
    seeds[target][f"seed-{origin}-{clean(name)}"] = data


def split_message(raw):
    """(fields in milter form, body) of a raw message; see milter_message()."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, body = raw[:crlf], raw[crlf + 4:]
    elif lf >= 0:
        head, body = raw[:lf], raw[lf + 2:]
    else:
        head, body = raw, b""
    fields = []
    for line in head.split(b"\n"):
        line = line[:-1] if line.endswith(b"\r") else line
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1] += b"\n" + line
            continue
        if b":" in line[1:]:
            i = line.index(b":")
            fields.append([line[:i], line[i + 1:]])
    return fields, body


def nul(fields):
    return b"\0".join(n + b"\0" + v for n, v in fields)


# Messages: (origin, name, raw bytes).
messages = []
for d in ["from-gate", "results"]:
    base = os.path.join(REPO, "tests", "corpus", d)
    for f in sorted(os.listdir(base)):
        if f.endswith(".eml"):
            messages.append(("rmilter", f"{d}-{f[:-4]}", read(base, f)))
# The case corpus (tests/corpus/cases/<case>/{case.toml,message.eml,zone.txt}).
import tomllib
cases_dir = os.path.join(REPO, "tests", "corpus", "cases")
cases = sorted(os.listdir(cases_dir)) if os.path.isdir(cases_dir) else []
case_zones = []
for c in cases:
    d = os.path.join(cases_dir, c)
    if os.path.exists(os.path.join(d, "message.eml")):
        messages.append(("rmilter", f"case-{c}", read(d, "message.eml")))
    if os.path.exists(os.path.join(d, "zone.txt")):
        with open(os.path.join(d, "case.toml"), "rb") as f:
            env = tomllib.load(f).get("envelope", {})
        case_zones.append((c, env, read(d, "zone.txt").decode()))
dkimpy = os.path.join(TESTDATA, "dkim", "dkimpy")
for f in sorted(os.listdir(dkimpy)):
    if f.endswith((".msg", ".message")) or ".message." in f:
        messages.append(("dkimpy", f, read(dkimpy, f)))
messages.append(("rfc8463", "appendix-a", read(TESTDATA, "dkim", "rfc8463", "rfc8463-appendix-a.eml")))
# mail-auth files: `name value` DNS lines, a blank line, the message.
key_records = []
for origin, path in [("mail-auth", ("real-world", "mail-auth-dkim-002.txt")),
                     ("mail-auth", ("arc", "mail-auth-arc-002.txt"))]:
    raw = read(TESTDATA, *path)
    dns, _, msg = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    msg = msg.replace(b"\n", b"\r\n")
    messages.append((origin, path[-1], msg))
    for line in dns.split(b"\n"):
        if b" " in line:
            key_records.append((origin, line.split(b" ", 1)[0].decode(), line.split(b" ", 1)[1]))
for line in read(TESTDATA, "dkim", "rfc8463", "rfc8463-appendix-a.dns.txt").splitlines():
    if b" " in line:
        key_records.append(("rfc8463", line.split(b" ", 1)[0].decode(), line.split(b" ", 1)[1]))
for f in sorted(os.listdir(dkimpy)):
    if f.endswith((".txt", ".dns")):
        key_records.append(("dkimpy", f, read(dkimpy, f).strip()))

for origin, name, raw in messages:
    fields, body = split_message(raw)
    add("from_gate", origin, name, nul(fields))
    add("header_assembly", origin, name, b"\x00" + nul(fields) + b"\0" + body)
    add("dkim_signature", origin, name, raw)
    add("signer", origin, name, b"\x00\x01\x07\x00\x40" + raw)
    add("signer", origin, name + "-simple-rsa", b"\x07\x00\x00\x10\x03" + raw)
    for n, v in fields:
        if n.strip().lower() in (b"authentication-results", b"arc-authentication-results"):
            i = len([k for k in seeds["authserv_id"] if k.startswith(f"seed-{origin}-{clean(name)}")])
            add("authserv_id", origin, f"{name}-{i}", v)
            add("authres_render", origin, f"{name}-{i}", re.sub(rb"\r?\n[ \t]+", b" ", v).strip())

for origin, name, rec in key_records:
    add("dkim_key", origin, name, rec)

# SPF: one seed per OpenSPF scenario: its section's zone and its client.
try:
    import yaml
except ImportError:
    sys.exit("make_corpus.py: PyYAML is needed for the SPF seeds (pip install pyyaml)")


def txt_escape(s):
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


with open(os.path.join(TESTDATA, "spf", "rfc7208-tests.yml")) as f:
    docs = list(yaml.safe_load_all(f))
for doc in docs:
    if not doc or "tests" not in doc:
        continue
    lines = []
    for name, records in (doc.get("zonedata") or {}).items():
        # The suite's driver: SPF entries double as TXT when the name has
        # no TXT entry (the SPF RR type itself is not served, RFC 7208 3.1).
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
        for rec in records:
            if rec == "TIMEOUT":
                lines.append(f"{name} TIMEOUT")
                continue
            for kind, value in rec.items():
                if kind in ("TXT", "SPF"):
                    if value == "NONE" or (kind == "SPF" and has_txt):
                        lines.append(f"{name} EXISTS")
                        continue
                    text = "".join(value) if isinstance(value, list) else value
                    lines.append(f"{name} TXT {txt_escape(text)}")
                elif kind == "MX":
                    lines.append(f"{name} MX {value[0]} {value[1]}")
                else:
                    lines.append(f"{name} {kind} {value}")
    zone = "\n".join(lines)
    section = doc.get("description", "section")
    for test, t in doc["tests"].items():
        text = f"client {t['host']}\nhelo {t['helo']}\nmailfrom {t['mailfrom']}\n{zone}\n"
        add("spf", "openspf", f"{section}-{test}", text.encode())

# The case corpus's zones: SPF seeds with the case's envelope, and its
# DMARC and DKIM key records.
for c, env, zone in case_zones:
    lines = []
    for line in zone.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        name, kind, value = (line.split(" ", 2) + ["", ""])[:3]
        if kind == "TXT":
            value = value.strip()
            value = value[1:-1] if value.startswith('"') and value.endswith('"') else value
            if name.startswith("_dmarc."):
                add("dmarc_record", "rmilter", f"case-{c}-{name}", value.encode())
            elif "._domainkey." in name:
                add("dkim_key", "rmilter", f"case-{c}-{name}", value.encode())
            value = txt_escape(value)
        lines.append(f"{name} {kind} {value}")
    text = (f"client {env.get('client', '192.0.2.1')}\nhelo {env.get('helo', '')}\n"
            f"mailfrom {env.get('mail_from', '')}\n" + "\n".join(lines) + "\n")
    add("spf", "rmilter", f"case-{c}", text.encode())

# DMARC records (rmilter's own, from its tests and RFC 9989's tags).
for i, rec in enumerate([
    "v=DMARC1; p=reject; rua=mailto:dmarc@sender.example",
    "v=DMARC1; p=quarantine",
    "v=DMARC1; p=none",
    "v=DMARC1; p=reject; adkim=s; aspf=s",
    "v=DMARC1; p=none; sp=reject; np=quarantine",
    "v=DMARC1; p=reject; t=y",
    "v=DMARC1; p=reject; pct=0",
    "v=DMARC1; p=reject; pct=50; fo=1:d:s; rf=afrf; ri=3600",
    "v=DMARC1; psd=y; p=reject",
    "v=DMARC1; p=none; rua=mailto:a@example.com!10m,mailto:b@example.org; ruf=mailto:f@example.com",
    "v=DMARC1",
    "v=DMARC1; p=bogus",
    "v=DMARC1;p=reject;;;",
    "V=dmarc1; P=REJECT",
    "p=reject; v=DMARC1",
    "v=DMARC2; p=reject",
    "v=DMARC1; p=reject; sp=quarantine; np=none; adkim=r; aspf=r; t=n; psd=n",
]):
    add("dmarc_record", "rmilter", f"record-{i:02}", rec.encode())

# Configuration files.
add("config", "rmilter", "rmilter.toml", read(REPO, "config", "rmilter.toml"))
add("config", "rmilter", "empty", b"")
bad = os.path.join(REPO, "tests", "config", "bad")
for f in sorted(os.listdir(bad)):
    if f.endswith(".toml"):
        add("config", "rmilter", f"bad-{f}", read(bad, f))

for target in TARGETS:
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for name, data in seeds[target].items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds[target])} seeds")

lic = os.path.join(OUT, "LICENSES")
os.makedirs(lic, exist_ok=True)
for src in [("dkim", "dkimpy", "LICENSE.dkimpy"), ("spf", "rfc7208-tests.LICENSE"),
            ("LICENSES", "Apache-2.0.txt"), ("LICENSES", "MIT.txt"), ("LICENSES", "mail-auth.COMMIT")]:
    shutil.copy(os.path.join(TESTDATA, *src), os.path.join(lic, src[-1]))
