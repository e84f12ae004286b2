"""Dataset and snapshot names: OpenZFS's validity rules and messages, and name parts."""

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.: ")


def name_problem(
    name: str, allow_snap: bool, require_snap: bool = False, allow_bookmark: bool = False
) -> "str | None":
    if not name:
        return "empty component or misplaced '@' or '#' delimiter in name"
    if "@" in name and not allow_snap:
        return "snapshot delimiter '@' is not expected here"
    if require_snap and "@" not in name:
        return "missing '@' delimiter in snapshot name"
    if "#" in name:
        if not allow_bookmark:
            return "bookmark delimiter '#' is not expected here"
        if "@" in name or name.count("#") > 1:
            return "multiple '@' and/or '#' delimiters in name"
        fs, _, bm = name.partition("#")
        return name_problem(fs, False) or (
            name_problem(fs + "@" + bm, True)
            if bm
            else "empty component or misplaced '@' or '#' delimiter in name"
        )
    if "%" in name:
        return "invalid character '%' in name"
    if len(name) >= 256:
        return "name is too long"
    if name.startswith("/"):
        return "leading slash in name"
    if name.endswith("/"):
        return "trailing slash in name"
    if name.count("@") > 1:
        return "multiple '@' and/or '#' delimiters in name"
    fs, _, snap = name.partition("@")
    comps = fs.split("/")
    for c in comps:
        if c == "":
            return "empty component or misplaced '@' or '#' delimiter in name"
        if c == ".":
            return "self reference, '.' is found in name"
        if c == "..":
            return "parent reference, '..' is found in name"
        for ch in c:
            if ch not in NAME_CHARS:
                return "invalid character '%s' in name" % ch
    if "@" in name:
        if snap == "":
            return "empty component or misplaced '@' or '#' delimiter in name"
        for ch in snap:
            if ch not in NAME_CHARS:
                return "invalid character '%s' in name" % ch
    if not comps[0][0].isalpha():
        return "pool doesn't begin with a letter"
    return None


def bookmark_name_ok(name: str) -> bool:
    """A new bookmark's full name as the kernel accepts it (else EINVAL: "invalid argument")."""
    return (
        "#" in name and len(name) < 256 and name_problem(name, False, allow_bookmark=True) is None
    )


def parent_of(name: str) -> "str | None":
    return name.rsplit("/", 1)[0] if "/" in name else None


def pool_of(name: str) -> str:
    return name.split("@")[0].split("#")[0].split("/")[0]


def fs_of(name: str) -> str:
    """The filesystem part of a dataset, snapshot or bookmark name."""
    return name.split("@")[0].split("#")[0]


def is_descendant(name: str, ancestor: str) -> bool:
    return name.startswith(ancestor + "/")
