"""tf.app.flags / tf.flags: absl-style command-line flags for TF1 programs (stdlib only).

`DEFINE_string`, `DEFINE_integer`, `DEFINE_float`, `DEFINE_boolean` (`DEFINE_bool`),
`DEFINE_enum` and `DEFINE_list` register flags on `FLAGS`; `FLAGS(argv)` parses them as absl
does for the basics: `--name=value`, `--name value`, `--flag` / `--noflag` for booleans (and
`--flag=true/false/1/0`), `--` ending the flags; it returns argv[0] and the arguments left.
Reading `FLAGS.name` before any parse parses sys.argv, ignoring flags it does not know (as
TF1's wrapper did); `tf.app.run` parses strictly and passes main the arguments left. Bad
values raise `IllegalFlagValueError` and unknown flags `UnrecognizedFlagError`, each naming
the flag, what was expected and what came.
"""

from __future__ import annotations

import sys


class Error(Exception):
    """Base of the flag errors (absl.flags.Error)."""


class IllegalFlagValueError(Error, ValueError):
    pass


class UnrecognizedFlagError(Error, ValueError):
    pass


class DuplicateFlagError(Error, ValueError):
    pass


class UnparsedFlagAccessError(Error, AttributeError):
    pass


_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


class Flag:
    """One flag: its name, parser, default, help and current value."""

    def __init__(self, name, default, help, kind, parse, boolean=False):  # noqa: A002
        self.name, self.help, self.kind = name, help, kind
        self._parse = parse
        self.boolean = boolean
        self.default = None if default is None else self.parse(default, "default")
        self.value = self.default
        self.present = 0

    def parse(self, text, where="value"):
        try:
            return self._parse(text)
        except (TypeError, ValueError) as error:
            raise IllegalFlagValueError(
                f"flag --{self.name}={text}: {error} (expected {self.kind}, as the {where})"
            ) from None

    def __repr__(self):
        return f"<Flag --{self.name}={self.value!r} ({self.kind})>"


def _parse_bool(text):
    if isinstance(text, bool):
        return text
    if isinstance(text, str) and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    if isinstance(text, int) and text in (0, 1):
        return bool(text)
    raise ValueError(f"{text!r} is not a boolean (true/false, 1/0)")


def _parse_int(text):
    if isinstance(text, bool):
        raise ValueError("a bool is not an integer")
    if isinstance(text, int):
        return text
    return int(text, 0) if isinstance(text, str) and text.lower().startswith("0x") else int(text)


def _parse_list(text):
    if isinstance(text, (list, tuple)):
        return [str(v) for v in text]
    return [] if text == "" else [v.strip() for v in str(text).split(",")]


class FlagValues:
    """The registry of defined flags and their values (absl.flags.FlagValues)."""

    def __init__(self):
        object.__setattr__(self, "_flags", {})
        object.__setattr__(self, "_parsed", False)

    # --- definition ---------------------------------------------------------------------
    def _define(self, flag: Flag) -> Flag:
        if flag.name in self._flags:
            raise DuplicateFlagError(f"The flag '{flag.name}' is defined twice.")
        self._flags[flag.name] = flag
        return flag

    # --- access -------------------------------------------------------------------------
    def __getattr__(self, name):
        flags = object.__getattribute__(self, "_flags")
        if name not in flags:
            raise AttributeError(f"FLAGS: no flag named {name!r} is defined")
        if not self._parsed:
            self._parse(list(sys.argv), known_only=True)
        return flags[name].value

    def __setattr__(self, name, value):
        if name not in self._flags:
            raise AttributeError(f"FLAGS: no flag named {name!r} is defined")
        self._flags[name].value = value

    def __contains__(self, name) -> bool:
        return name in self._flags

    def __getitem__(self, name) -> Flag:
        return self._flags[name]

    def __iter__(self):
        return iter(self._flags)

    def is_parsed(self) -> bool:
        return self._parsed

    def mark_as_parsed(self) -> None:
        object.__setattr__(self, "_parsed", True)

    def flag_values_dict(self) -> dict:
        return {name: flag.value for name, flag in self._flags.items()}

    def unparse_flags(self) -> None:
        for flag in self._flags.values():
            flag.value, flag.present = flag.default, 0
        object.__setattr__(self, "_parsed", False)

    def __call__(self, argv, known_only=False):
        """Parse `argv` (argv[0] is the program): set the flags it names; returns argv[0]
        and the arguments that are not flags."""
        if isinstance(argv, str):
            raise TypeError("FLAGS(argv): argv must be a list of strings, not a str")
        return self._parse(list(argv), known_only)

    def _parse(self, argv, known_only):
        if not argv:
            raise ValueError("FLAGS(argv): argv must hold at least the program name")
        rest, args, i = [argv[0]], argv[1:], 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                rest.extend(args[i:])
                break
            if not arg.startswith("-") or arg == "-":
                rest.append(arg)
                continue
            body = arg.lstrip("-")
            name, has_value, value = body.partition("=")
            flag = self._flags.get(name)
            if flag is None and name.startswith("no") and not has_value:
                negated = self._flags.get(name[2:])
                if negated is not None and negated.boolean:
                    negated.value, negated.present = False, negated.present + 1
                    continue
            if flag is None:
                if known_only:
                    rest.append(arg)
                    continue
                raise UnrecognizedFlagError(f"Unknown command line flag '{name}'")
            if flag.boolean and not has_value:
                flag.value = True
            else:
                if not has_value:
                    if i >= len(args):
                        raise IllegalFlagValueError(f"flag --{name}: a value is expected")
                    value = args[i]
                    i += 1
                flag.value = flag.parse(value)
            flag.present += 1
        self.mark_as_parsed()
        return rest


FLAGS = FlagValues()


def _definer(kind, parse, boolean=False):
    def define(name, default, help, flag_values=None, **kwargs):  # noqa: A002
        flag = Flag(name, default, help, kind, parse, boolean)
        return (flag_values or FLAGS)._define(flag)

    define.__name__ = f"DEFINE_{kind}"
    define.__doc__ = f"Define a {kind} flag --name (default, help) on FLAGS."
    return define


DEFINE_string = _definer("string", str)
DEFINE_integer = _definer("integer", _parse_int)
DEFINE_float = _definer("float", float)
DEFINE_boolean = _definer("boolean", _parse_bool, boolean=True)
DEFINE_bool = DEFINE_boolean
DEFINE_list = _definer("list", _parse_list)


def DEFINE_enum(name, default, enum_values, help, flag_values=None, **kwargs):  # noqa: A002, N802
    """Define a string flag whose value must be one of `enum_values`."""
    choices = list(enum_values)

    def parse(text):
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {choices}")
        return text

    return (flag_values or FLAGS)._define(Flag(name, default, help, "enum", parse))


def run(main=None, argv=None):
    """tf.app.run: parse the flags out of argv (default sys.argv), call `main(rest)` with
    argv[0] and the arguments left, and exit with its result."""
    if main is None:
        main = getattr(sys.modules["__main__"], "main", None)
        if main is None:
            raise ValueError("app.run: no main given and __main__ defines no main()")
    rest = FLAGS(list(sys.argv if argv is None else argv))
    sys.exit(main(rest))
