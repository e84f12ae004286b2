"""Cheap start: modules imported at their first use, and JSON without the `json` module.

Every stand-in call is a new Python process, so each import is paid on every `zfs get`."""


class Lazy:
    """A module imported at its first use. Every zfs call is a new process, and most (get,
    set, hold) need none of these: importing them all took more than half of a `zfs get`'s
    own run time (json pulls in re, hashlib OpenSSL, shutil bz2/lzma, contextlib collections).
    Bound in a module as `zlib = Lazy("zlib", globals())`: the first use puts the real module
    in that namespace under the same name. A name with leading dots is a module of this
    package, relative to the binding module (`trees = Lazy(".trees", globals())`): each
    module costs ~50 us to import, so those only some calls need are loaded by those."""

    def __init__(self, name: str, namespace: dict):
        self.__dict__["_name"] = name
        self.__dict__["_namespace"] = namespace

    def __getattr__(self, attr: str):
        name = self._name.lstrip(".")
        level = len(self._name) - len(name)
        mod = __import__(name, self._namespace, None, ("_",) if level else (), level)
        self._namespace[name] = mod  # later uses go straight to the module
        return getattr(mod, attr)


json = Lazy("json", globals())


def _fast_json():
    """(loads, dumps) on the C accelerator `_json` directly, without importing `json` (and
    with it `re`). Byte for byte what json.loads / json.dumps give (checked here; anything
    unexpected falls back to the json module, which also reports every parse error)."""
    try:
        import _json

        class _Ctx:
            strict = True
            object_hook = None
            object_pairs_hook = None
            parse_float = float
            parse_int = int
            parse_constant = {
                "-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")
            }.__getitem__  # fmt: skip
            memo: dict = {}

        scan = _json.make_scanner(_Ctx())

        def default(o):
            raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)

        encoders = {}

        def dumps(obj, sort_keys: bool = False, separators=(", ", ": ")) -> str:
            key = (sort_keys, separators)
            enc = encoders.get(key)
            if enc is None:
                enc = encoders[key] = _json.make_encoder(
                    {}, default, _json.encode_basestring_ascii, None, separators[1],
                    separators[0], sort_keys, False, True,
                )  # fmt: skip
            return "".join(enc(obj, 0))

        ws = " \t\n\r"

        def loads(text):
            if isinstance(text, (bytes, bytearray)):
                text = text.decode("utf-8")
            i = len(text) - len(text.lstrip(ws))
            try:
                obj, end = scan(text, i)
            except StopIteration:
                return json.loads(text)  # raises the json module's error
            if text[end:].strip(ws):
                return json.loads(text)
            return obj

        sample = {"b": [1, 2.5, "x\u00e9\n", True, None], "a": {}}
        want = '{"a":{},"b":[1,2.5,"x\\u00e9\\n",true,null]}'
        if dumps(sample, True, (",", ":")) != want or loads(want) != sample:
            raise ValueError("unexpected _json behaviour")
        return loads, dumps
    except Exception:  # any surprise: the plain json module

        def loads(text):
            return json.loads(text)

        def dumps(obj, sort_keys: bool = False, separators=(", ", ": ")) -> str:
            return json.dumps(obj, sort_keys=sort_keys, separators=separators)

        return loads, dumps


jloads, jdumps = _fast_json()
