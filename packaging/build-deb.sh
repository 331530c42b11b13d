#!/usr/bin/env bash
# Build the rmilter Debian package from a built binary.
#   packaging/build-deb.sh BINARY OUTDIR
# writes OUTDIR/rmilter_VERSION_ARCH.deb and prints its path. `make deb`
# passes the release binary; tests/package.rs the debug binary that `cargo
# test` built. Needs debhelper and dpkg-dev (tests/deps.sh installs them).
#
# The package is put together with debhelper in a staging copy under OUTDIR
# (dpkg-buildpackage writes its results beside the tree it builds): the
# binary, the packaged rmilter.toml (config/rmilter.toml with the settings of
# a packaged install, below), the manual pages and completions the binary
# itself generates (`rmilter manual`), the units from config/, and a
# copyright file generated from Cargo.lock (packaging/copyright.py).
set -euo pipefail

bin=$(readlink -f "$1")
out=$(mkdir -p "$2" && cd "$2" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/Cargo.toml" | head -n1)
[ -n "$version" ] || { echo "build-deb.sh: no version in $top/Cargo.toml" >&2; exit 1; }

stage="$out/rmilter-$version"
rm -rf "$stage"
mkdir -p "$stage"
cp -r "$top/packaging/debian" "$stage/debian"
tmp="$stage/debian/stage"
install -D -m 0755 "$bin" "$tmp/usr/sbin/rmilter"
"$bin" manual --out "$tmp/man"
install -D -m 0644 "$tmp/man/rmilter.bash" "$tmp/usr/share/bash-completion/completions/rmilter"
install -D -m 0644 "$tmp/man/_rmilter" "$tmp/usr/share/zsh/vendor-completions/_rmilter"

# The units, under the names dh_installsystemd looks for.
cp "$top/config/rmilter.service" "$stage/debian/rmilter.service"
cp "$top/config/rmilter-report.service" "$stage/debian/rmilter.rmilter-report.service"
cp "$top/config/rmilter-report.timer" "$stage/debian/rmilter.rmilter-report.timer"

# The packaged configuration: every key of config/rmilter.toml with its
# comment, and these values set for a packaged install. Each must be found
# exactly once, so a change of the reference cannot go unnoticed here.
python3 - "$top/config/rmilter.toml" "$tmp/etc/rmilter/rmilter.toml" <<'PY'
import os, sys
src, dst = sys.argv[1], sys.argv[2]
# (table, key): (value in the reference, packaged value)
SET = {
    ("", "listen"): ('"unix:/run/rmilter/rmilter.sock"',
                     '"unix:/var/spool/postfix/rmilter/rmilter.sock"'),
    ("", "pid_file"): ('""', '"/run/rmilter/rmilter.pid"'),
    ("", "user"): ('""', '"rmilter"'),
    ("socket", "group"): ('""', '"postfix"'),
    ("keys", "owner"): ('""', '"rmilter"'),
}
HEADER = """# Debian package: the reference configuration with the settings of a
# packaged install: rmilter starts as root (rmilter.service), binds its socket
# inside Postfix's chroot (/var/spool/postfix, as Debian runs smtpd), gives it
# to group postfix, writes its pid file, and runs as the rmilter user from
# then on. In Postfix's main.cf (names inside the chroot):
#   smtpd_milters = unix:/rmilter/rmilter.sock
#   non_smtpd_milters = $smtpd_milters
# See rmilter.toml(5).

"""
table, found, out = "", set(), []
for line in open(src, encoding="utf-8"):
    s = line.strip()
    if s.startswith("[") and not s.startswith("#"):
        table = s.strip("[]").strip()
    elif "=" in s and not s.startswith("#"):
        key, value = (p.strip() for p in s.split("=", 1))
        if (table, key) in SET:
            ref, packaged = SET[(table, key)]
            if value != ref or (table, key) in found:
                sys.exit(f"build-deb.sh: {src}: {table}.{key} = {value}, expected {ref} once")
            found.add((table, key))
            line = line.replace(ref, packaged, 1)
    out.append(line)
missing = set(SET) - found
if missing:
    sys.exit(f"build-deb.sh: {src}: not found: {sorted(missing)}")
os.makedirs(os.path.dirname(dst), exist_ok=True)
with open(dst, "w", encoding="utf-8") as f:
    f.write(HEADER + "".join(out))
PY

# debian/copyright from the crates Cargo.lock links in.
host=$(rustc -vV | sed -n 's/^host: //p')
(cd "$top" && cargo metadata --format-version 1 --locked --filter-platform "$host") >"$stage/metadata.json"
python3 "$top/packaging/copyright.py" "$stage/metadata.json" >"$stage/debian/copyright"
rm "$stage/metadata.json"

# A native package: its version is rmilter's.
date=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}")
cat >"$stage/debian/changelog" <<CHANGELOG
rmilter ($version) unstable; urgency=medium

  * rmilter $version.

 -- rmilter maintainers <maintainers@rmilter.example.org>  $date
CHANGELOG

(cd "$stage" && dpkg-buildpackage --build=binary --no-sign) >"$out/build.log" 2>&1 || {
  cat "$out/build.log" >&2
  exit 1
}
arch=$(dpkg --print-architecture)
deb="$out/rmilter_${version}_${arch}.deb"
[ -f "$deb" ] || { echo "build-deb.sh: $deb was not built" >&2; exit 1; }
rm -rf "$stage"
echo "$deb"
