#!/usr/bin/python3
"""Generate the benchmark's test messages, deterministically (fixed seed).

usage: make-messages.py BENCH_ROOT      (needs BENCH_ROOT/keys/s1.private; writes BENCH_ROOT/msgs/)

  out-{2k,100k,10m}.eml  unsigned, From: bench@example.test   -> signing runs (outbound)
  in-{2k,100k,10m}.eml   DKIM-signed by d=sender.test s=s1 (rsa-sha256, relaxed/relaxed,
                         dkimpy), From: alice@sender.test      -> verify runs (inbound)

2k is a plain-text message; 100k and 10m are multipart/mixed with a short text part and a
base64 attachment, like real bulk mail.  Sizes are of the CRLF form, which is what the milters
see.  Files are stored with LF line ends: smtp-source -F sends each line with CRLF, and
milterload does the same conversion.
"""
import base64, os, random, sys

import dkim  # Debian python3-dkim (dkimpy): an independent signer for the inbound messages

root = sys.argv[1]
rnd = random.Random(8463)
WORDS = ("the quick brown fox jumps over lazy dog mail server message signature "
         "domain key policy report alignment sender receiver header body relay "
         "invoice meeting agenda project schedule update review attached please").split()
SIZES = (("2k", 2048), ("100k", 102400), ("10m", 10 * 1024 * 1024))


def text_lines(nbytes):
    out, n = [], 0
    while n < nbytes:
        line = " ".join(rnd.choice(WORDS) for _ in range(12))[:72]
        out.append(line)
        n += len(line) + 2
    return out


def build(frm, to, tag, target):
    dom = frm.split("@")[1].rstrip(">")
    h = [f"From: {frm}", f"To: {to}", f"Subject: rmilter bench {tag} message",
         "Date: Mon, 01 Jan 2024 12:00:00 +0000", f"Message-ID: <{tag}.{rnd.getrandbits(64):x}@{dom}>",
         "MIME-Version: 1.0"]
    if target <= 4096:
        h.append("Content-Type: text/plain; charset=us-ascii")
        body = text_lines(target - 300)
    else:
        b = "b0undary-%x" % rnd.getrandbits(32)
        h.append(f'Content-Type: multipart/mixed; boundary="{b}"')
        nraw = int((target - 4000) * 3 / 4 * 76 / 78)  # base64 + CRLF per 76 chars
        a64 = base64.b64encode(rnd.randbytes(nraw)).decode()
        body = (["This is a multi-part message in MIME format.", "", f"--{b}",
                 "Content-Type: text/plain; charset=us-ascii", ""] + text_lines(2500) +
                ["", f"--{b}", 'Content-Type: application/octet-stream; name="report.bin"',
                 "Content-Transfer-Encoding: base64",
                 'Content-Disposition: attachment; filename="report.bin"', ""] +
                [a64[i:i + 76] for i in range(0, len(a64), 76)] + ["", f"--{b}--"])
    return "\r\n".join(h) + "\r\n\r\n" + "\r\n".join(body) + "\r\n"


def write(path, crlf_text):
    with open(path, "w", newline="") as f:
        f.write(crlf_text.replace("\r\n", "\n"))
    print(f"{path}: {len(crlf_text)} bytes (CRLF)")


key = open(os.path.join(root, "keys", "s1.private"), "rb").read()
for tag, size in SIZES:
    write(os.path.join(root, "msgs", f"out-{tag}.eml"),
          build("Bench Sender <bench@example.test>", "Rcpt <rcpt@remote.test>", f"out-{tag}", size))
    msg = build("Alice <alice@sender.test>", "Bob <bob@example.test>", f"in-{tag}", size).encode()
    sig = dkim.sign(msg, b"s1", b"sender.test", key, canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                     b"mime-version", b"content-type"])
    write(os.path.join(root, "msgs", f"in-{tag}.eml"), (sig + msg).decode())
