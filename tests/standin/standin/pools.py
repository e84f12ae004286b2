"""Pool properties as `zpool get` shows them: the property list of each OpenZFS release, in
its order, with the values of a fresh file-backed pool, and the pool features.

Taken from `zpool get -H -p all` on OpenZFS 2.1.11 and 2.3.2 (a pool made by `zpool create`
with one filesystem in it): every feature a fresh pool enables is `enabled`, or `active` once
the pool's first filesystem uses it. A pool made with `zpool create -d` has every feature
`disabled`. Nothing here changes a feature's state (the stand-in models no large blocks,
bookmarks or encryption on disk)."""

from .release import zversion
from .units import nicenum

# (property, source when not changed): OpenZFS's pool property table order
PROPS_21 = (
    ("size", "-"), ("capacity", "-"), ("altroot", "default"), ("health", "-"), ("guid", "-"),
    ("version", "default"), ("bootfs", "default"), ("delegation", "default"),
    ("autoreplace", "default"), ("cachefile", "default"), ("failmode", "default"),
    ("listsnapshots", "default"), ("autoexpand", "default"), ("dedupratio", "-"),
    ("free", "-"), ("allocated", "-"), ("readonly", "-"), ("ashift", "default"),
    ("comment", "default"), ("expandsize", "-"), ("freeing", "-"), ("fragmentation", "-"),
    ("leaked", "-"), ("multihost", "default"), ("checkpoint", "-"), ("load_guid", "-"),
    ("autotrim", "default"), ("compatibility", "default"),
)  # fmt: skip
PROPS_23 = (
    *PROPS_21,
    ("bcloneused", "-"), ("bclonesaved", "-"), ("bcloneratio", "-"),
    ("dedup_table_size", "-"), ("dedup_table_quota", "default"), ("last_scrubbed_txg", "-"),
)  # fmt: skip
# (feature, state on a fresh pool with one filesystem), in `zpool get all`'s order
FEATURES_21 = (
    ("async_destroy", "enabled"), ("empty_bpobj", "active"), ("lz4_compress", "active"),
    ("multi_vdev_crash_dump", "enabled"), ("spacemap_histogram", "active"),
    ("enabled_txg", "active"), ("hole_birth", "active"), ("extensible_dataset", "active"),
    ("embedded_data", "active"), ("bookmarks", "enabled"), ("filesystem_limits", "enabled"),
    ("large_blocks", "enabled"), ("large_dnode", "enabled"), ("sha512", "enabled"),
    ("skein", "enabled"), ("edonr", "enabled"), ("userobj_accounting", "active"),
    ("encryption", "enabled"), ("project_quota", "active"), ("device_removal", "enabled"),
    ("obsolete_counts", "enabled"), ("zpool_checkpoint", "enabled"), ("spacemap_v2", "active"),
    ("allocation_classes", "enabled"), ("resilver_defer", "enabled"),
    ("bookmark_v2", "enabled"), ("redaction_bookmarks", "enabled"),
    ("redacted_datasets", "enabled"), ("bookmark_written", "enabled"),
    ("log_spacemap", "active"), ("livelist", "enabled"), ("device_rebuild", "enabled"),
    ("zstd_compress", "enabled"), ("draid", "enabled"),
)  # fmt: skip
FEATURES_23 = (
    *FEATURES_21,
    ("zilsaxattr", "enabled"), ("head_errlog", "active"), ("blake3", "enabled"),
    ("block_cloning", "enabled"), ("vdev_zaps_v2", "active"),
    ("redaction_list_spill", "enabled"), ("raidz_expansion", "enabled"),
    ("fast_dedup", "enabled"), ("longname", "enabled"), ("large_microzap", "enabled"),
)  # fmt: skip


def release_tables() -> tuple:
    """(properties, features) of the release the stand-in imitates."""
    if zversion() >= (2, 2, 0):
        return PROPS_23, FEATURES_23
    return PROPS_21, FEATURES_21


def known(prop: str) -> bool:
    props, features = release_tables()
    if prop.startswith("feature@"):
        return any(prop == "feature@" + f for f, _ in features)
    return any(prop == p for p, _ in props)


def all_names() -> list:
    props, features = release_tables()
    return [p for p, _ in props] + ["feature@" + f for f, _ in features]


def value(pool: str, info: dict, allocated: int, prop: str, parsable: bool) -> tuple:
    """(value, source) of one pool property as `zpool get` prints it."""
    props, features = release_tables()
    if prop.startswith("feature@"):
        state = dict(features)[prop[len("feature@") :]]
        return ("disabled" if info.get("features_disabled") else state), "local"
    size = info["size"]
    free = max(size - allocated, 0)
    guid = int(info["guid"])
    computed = {
        "size": (str(size), nicenum(size)),
        "capacity": (str(allocated * 100 // size), "%d%%" % (allocated * 100 // size)),
        "health": ("ONLINE", "ONLINE"),
        "guid": (str(guid), str(guid)),
        "dedupratio": ("1.00", "1.00x"),
        "free": (str(free), nicenum(free)),
        "allocated": (str(allocated), nicenum(allocated)),
        "readonly": ("off", "off"),
        "expandsize": ("-", "-"),
        "freeing": ("0", "0"),
        "fragmentation": ("0", "0%"),
        "leaked": ("0", "0"),
        "checkpoint": ("-", "-"),
        # a pool's load guid changes on every import; the stand-in's pools stay imported
        "load_guid": (str(info.get("load_guid", guid ^ 0x5A5A5A5A5A5A5A5A)),) * 2,
        "bcloneused": ("0", "0"),
        "bclonesaved": ("0", "0"),
        "bcloneratio": ("1.00", "1.00x"),
        "dedup_table_size": ("0", "0"),
        "last_scrubbed_txg": ("0", "0"),
    }
    defaults = {
        "altroot": "-", "version": "-", "bootfs": "-", "delegation": "on",
        "autoreplace": "off", "cachefile": "-", "failmode": "wait", "listsnapshots": "off",
        "autoexpand": "off", "ashift": "0", "comment": "-", "multihost": "off",
        "autotrim": "off", "compatibility": "off", "dedup_table_quota": "auto",
    }  # fmt: skip
    source = dict(props)[prop]
    if prop in computed:
        raw, human = computed[prop]
        return (raw if parsable else human), source
    return defaults[prop], source
