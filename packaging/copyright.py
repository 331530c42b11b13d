#!/usr/bin/env python3
"""Write debian/copyright for the rmilter binary package (DEP-5 layout).

rmilter is GPL-3.0-or-later; the binary links the Rust crates of its
normal (not dev-, not build-) dependency graph for the target, which are
read from `cargo metadata` (that is, from Cargo.lock), so the list cannot
drift from what is built. Proc-macro crates run at build time only and are
left out. Each licence named is given once at the end: by reference to
/usr/share/common-licenses where Debian ships it, otherwise as the text of
the first crate that carries it.

Usage: copyright.py METADATA.json > copyright
"""
import json
import os
import re
import sys

COMMON = {
    "Apache-2.0": "Apache-2.0",
    "GPL-2.0-only": "GPL-2",
    "GPL-3.0-or-later": "GPL-3",
    "LGPL-2.1-or-later": "LGPL-2.1",
    "MPL-2.0": "MPL-2.0",
    "CC0-1.0": "CC0-1.0",
}
# File names (lower case, without extension) that hold one licence's text.
TEXT_FILES = {
    "MIT": ["license-mit", "licence-mit", "mit-license", "license"],
    "MIT-0": ["license-mit-0", "license-mit0"],
    "ISC": ["license-isc", "license"],
    "Zlib": ["license-zlib", "license"],
    "Unicode-3.0": ["license-unicode", "license", "license-unicode-3.0"],
    "Unlicense": ["unlicense", "license-unlicense"],
    "BSD-3-Clause": ["license-bsd", "license-bsd-3-clause", "license", "license-third-party"],
    "0BSD": ["license-0bsd"],
    "BSL-1.0": ["license-boost", "license-bsl-1.0", "license-bsl"],
}


def linked_packages(meta):
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = meta["resolve"]["root"]
    seen, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        for dep in nodes[pid]["deps"]:
            if not any(k["kind"] is None for k in dep["dep_kinds"]):
                continue
            pkg = packages[dep["pkg"]]
            if any("proc-macro" in t["kind"] for t in pkg["targets"]):
                continue
            stack.append(dep["pkg"])
    seen.discard(root)
    return packages[root], sorted((packages[p] for p in seen), key=lambda p: (p["name"], p["version"]))


def expression(pkg):
    text = pkg.get("license") or "UNKNOWN"
    return text.replace("/", " OR ")


def ids(expr):
    found = []
    tokens = re.findall(r"[A-Za-z0-9.+-]+", expr)
    skip_next = False
    for tok in tokens:
        if skip_next:
            skip_next = False
            continue
        if tok == "WITH":
            skip_next = True
            continue
        if tok in ("AND", "OR"):
            continue
        found.append(tok)
    return found


def license_text(lic, crates):
    """The text of `lic` from the first crate naming it: a file named for
    that licence, or a crate's one LICENSE file (first from crates under
    that licence alone, then from any crate naming it)."""
    names = TEXT_FILES.get(lic, [])
    for any_crate in (False, True):
        for pkg in crates:
            if lic not in ids(expression(pkg)):
                continue
            single = ids(expression(pkg)) == [lic]
            folder = os.path.dirname(pkg["manifest_path"])
            try:
                files = sorted(os.listdir(folder))
            except OSError:
                continue
            for want in names + ["license"]:
                if want == "license" and not (single or any_crate):
                    continue
                for f in files:
                    name = f.lower().replace("_", "-")
                    stem = name.rsplit(".", 1)[0] if name.endswith((".txt", ".md")) else name
                    if stem == want:
                        with open(os.path.join(folder, f), encoding="utf-8", errors="replace") as fh:
                            text = fh.read()
                        # Apache-2.0 is referenced in common-licenses, never
                        # copied (lintian: copyright-file-contains-full-apache-2-license).
                        if "TERMS AND CONDITIONS FOR USE, REPRODUCTION" in text:
                            continue
                        return text, f"{pkg['name']} {pkg['version']}"
    return None, None


def field(text):
    """A DEP-5 multi-line field body: each line indented, empty lines as ' .'."""
    out = []
    for line in text.strip("\n").splitlines():
        line = line.rstrip()
        out.append(" " + line if line else " .")
    return "\n".join(out)


def main():
    meta = json.load(open(sys.argv[1]))
    root, crates = linked_packages(meta)
    out = []
    out.append("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    out.append("Upstream-Name: rmilter")
    out.append("Comment: /usr/sbin/rmilter is statically linked with the Rust crates listed")
    out.append(" below as rust-crates/NAME-VERSION (their sources are on crates.io); the")
    out.append(" list is generated from Cargo.lock by packaging/copyright.py. libsqlite3-sys")
    out.append(" builds the bundled SQLite, which is in the public domain; aws-lc-sys")
    out.append(" builds AWS-LC, whose licences its expression names.")
    out.append("")
    out.append("Files: *")
    out.append("Copyright: the rmilter authors")
    out.append(f"License: {root.get('license')}")
    licenses = {root.get("license")}
    for pkg in crates:
        expr = expression(pkg)
        authors = [a for a in pkg.get("authors") or [] if a.strip()]
        holder = authors or [f"the {pkg['name']} authors"]
        out.append("")
        out.append(f"Files: rust-crates/{pkg['name']}-{pkg['version']}/*")
        out.append("Copyright: " + holder[0])
        out.extend("           " + a for a in holder[1:])
        out.append(f"License: {expr}")
        licenses.update(ids(expr))
    for lic in sorted(licenses):
        out.append("")
        out.append(f"License: {lic}")
        if lic in COMMON:
            out.append(f" On Debian systems, the full text of this licence is in")
            out.append(f" /usr/share/common-licenses/{COMMON[lic]}.")
            continue
        text, source = license_text(lic, crates)
        if text is None:
            print(f"copyright.py: no text found for licence {lic}", file=sys.stderr)
            out.append(f" The text of this licence is in the sources of the crates that name it.")
            continue
        out.append(f"Comment: text as shipped with {source}")
        out.append(field(text))
    print("\n".join(out))


if __name__ == "__main__":
    main()
