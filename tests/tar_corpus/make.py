#!/usr/bin/env python3
"""Regenerates tests/tar_corpus/*.tar, the tricky tars the Go differential
(tests/it/oci/tar_diff.rs) and the tar_import fuzz target start from.

Most are written byte by byte here, to hold exactly the header oddity each
is named for; the sparse ones come from GNU tar (`--sparse`, every sparse
format it writes). Run from anywhere: python3 tests/tar_corpus/make.py

The `regression-*.tar` files are not made here: they are mutants the
differential found reading differently, kept as they were found.
"""

import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCK = 512


def octal(n, width):
    """A NUL-terminated octal field."""
    return ("%0*o" % (width - 1, n)).encode() + b"\0"


def base256(n, width):
    """A GNU base-256 field (two's complement for negative numbers)."""
    if n < 0:
        n += 1 << (8 * width)
        raw = n.to_bytes(width, "big")
        return bytes([raw[0] | 0x80]) + raw[1:]
    raw = n.to_bytes(width, "big")
    return bytes([0x80]) + raw[1:]


def field(value, width):
    if isinstance(value, int):
        return octal(value, width)
    assert len(value) <= width, value
    return value + b"\0" * (width - len(value))


def header(name, kind=b"0", size=0, mode=0o644, uid=0, gid=0, mtime=1700000000,
           link=b"", magic=b"ustar\0", version=b"00", uname=b"root",
           gname=b"root", major=0, minor=0, prefix=b"", fix=None,
           checksum=None, after=None):
    """One 512-byte header; `fix` overwrites raw bytes at offsets last."""
    if isinstance(name, str):
        name = name.encode()
    if isinstance(link, str):
        link = link.encode()
    b = bytearray(BLOCK)
    b[0:100] = field(name, 100)
    b[100:108] = field(mode, 8)
    b[108:116] = field(uid, 8)
    b[116:124] = field(gid, 8)
    b[124:136] = field(size, 12)
    b[136:148] = field(mtime, 12)
    b[156:157] = kind
    b[157:257] = field(link, 100)
    b[257:263] = magic
    b[263:265] = version
    if magic.startswith(b"ustar"):
        b[265:297] = field(uname, 32)
        b[297:329] = field(gname, 32)
        b[329:337] = field(major, 8)
        b[337:345] = field(minor, 8)
        b[345:345 + len(prefix)] = prefix
    for offset, raw in (fix or {}).items():
        b[offset:offset + len(raw)] = raw
    b[148:156] = b" " * 8
    total = sum(b) if checksum is None else checksum
    b[148:156] = ("%06o" % total).encode() + b"\0 "
    for offset, raw in (after or {}).items():
        b[offset:offset + len(raw)] = raw
    return bytes(b)


def data(raw):
    return raw + b"\0" * ((BLOCK - len(raw) % BLOCK) % BLOCK)


def entry(name, raw=b"", **kw):
    kw.setdefault("size", len(raw))
    return header(name, **kw) + data(raw)


def pax(records, name="PaxHeaders/x", kind=b"x"):
    body = b""
    for k, v in records:
        if isinstance(k, str):
            k = k.encode()
        if isinstance(v, str):
            v = v.encode()
        rec = b" " + k + b"=" + v + b"\n"
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n = len(str(n)) + len(rec)
        body += str(n).encode() + rec
    return entry(name, body, kind=kind)


def gnu_long(kind, value):
    return entry("././@LongLink", value + b"\0", kind=kind,
                 magic=b"ustar ", version=b" \0")


END = b"\0" * (2 * BLOCK)
GNU = dict(magic=b"ustar ", version=b" \0")
V7 = dict(magic=b"\0" * 6, version=b"\0\0")


