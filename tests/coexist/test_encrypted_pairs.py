"""Encrypted datasets stay encrypted (issue 15, point 2), with zrepq's engine: an encryption
root whose passphrase comes from a keylocation file is initialized and synced raw, the standby
holds ciphertext without a key, `status -v` shows its keystatus, takeover refuses until the
key is loadable, and a decrypted send happens only when asked. `pair` runs on the stand-in and,
with `--zfs=standin,real`, on OpenZFS 2.1 and 2.3."""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest

from tests.coexist.conftest import Pair
from tests.harness.zfs_backend import get, ok, sh_ok, snapshots, write_file
from workers.engine import run
from workers.engine.errors import StateError
from workers.engine.formats import status_text
from workers.engine.requests import InitRequest, StatusRequest, SyncRequest, TakeoverRequest

PASS = b"correct horse battery\n"


@pytest.fixture
def keydir(pair: Pair) -> Iterator[str]:
    b = pair.b
    d = sh_ok(b, "d=$(mktemp -d /var/tmp/zrepq-keys.XXXXXX) && chmod 755 $d && echo $d").strip()
    yield d
    b.sh(f"rm -rf {shlex.quote(d)}")


def encrypted_source(p: Pair, keydir: str) -> str:
    """`p.src` again, as an encryption root with a passphrase from a key file."""
    key = f"{keydir}/pass"
    sh_ok(p.b, f"cat > {shlex.quote(key)}", input=PASS)
    ok(p.b, "destroy", "-r", p.src)
    ok(p.b, "create", "-o", "encryption=on", "-o", "keyformat=passphrase",
       "-o", f"keylocation=file://{key}", p.src)  # fmt: skip
    write_file(p.b, p.src, "secret.txt", b"secret 1\n")
    return f"file://{key}"


def test_an_encrypted_pair_is_sent_raw_and_takeover_needs_a_loadable_key(
    pair: Pair, keydir: str
) -> None:
    p = pair
    loc = encrypted_source(p, keydir)
    ctx = p.context()
    run(ctx, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    # the standby is its own encryption root, holding ciphertext and no key
    assert get(p.b, "encryption", p.dst) != "off"
    assert get(p.b, "encryptionroot", p.dst) == p.dst
    assert get(p.b, "keystatus", p.dst) == "unavailable"
    write_file(p.b, p.src, "secret.txt", b"secret 2\n")
    res = run(ctx, SyncRequest(fs=p.src))
    assert res.status == "synced"
    assert snapshots(p.b, p.dst) == ["zrep_000000", "zrep_000001"]
    assert get(p.b, "keystatus", p.dst) == "unavailable"
    (row,) = run(ctx, StatusRequest(fs=[p.src], verbose=True))
    assert row.standby_keystatus == "unavailable"
    assert f"standby hostb:{p.dst} keystatus: unavailable" in status_text([row], verbose=True)
    # takeover on hostb (the master is gone) without the key there: the standby host has no
    # key file (here: the master's is moved away; both pools are on one machine)
    # `send -w -p` carries the root's keylocation (OpenZFS 2.1.11, 2.3.2): the master's file
    assert get(p.b, "keylocation", p.dst) == loc
    away = f"{keydir}/elsewhere"
    sh_ok(p.b, f"mv {shlex.quote(loc[len('file://') :])} {shlex.quote(away)}")
    on_b = p.context(host="hostb")
    take = TakeoverRequest(fs=p.dst, local_only=True, force=True)
    with pytest.raises(StateError, match="its key cannot be loaded") as e:
        run(on_b, take)
    assert "zfs load-key -L file://" in str(e.value) and "nothing was changed" in str(e.value)
    assert get(p.b, "readonly", p.dst) == "on" and get(p.b, "zrep:master", p.dst) == "-"
    # the runbook's step: point keylocation at the key file; then takeover loads it
    ok(p.b, "set", f"keylocation=file://{away}", p.dst)
    res2 = run(on_b, take)
    assert res2.role == "master"
    assert get(p.b, "keystatus", p.dst) == "available"
    assert get(p.b, "zrep:master", p.dst) == "yes" and get(p.b, "readonly", p.dst) == "off"


def test_a_decrypted_standby_is_refused_unless_asked(pair: Pair, keydir: str) -> None:
    """ZREPQ_DECRYPT=yes sends the plaintext (the standby is not encrypted); without it, a
    sync into that unencrypted standby is refused, saying why and how."""
    p = pair
    encrypted_source(p, keydir)
    plain = p.context({"ZREPQ_DECRYPT": "yes"})
    run(plain, InitRequest(fs=p.src, dest_host="hostb", dest_fs=p.dst))
    assert get(p.b, "encryption", p.dst) == "off"
    run(plain, SyncRequest(fs=p.src))
    with pytest.raises(StateError, match="ZREPQ_DECRYPT=yes") as e:
        run(p.context(), SyncRequest(fs=p.src))
    assert "is encrypted but its standby" in str(e.value)
    assert snapshots(p.b, p.dst) == ["zrep_000000", "zrep_000001"]
