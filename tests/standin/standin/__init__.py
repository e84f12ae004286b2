"""A faithful stand-in for the OpenZFS `zfs` and `zpool` commands, for tests.

The wrappers `tests/standin/zfs` and `tests/standin/zpool` call `standin.cli.cli`, which
dispatches on the program name; `python3 -m standin zfs ...` / `... zpool ...` does the same
(with tests/standin on sys.path). Standard library only; runs on any Python >= 3.8
(including the Debian system python that sshd starts).

State lives per "host" in the directory named by $ZFS_STANDIN_ROOT:

    state.json       metadata (pools, datasets, snapshots, properties, holds, partial
                     receive state), guarded by flock on state.lock
    objects/         file contents, content-addressed by sha256 (immutable)
    manifests/       snapshot manifests {relpath: entry}, content-addressed
    partial/         bytes of a partially received object (`zfs receive -s`)
    hashcache.json   sha256 cache keyed by path, validated by (size, mtime_ns, ino, ctime_ns)
    calls.log        one JSON line per invocation {"argv", "pid", "t"}
    mnt/<dataset>    default mountpoint of each filesystem: its files ARE the live content

What it models (as strictly as OpenZFS 2.1/2.3, with their messages and exit codes):
  pools and filesystems, snapshots (atomic, -r), guids (snapshot guids kept by receive),
  createtxg ordering, creation times; native and user properties with local / received /
  inherited / default sources, `$inherit` masking of received values (`zfs inherit`,
  `inherit -S`, `recv -x`, `recv -o`); holds blocking destroy and rollback; rename;
  rollback -r/-R; destroy -r/-R with OpenZFS's refusal listings; get/list output formats;
  `zfs diff`; send streams (full, -i, -I, -R, -p, -t resume, -n/-v/-P output and progress)
  carrying real file content; receive with all of OpenZFS's refusal rules (incremental
  base, modified destination, -F rollback and destruction of newer snapshots, full into
  existing, partial `-s` state and resume tokens, `-A`), cut streams detected by a trailer;
  bookmarks (`zfs bookmark`, `fs#bm` in list/get/destroy/rollback, `send -i fs#bm`);
  encryption as it can be observed (encryption properties, keys and keylocation, load-key,
  unload-key, change-key, raw sends and their receive rules, no content without the key);
  delegation: a caller that is not root may do what `zfs allow` granted it, and never mount.

What it deliberately does not model:
  volumes, clones/promote, redaction bookmarks, real cryptography (an encrypted dataset's
  files are stored as any other's), quotas/reservations enforcement,
  compression (the property is stored only), space accounting beyond file sizes
  (`used`/`available` are simple sums; metadata and block rounding are ignored),
  `readonly=on` does not stop writes made directly into the mountpoint directory
  (nothing can stop root), unmounting does not hide content (the directory keeps its
  files; `mounted` is a flag), file ownership/xattrs/ACLs/hard links (only regular
  files, directories, symlinks and mode bits are snapshotted), create-time delegation
  (`zfs allow -c` is stored and printed, not applied), `zfs send` of a filesystem (not a
  snapshot), and object garbage collection.

Modules, from the bottom up (each imports only from those above it; a call imports the
ones its command needs, see cli.ZFS_COMMANDS):

    lazy         modules imported at first use; JSON through the C `_json`
    errors       Exit (an exit code), err/fail (messages on stderr)
    release      which OpenZFS release it imitates (ZFS_STANDIN_VERSION)
    usage        zfs's usage text and usage errors (exit 2)
    options      GNU getopt as zfs parses its options
    names        dataset and snapshot name rules
    units        sizes and times as zfs prints and parses them
    fileio       reads that leave atime alone, preallocation, the hashing side writer
    state        one host's state directory: state.json, objects, manifests, hash cache
    trees        live directory trees <-> manifests
    properties   native and user properties: the table, sources, inheritance, values
    pools        pool properties and features as `zpool get` shows them, per release
    model        the loaded state: datasets, snapshots, content directories; Session
    crypt        encryption: roots, keys, key material, properties, raw-stream rules
    deleg        delegated permissions, checked for a caller that is not root
    stream       the send stream format (records, checksums) and resume tokens
    commands/    one module per command family (zfs get, zfs send, zpool, ...)
    cli          entry point: call log, dispatch, exit

No module has `from __future__ import annotations`: that line imports `__future__` at run
time, on every call; the few `X | None` annotations are quoted instead (Python < 3.10).
"""