def corpus():
    c = {}
    c["v7-basic"] = (entry("v7/", kind=b"\0", **V7)
                     + entry("v7/file", b"v7 data\n", kind=b"\0", **V7)
                     + entry("v7/link", kind=b"2", link="file", **V7)
                     + entry("v7/hard", kind=b"1", link="v7/file", **V7) + END)
    c["ustar-prefix"] = (entry("file", b"prefixed\n", prefix=b"some/long/prefix")
                         + entry("dir", kind=b"5", prefix=b"some/long") + END)
    # Magic `ustar\0` with version ` \0` (a 2014 Docker layer): still ustar,
    # the prefix is joined.
    c["ustar-version-space-prefix"] = (
        entry("name.txt", b"joined\n", prefix=b"usr/share/doc",
              version=b" \0") + END)
    c["star-prefix"] = entry("star.txt", b"star\n", prefix=b"star/prefix",
                             fix={508: b"tar\0", 476: octal(1700000001, 12),
                                  488: octal(1700000002, 12)}) + END
    c["gnu-basic"] = (entry("gnu/", kind=b"5", **GNU)
                      + entry("gnu/file", b"gnu\n", **GNU) + END)
    # Go before 1.8 wrote a ustar prefix into GNU headers (over atime and
    # ctime) when a number needed base-256.
    c["gnu-go-pre18-prefix"] = entry(
        "file.bin", b"go1.7\n", uid=base256(3000000, 8), prefix=b"go/wrote/this",
        **GNU) + END
    c["gnu-base256"] = (entry("big-ids", b"b256\n", uid=base256(70000, 8),
                              gid=base256(70001, 8),
                              mtime=base256(-1000, 12), **GNU)
                        + entry("big-size-field", b"x" * 600,
                                size=base256(600, 12), **GNU) + END)
    c["gnu-long-names"] = (gnu_long(b"L", b"long/" + b"n" * 150)
                           + entry("short", b"long\n", **GNU)
                           + gnu_long(b"K", b"target/" + b"t" * 120)
                           + gnu_long(b"L", b"symlink-with-long-target")
                           + entry("s", kind=b"2", link="t", **GNU) + END)
    c["pax-long-names"] = (pax([("path", "pax/" + "p" * 200),
                                ("linkpath", "ignored-on-a-file")])
                           + entry("short", b"pax\n")
                           + pax([("linkpath", "target/" + "q" * 150)])
                           + entry("sym", kind=b"2", link="short") + END)
    # Header-only types with a size: no data follows them (as Go reads it).
    hidden = entry("hidden-by-size", b"found\n")
    c["header-only-sizes"] = (
        entry("d", kind=b"5", size=512) + entry("d/one", b"1\n")
        + entry("sym", kind=b"2", link="d/one", size=1024) + entry("d/two", b"2\n")
        + entry("hard", kind=b"1", link="d/one", size=512) + entry("d/three", b"3\n")
        + entry("fifo", kind=b"6", size=512) + entry("d/four", b"4\n")
        + entry("chr", kind=b"3", major=1, minor=3, size=512) + entry("d/five", b"5\n")
        + entry("blk", kind=b"4", major=7, minor=0, size=512) + hidden
        + entry("old-dir/", kind=b"\0", size=512, **V7) + entry("old-dir/six", b"6\n")
        + END)
    # An old tar's sized hard link as the last entry.
    c["header-only-hard-link-last"] = (entry("f", b"data\n")
                                       + entry("h", kind=b"1", link="f", size=5))
    c["regular-with-slash"] = entry("notadir/", b"a file\n") + END
    c["numeric-nul"] = (
        entry("all-nul", b"", fix={100: b"\0" * 8, 108: b"\0" * 8, 116: b"\0" * 8,
                                   124: b"\0" * 12, 136: b"\0" * 12})
        + entry("leading-nul", b"x", fix={100: b"\0\0000644\0", 124: b"\0\0\0" + b"00000001\0"})
        + entry("spaces", b"yy", fix={100: b"  644  \0", 124: b"    2      "})
        + entry("nul-inside", b"", fix={100: b"64\0" + b"4   \0"}) + END)
    c["pax-numbers"] = (
        pax([("uid", "0" * 25 + "1000"), ("gid", "+2000"),
             ("mtime", "0000000000000000000001700000000.123456789123"),
             ("size", "0" * 30 + "7")])
        + entry("long-numbers", b"seven!\n")
        + pax([("mtime", "-1.5"), ("atime", "12"), ("ctime", "13.0")])
        + entry("negative-time", b"")
        + pax([("path", ""), ("uid", ""), ("mtime", "")])
        + entry("empty-values-keep-header", b"kept\n", uid=5) + END)
    c["pax-xattrs"] = (
        pax([("SCHILY.xattr.user.binary", b"\x00\x01\n\xff"),
             ("SCHILY.xattr.user.empty", ""),
             ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")])
        + entry("with-xattrs", b"x\n") + END)
    c["pax-precedence"] = (
        pax([("path", "first")]) + pax([("path", "second")])
        + entry("header", b"two pax headers\n")
        + pax([("path", "from-pax")]) + gnu_long(b"L", b"from-gnu-long-name")
        + entry("header2", b"long name wins\n")
        + pax([("path", "dropped-by-global")])
        + pax([("comment", "global")], kind=b"g")
        + entry("after-global", b"g\n") + END)
    c["pax-size-zero-header"] = (pax([("size", "11")])
                                 + entry("big", b"eleven byte", size=0) + END)
    c["devices"] = (entry("null", kind=b"3", major=1, minor=3)
                    + entry("big", kind=b"4", major=4095, minor=1048575)
                    + entry("b256", kind=b"3", major=base256(300, 8), minor=base256(5, 8), **GNU)
                    + END)
    c["no-end-blocks"] = entry("f", b"no end\n")
    c["one-end-block"] = entry("f", b"one end block\n") + b"\0" * BLOCK
    c["trailing-garbage"] = entry("f", b"x\n") + END + b"garbage after the end" * 10
    # broken ones
    c["broken-checksum"] = entry("f", b"x", checksum=1) + END
    c["broken-checksum-field"] = entry("f", b"x", after={148: b"zz"}) + END
    c["broken-truncated-data"] = header("f", size=2000) + b"short"
    c["broken-truncated-header"] = entry("f", b"x") + b"\x01" * 100
    c["broken-truncated-padding"] = header("f", size=5) + b"12345" + b"\0" * 10
    c["broken-zero-then-header"] = entry("a", b"a") + b"\0" * BLOCK + entry("b", b"b") + END
    c["broken-negative-size"] = header("neg", size=base256(-5, 12), **GNU) + END
    c["broken-pax-record"] = entry("PaxHeaders/x", b"99 path=x\n", kind=b"x") + entry("f", b"") + END
    c["broken-pax-nul-path"] = pax([("path", b"a\0b")]) + entry("f", b"") + END
    c["broken-pax-ends"] = pax([("path", "nothing-follows")])
    c["broken-bad-mode"] = entry("f", b"", fix={100: b"9999999\0"}) + END
    c["broken-pax-bad-uid"] = pax([("uid", "12x")]) + entry("f", b"") + END
    c["broken-sparse-map"] = (pax([("GNU.sparse.major", "0"), ("GNU.sparse.minor", "1"),
                                   ("GNU.sparse.numblocks", "2"), ("GNU.sparse.map", "0,5"),
                                   ("GNU.sparse.size", "100")])
                              + entry("sparse", b"hello") + END)
    c["sparse-0.1-hand"] = (pax([("GNU.sparse.major", "0"), ("GNU.sparse.minor", "1"),
                                 ("GNU.sparse.name", "sparse/real-name"),
                                 ("GNU.sparse.numblocks", "2"),
                                 ("GNU.sparse.map", "0,5,1000,3"),
                                 ("GNU.sparse.size", "2000")])
                            + entry("GNUSparseFile.0/real-name", b"helloabc") + END)
    c["sparse-0.0-hand"] = (pax([("GNU.sparse.size", "4096"),
                                 ("GNU.sparse.numblocks", "2"),
                                 ("GNU.sparse.offset", "10"), ("GNU.sparse.numbytes", "2"),
                                 ("GNU.sparse.offset", "4000"), ("GNU.sparse.numbytes", "4")])
                            + entry("sparse00", b"ab1234") + END)
    c["sparse-1.0-hand"] = (pax([("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"),
                                 ("GNU.sparse.name", "s10"), ("GNU.sparse.realsize", "1048576")])
                            + entry("GNUSparseFile.0/s10",
                                    data(b"2\n0\n4\n1048000\n6\n") + b"headtail!!")
                            + END)
    return c, None


def gnu_sparse(c):
    """Sparse files as GNU tar writes them, in every format it has."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "holes")
        with open(path, "wb") as f:
            f.truncate(3 * 1024 * 1024)
            f.seek(100)
            f.write(b"data after a hole\n")
            f.seek(2 * 1024 * 1024)
            f.write(b"x" * 5000)
        for fmt, ver, name in [("posix", "0.0", "gnutar-sparse-0.0"),
                               ("posix", "0.1", "gnutar-sparse-0.1"),
                               ("posix", "1.0", "gnutar-sparse-1.0"),
                               ("gnu", None, "gnutar-sparse-oldgnu")]:
            cmd = ["tar", "--sparse", "--format=" + fmt, "--owner=0", "--group=0",
                   "--numeric-owner", "--mtime=@1700000000", "-C", tmp, "-cf", "-", "holes"]
            if ver:
                cmd.insert(2, "--sparse-version=" + ver)
            c[name] = subprocess.run(cmd, check=True, capture_output=True,
                                     env=dict(os.environ, LC_ALL="C")).stdout
        for fmt in ["v7", "ustar", "gnu", "oldgnu", "posix"]:
            os.makedirs(os.path.join(tmp, "tree", "d" * 60, "e" * 60), exist_ok=True)
            with open(os.path.join(tmp, "tree", "d" * 60, "e" * 60, "f"), "w") as f:
                f.write("deep\n")
            os.symlink("f", os.path.join(tmp, "tree", "d" * 60, "e" * 60, "l-" + fmt))
            cmd = ["tar", "--format=" + fmt, "--owner=0", "--group=0", "--numeric-owner",
                   "--mtime=@1700000000", "--sort=name", "-C", os.path.join(tmp, "tree"),
                   "-cf", "-", "."]
            res = subprocess.run(cmd, capture_output=True, env=dict(os.environ, LC_ALL="C"))
            if res.returncode == 0:
                c["gnutar-" + fmt] = res.stdout


def main():
    c, _ = corpus()
    gnu_sparse(c)
    for name, raw in sorted(c.items()):
        with open(os.path.join(HERE, name + ".tar"), "wb") as f:
            f.write(raw)
    print(len(c), "tars")


if __name__ == "__main__":
    main()
