"""Tests for pingap.regexes: Rust ``regex`` crate syntax accepted, matched and refused as
the crate does (a table of features with the matches Rust gives)."""

from __future__ import annotations

import pytest

from pingap.regexes import check_pingap_regex, compile_pingap_regex

# (pattern, text, what Rust's Regex::find returns: the matched text or None)
RUST_MATCHES = [
    # Unicode classes
    (r"^/\p{L}+$", "/héllo", "/héllo"),
    (r"^/\p{L}+$", "/hé1lo", None),
    (r"\pL+", "12ab", "ab"),
    (r"\P{L}+", "ab12", "12"),
    (r"\p{Greek}+", "aαβ", "αβ"),
    (r"[\p{Lu}\d]+", "aB3c", "B3"),
    # \z: end of text (Python's \Z); \A: start of text
    (r"^/api\z", "/api", "/api"),
    (r"^/api\z", "/api/", None),
    (r"\A/x", "/x", "/x"),
    # POSIX classes (Python's re accepts these with a warning and never matches)
    (r"^/[[:digit:]]+$", "/123", "/123"),
    (r"^/[[:digit:]]+$", "/12a", None),
    (r"[[:alpha:]]+", "12ab", "ab"),
    (r"[[:^alpha:]]+", "ab12", "12"),
    (r"[[:xdigit:]]+", "zzBEEFzz", "BEEF"),
    (r"[[:word:][:punct:]]+", " a_!b ", "a_!b"),
    # named groups, both spellings
    (r"^/(?P<id>\d+)", "/42/x", "/42"),
    (r"^/(?<id>\d+)", "/42/x", "/42"),
    # nested classes and set operations
    (r"[a-z&&[^aeiou]]+", "aebcd", "bcd"),
    (r"[a-z--[aeiou]]+", "aebcd", "bcd"),
    (r"[a[0-9]]+", "xa1b", "a1"),
    (r"[]a]+", "x]a", "]a"),
    (r"[a|b]", "|", "|"),  # '|' is a literal inside a Rust class
    # escapes
    (r"\x41\x{42}\u0043\u{44}\U00000045", "ABCDE", "ABCDE"),
    (r"\.\/\-", "./-", "./-"),
    (r"\t", "a\tb", "\t"),
    # word boundaries, including Rust's \< \> \b{start} \b{end}
    (r"\bfoo\b", "a foo", "foo"),
    (r"\<foo\>", "a foo b", "foo"),
    (r"\b{start}foo\b{end}", "foo", "foo"),
    (r"\<foo", "afoo", None),
    # flags: scoped to their group as in Rust; u and R accepted
    (r"(?i)abc", "ABC", "ABC"),
    (r"a(?i:b)c", "aBc", "aBc"),
    (r"a(?i:b)c", "aBC", None),
    (r"(a(?i)b)c", "aBC", None),
    (r"(?u)\w+", "é!", "é"),
    (r"(?s)a.b", "a\nb", "a\nb"),
    (r"a.b", "a\nb", None),
    (r"(?x) a b  # a comment\n c", "abc", "abc"),
    # repetitions and lazy quantifiers
    (r"a{2,3}", "aaaa", "aaa"),
    (r"a{2,}?", "aaaa", "aa"),
    (r"a{ 2 }", "aaa", "aa"),
    (r"a+?", "aaa", "a"),
    # leftmost-first alternation, unanchored search
    (r"ab|abc", "xabc", "ab"),
]


@pytest.mark.parametrize(("pattern", "text", "found"), RUST_MATCHES)
def test_rust_syntax_matches_as_rust(pattern: str, text: str, found: str | None) -> None:
    pattern = pattern.replace("\\n", "\n") if pattern.startswith("(?x)") else pattern
    match = compile_pingap_regex(pattern).search(text)
    assert (match.group(0) if match else None) == found


def test_named_groups_capture() -> None:
    match = compile_pingap_regex(r"^/(?<kind>\p{L}+)/(?P<id>[[:digit:]]+)").search("/düsen/7")
    assert match is not None
    assert match.groupdict() == {"kind": "düsen", "id": "7"}


# (pattern, a word the error must contain): what Rust's regex refuses
RUST_REJECTS = [
    (r"a(?=b)", "look-around"),
    (r"a(?!b)", "look-around"),
    (r"(?<=a)b", "look-around"),
    (r"(?<!a)b", "look-around"),
    (r"(a)\1", "backreference"),
    (r"(?P<n>a)(?P=n)", "backreferences"),
    (r"(?>a)", "atomic"),
    (r"(?#note)a", "comments"),
    (r"(?(1)a|b)", "conditionals"),
    (r"a++", "possessive"),
    (r"a*+", "possessive"),
    (r"a{e<=1}", "repetition"),
    (r"{", "repetition"),
    (r"a{3,2}", "minimum"),
    (r"*a", "nothing to repeat"),
    (r"\Z", "unknown escape"),
    (r"\K", "unknown escape"),
    (r"\y", "unknown escape"),
    (r"[\b]", "unknown escape"),
    (r"(?P<a>x)(?P<a>y)", "duplicate"),
    (r"(?P<1a>x)", "group name"),
    (r"[a", "unclosed"),
    (r"\x{110000}", "Unicode scalar"),
    (r"\xZZ", "hexadecimal"),
    (r"(?U)a*", "swap greed"),
    (r"(?-u)a", "bytes"),
    (r"\p{NoSuchClass}", "invalid regex"),
    ("a\\", "incomplete escape"),
]


@pytest.mark.parametrize(("pattern", "word"), RUST_REJECTS)
def test_rejects_what_rust_rejects(pattern: str, word: str) -> None:
    with pytest.raises(ValueError) as info:
        compile_pingap_regex(pattern)
    assert word in str(info.value)
    assert check_pingap_regex(pattern) == str(info.value)


def test_check_accepts_valid() -> None:
    assert check_pingap_regex(r"^/(?<id>\p{N}+)\z") is None
