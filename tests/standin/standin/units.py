"""Sizes and times as zfs parses and prints them (`1.5G`, `nicenum`, libzfs's dates)."""

import time


def parse_size(text: str) -> "int | None":
    t = text.strip().upper()
    if not t:
        return None
    mult = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
            "P": 1 << 50, "E": 1 << 60}  # fmt: skip
    num = t
    unit = ""
    while num and num[-1].isalpha():
        unit = num[-1] + unit
        num = num[:-1]
    if unit.endswith("B") and len(unit) == 2:
        unit = unit[0]
    if unit not in mult:
        return None
    try:
        val = float(num)
    except ValueError:
        return None
    return int(val * mult[unit])


def nicenum(num: int, bytes_: bool = True) -> str:
    units = ["B" if bytes_ else "", "K", "M", "G", "T", "P", "E"]
    n = num
    idx = 0
    while n >= 1024 and idx < 6:
        n //= 1024
        idx += 1
    if idx == 0 or num % (1024**idx) == 0:
        return "%d%s" % (n, units[idx])
    val = num / float(1024**idx)
    for prec in (2, 1, 0):
        s = "%.*f%s" % (prec, val, units[idx])
        if len(s) <= 5:
            return s
    return s


def fmt_time(t: int, holds: bool = False) -> str:
    """libzfs prints a time property with "%k" (space-padded hour: "Tue Nov 24  0:20 2026");
    `zfs holds` has its own format with "%H"."""
    return time.strftime("%a %b %e %H:%M %Y" if holds else "%a %b %e %k:%M %Y", time.localtime(t))
