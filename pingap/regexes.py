"""Compile a pingap regex: Rust ``regex`` crate syntax, checked here, run by ``regex``.

pingap compiles every user regex (location ``path``/``host``/``rewrite``, plugin options
such as ``ua_list``) with Rust's ``regex`` crate. ``compile_pingap_regex`` is the one home
for that here: it reads the pattern as the Rust crate does, rejects what the crate rejects
(look-around, backreferences, atomic groups, possessive quantifiers, recursion,
conditionals, comments, unknown escapes, a stray ``{``), translates the few spellings that
differ (``\\z``, ``\\x{..}``, ``\\u{..}``, ``\\<``/``\\>``, ``\\b{start}``/``\\b{end}``, the
``u``/``R`` flags) and compiles the result with the ``regex`` package in its VERSION1 mode,
whose syntax is a superset of Rust's where it matters: Unicode classes (``\\p{L}``), POSIX
classes (``[[:digit:]]``), nested classes and class set operations (``&&``, ``--``, ``~~``),
``(?P<n>..)`` and ``(?<n>..)`` groups, and inline flags scoped to their group.

Matching is a leftmost-first search as in Rust (``Regex::is_match``/``captures``); the
engines differ only in speed guarantees (backtracking here, linear time in Rust).
Not supported: the ``U`` (swap greed) and ``-u`` (bytes) flags, and ``\\b{start-half}``/
``\\b{end-half}``; they are reported as errors.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["PingapRegex", "check_pingap_regex", "compile_pingap_regex"]

PingapRegex = Any
"""A compiled pattern (``regex.Pattern[str]``): ``search``, ``groupindex``, ``groups``."""

_SIMPLE_ESCAPES = frozenset("aftnrvdDsSwW")
_ANCHOR_ESCAPES = {"b": r"\b", "B": r"\B", "A": r"\A", "z": r"\Z", "<": r"\m", ">": r"\M"}
_WORD_BOUNDARIES = {"{start}": r"\m", "{end}": r"\M"}
_POSIX_CLASSES = frozenset({"alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph",
                            "lower", "print", "punct", "space", "upper", "word", "xdigit"})
_REPETITION = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")
_HEX_BRACED = re.compile(r"\{([0-9A-Fa-f]{1,8})\}")
_HEX_FIXED = {"x": 2, "u": 4, "U": 8}
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FLAGS = re.compile(r"([imsxuUR]*)(?:-([imsxuUR]*))?([:)])")


class _Reject(ValueError):
    """A construct the Rust ``regex`` crate does not accept; the message is for the user."""


def compile_pingap_regex(pattern: str) -> PingapRegex:
    """The compiled ``pattern`` (Rust ``regex`` syntax); raises ``ValueError`` with the
    reason when the Rust crate would refuse it (so pingap would too)."""
    import regex  # loaded by the first config that has a regex, not by every process

    try:
        translated = _Translator(pattern).translate()
        return regex.compile(translated, regex.V1)
    except _Reject as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    except regex.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None


def check_pingap_regex(pattern: str) -> str | None:
    """The error message for ``pattern``, or None when it compiles."""
    try:
        compile_pingap_regex(pattern)
    except ValueError as exc:
        return str(exc)
    return None


class _Translator:
    """One left-to-right pass over a Rust pattern, emitting ``regex`` V1 syntax."""

    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0
        self.out: list[str] = []
        self.names: set[str] = set()
        self.verbose = False
        self.can_repeat = False  # the last item is an expression a quantifier may follow

    def translate(self) -> str:
        src = self.src
        while self.pos < len(src):
            char = src[self.pos]
            if self.verbose and char in " \t\r\n\f\v":
                self.pos += 1
            elif self.verbose and char == "#":
                end = src.find("\n", self.pos)
                self.pos = len(src) if end < 0 else end + 1
            elif char == "\\":
                self._escape(in_class=False)
            elif char == "(":
                self._group()
            elif char == "[":
                self._class()
            elif char in "*+?":
                self._quantifier(char)
            elif char == "{":
                self._counted()
            else:
                self.out.append(char)
                self.pos += 1
                self.can_repeat = char not in "|(^$"
        return "".join(self.out)

    def _quantifier(self, char: str) -> None:
        if not self.can_repeat:
            raise _Reject(f"repetition operator '{char}' at offset {self.pos} has nothing "
                          "to repeat")
        self.out.append(char)
        self.pos += 1
        self._after_quantifier()

    def _counted(self) -> None:
        found = _REPETITION.match(self.src, self.pos)
        if found is None or (found.group(1) == "" and found.group(2) in (None, "")):
            raise _Reject(f"'{{' at offset {self.pos} does not start a repetition like "
                          "{2}, {2,} or {2,5}; write a literal brace as \\{")
        if not self.can_repeat:
            raise _Reject(f"repetition at offset {self.pos} has nothing to repeat")
        low, high = found.group(1), found.group(2)
        if low and high and int(low) > int(high):
            raise _Reject(f"repetition {found.group(0)} has its minimum above its maximum")
        self.out.append(found.group(0).replace(" ", ""))
        self.pos = found.end()
        self._after_quantifier()

    def _after_quantifier(self) -> None:
        if self.src.startswith("?", self.pos):  # lazy: Rust has it too
            self.out.append("?")
            self.pos += 1
        if self.src.startswith("+", self.pos):
            raise _Reject(f"possessive quantifier at offset {self.pos} is not supported "
                          "by Rust's regex")
        self.can_repeat = False

    def _escape(self, *, in_class: bool) -> None:
        src, start = self.src, self.pos
        if start + 1 >= len(src):
            raise _Reject("pattern ends with an incomplete escape '\\'")
        char = src[start + 1]
        self.pos = start + 2
        self.can_repeat = True
        if char in _SIMPLE_ESCAPES:
            self.out.append("\\" + char)
        elif char in _HEX_FIXED:
            self.out.append(self._hex(char))
        elif char in "pP":
            self.out.append(self._property(char))
        elif not in_class and char == "b" and src.startswith("{", self.pos):
            end = src.find("}", self.pos)
            word = src[self.pos:end + 1] if end > 0 else src[self.pos:]
            if word not in _WORD_BOUNDARIES:
                raise _Reject(f"word boundary \\b{word} is not supported here")
            self.out.append(_WORD_BOUNDARIES[word])
            self.pos = end + 1
            self.can_repeat = False
        elif not in_class and char in _ANCHOR_ESCAPES:
            self.out.append(_ANCHOR_ESCAPES[char])
            self.can_repeat = False
        elif char.isdigit():
            raise _Reject(f"backreference or octal escape \\{char} at offset {start} is not "
                          "supported by Rust's regex")
        elif (char.isascii() and char.isalpha()) or (in_class and char in "<>"):
            raise _Reject(f"unknown escape \\{char} at offset {start}")
        else:
            self.out.append("\\" + char)  # an escaped punctuation character: a literal

    def _hex(self, char: str) -> str:
        braced = _HEX_BRACED.match(self.src, self.pos)
        if braced is not None:
            digits = braced.group(1)
            self.pos = braced.end()
        else:
            width = _HEX_FIXED[char]
            digits = self.src[self.pos:self.pos + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise _Reject(f"invalid hexadecimal escape \\{char} at offset {self.pos - 2}")
            self.pos += width
        code = int(digits, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise _Reject(f"\\{char}{{{digits}}} is not a Unicode scalar value")
        return f"\\U{code:08X}"

    def _property(self, char: str) -> str:
        src = self.src
        if src.startswith("{", self.pos):
            end = src.find("}", self.pos)
            if end < 0:
                raise _Reject(f"unclosed Unicode class \\{char}{{ at offset {self.pos - 2}")
            body = src[self.pos:end + 1]
            self.pos = end + 1
            return f"\\{char}{body}"
        if self.pos >= len(src):
            raise _Reject(f"incomplete Unicode class \\{char}")
        self.pos += 1
        return f"\\{char}{src[self.pos - 1]}"

    def _group(self) -> None:
        src, start = self.src, self.pos
        self.can_repeat = False
        if not src.startswith("(?", start):
            self.out.append("(")
            self.pos += 1
            return
        rest = src[start + 2:]
        for prefix in ("P<", "<"):
            if rest.startswith(prefix) and not rest.startswith(("<=", "<!")):
                self._named_group(start + 2 + len(prefix))
                return
        if rest.startswith(("=", "!", "<=", "<!")):
            raise _Reject(f"look-around at offset {start} is not supported by Rust's regex")
        flags = _FLAGS.match(src, start + 2)
        if flags is None:
            raise _Reject(f"unsupported group syntax '(?{rest[:2]}' at offset {start} "
                          "(Rust's regex has no atomic groups, recursion, conditionals, "
                          "backreferences or comments)")
        self.out.append(self._flags(*flags.groups()))
        self.pos = flags.end()

    def _named_group(self, name_start: int) -> None:
        end = self.src.find(">", name_start)
        name = self.src[name_start:end] if end >= 0 else ""
        if not name or not _GROUP_NAME.fullmatch(name):
            raise _Reject(f"invalid capture group name {name!r} (letters, digits and '_', "
                          "not starting with a digit)")
        if name in self.names:
            raise _Reject(f"duplicate capture group name {name!r}")
        self.names.add(name)
        self.out.append(f"(?P<{name}>")
        self.pos = end + 1

    def _flags(self, on: str, off: str | None, end: str) -> str:
        if "U" in on or (off and "U" in off):
            raise _Reject("the U (swap greed) flag is not supported here; use lazy "
                          "quantifiers (*?, +?)")
        if off and "u" in off:
            raise _Reject("the -u (bytes) flag is not supported here")
        # u (Unicode) is the default of both engines; R (CRLF line ends) only changes
        # multi-line anchors, and paths, hosts and header values hold no line breaks.
        keep_on = "".join(f for f in on if f in "imsx")
        keep_off = "".join(f for f in (off or "") if f in "imsx")
        if end == ")":
            if "x" in keep_on:
                self.verbose = True
            if "x" in keep_off:
                self.verbose = False
        if not keep_on and not keep_off:
            return "(?:" if end == ":" else ""
        return f"(?{keep_on}{'-' + keep_off if keep_off else ''}{end}"

    def _class(self) -> None:
        """A bracket class, nested classes and set operators included."""
        src = self.src
        self.out.append("[")
        self.pos += 1
        depth = 1
        first = True
        while depth:
            if self.pos >= len(src):
                raise _Reject("unclosed character class '['")
            char = src[self.pos]
            if first and char == "^":
                self.out.append("^")
                self.pos += 1
                continue
            if first and char == "]":  # a literal ']' as the first member
                self.out.append("\\]")
                self.pos += 1
                first = False
                continue
            first = False
            if char == "\\":
                self._escape(in_class=True)
            elif char == "[" and self._posix_class():
                continue
            elif char == "[":
                depth += 1
                first = True
                self.out.append("[")
                self.pos += 1
            elif char == "]":
                depth -= 1
                self.out.append("]")
                self.pos += 1
            elif char == "|":  # a literal in Rust; the union operator '||' in VERSION1
                self.out.append("\\|")
                self.pos += 1
            else:
                self.out.append(char)
                self.pos += 1
        self.can_repeat = True

    def _posix_class(self) -> bool:
        """Emit ``[:name:]`` at the position and say so; False for any other '['
        (a nested class, which may start with ':' as in Rust)."""
        if not self.src.startswith("[:", self.pos):
            return False
        end = self.src.find(":]", self.pos + 2)
        body = self.src[self.pos + 2:end] if end >= 0 else ""
        if (body[1:] if body.startswith("^") else body) not in _POSIX_CLASSES:
            return False
        self.out.append(f"[:{body}:]")
        self.pos = end + 2
        return True
