"""Secret scrubbing: applied to hunks and comment bodies before anything is stored or trained on,
and to every log record, so no token or key can be learned by a model or leak through a log.

What is replaced by ``<REDACTED>`` (docs/secret-scrubbing.md):
  private key blocks      PEM (RSA, EC, DSA, OPENSSH, PKCS#8, encrypted) and PGP private key blocks:
                          the key material of every line, the BEGIN/END lines kept
  vendor tokens           GitHub (ghp_/gho_/ghu_/ghs_/ghr_, github_pat_), GitLab (glpat-), AWS key
                          ids (AKIA/ASIA...), Slack (xox?-, xapp-, hooks.slack.com URLs), Stripe
                          (sk_/rk_ live/test, whsec_), Google (AIza...), OpenAI/Anthropic-style sk-...,
                          Hugging Face hf_, npm_, PyPI pypi-..., JWTs
  AWS secret keys         40 characters of base64 on a line that names AWS or holds a key id
  authorization headers   Authorization / Proxy-Authorization: Bearer|token|Basic <value>, Bearer <value>
  URLs with credentials   scheme://user:password@host, any case of scheme, empty user, / in the password
  assignments             a name ending in password, passwd, passphrase, pass, pwd, secret, token,
                          api key, access key, secret key, private key, signing key, encryption key,
                          master key or app key, bound with = : := => to a literal (Python, YAML, JSON,
                          .env, shell, INI, JS, Go, PHP, command-line flags, log key=value): the value

A match never spans lines, and only the secret itself is replaced: the line count and every line
without a secret stay exactly as they were, so a scrubbed hunk still lines up with its diff.
Names bound to code (``pwd = os.getcwd()``, ``password=password``, ``token: str``), templates
(``{password}``, ``${TOKEN}``, ``<api-key>``), masks (``****``) and tokenizer tokens (``"<pad>"``)
are left alone. Each rule has lower-case hint substrings; a text without any of a rule's hints
skips that rule's regex (scrubbing runs on every stored comment and every log record).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

PLACEHOLDER = "<REDACTED>"


@dataclass(frozen=True)
class _Rule:
    name: str
    hints: tuple[str, ...]
    apply: Callable[[str], str]


def _replace_all(pattern: str, flags: int = 0) -> Callable[[str], str]:
    regex = re.compile(pattern, flags)
    return lambda text: regex.sub(PLACEHOLDER, text)


def _replace_group(
    pattern: str, group: str, check: Callable[[str], bool] | None = None, flags: int = 0
) -> Callable[[str], str]:
    """Replace only ``group`` of each match (the secret), keeping the context around it."""
    regex = re.compile(pattern, flags)

    def sub(m: re.Match[str]) -> str:
        value = m.group(group)
        if check is not None and not check(value):
            return m.group(0)
        s, e = m.start(group) - m.start(0), m.end(group) - m.start(0)
        whole = m.group(0)
        return whole[:s] + PLACEHOLDER + whole[e:]

    return lambda text: regex.sub(sub, text)


# --- value judgements -----------------------------------------------------------------------------

_TEMPLATE = re.compile(
    r"\{[\w.\[\]'\":!]*\}|\$\{\w+(?::?-[^}]*)?\}|\$\([a-z][\w\-]*[ )]"
    r"|^\$(?:[A-Z_][A-Z0-9_]*|[a-z_][a-z0-9_]*)$|^<.*>$|^\[.*\]$|^\(.*\)$"
)
# printf-style: a template when short or worded ("%s:%s", "Bearer %s"), not inside a 50-character key
_PRINTF = re.compile(r"%[sdr](?![A-Za-z0-9])|%\(\w+\)[sdr]")
_PATHLIKE = re.compile(r"(?:~|\.{1,2})?/[\w.\-/]*|[A-Za-z]:\\[\w.\\\- ]*")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_NOT_SECRETS = frozenset(
    "password passwd pass pwd passphrase secret token apikey api_key key none null nil undefined true "
    "false yes no on off string str bytes text redacted hidden masked required optional empty".split()
)


_CONTEXT = 200  # characters of a line looked at around a match: bounded, so a huge line stays linear


def _line_before(text: str, pos: int) -> str:
    """The line's text before ``pos`` (at most _CONTEXT characters of it)."""
    window = text[max(0, pos - _CONTEXT) : pos]
    return window[window.rfind("\n") + 1 :]


def _line_after(text: str, pos: int) -> str:
    """The line's text from ``pos`` (at most _CONTEXT characters of it)."""
    return text[pos : pos + _CONTEXT].split("\n", 1)[0]


def _has_letter_and_digit(v: str) -> bool:
    return any(c.isdigit() for c in v) and any(c.isalpha() for c in v)


def _mixed_case_digits(v: str) -> bool:
    return any(c.isupper() for c in v) and any(c.islower() for c in v) and any(c.isdigit() for c in v)


def _random_letters(v: str) -> bool:
    """Letters drawn at random (a key without digits), not a CamelCase name: long, about as many
    capitals as small letters, and the case changing often."""
    if len(v) < 20 or not v.isalpha():
        return False
    upper = sum(c.isupper() for c in v)
    switches = sum(a.isupper() != b.isupper() for a, b in zip(v, v[1:]))
    return 0.25 * len(v) <= upper <= 0.75 * len(v) and switches >= len(v) / 4


def _random_enough(v: str) -> bool:
    """A token or key: no spaces, and digits mixed with letters (or long and mixed-case)."""
    if len(v) < 8 or any(c.isspace() or c in "<>[]{}|\\" for c in v):  # not regexes or special tokens
        return False
    if _has_letter_and_digit(v):
        return True
    return len(v) >= 20 and any(c.isupper() for c in v) and any(c.islower() for c in v)


_RANDOM_AFTER_DOLLAR = re.compile(r"\$[A-Z0-9]*[0-9][A-Z0-9]*[0-9][A-Z0-9]*[0-9][A-Z0-9]*")


def _placeholder_like(v: str, name: str) -> bool:
    """Values that are not secrets whatever name they are bound to."""
    low = v.lower()
    norm = re.sub(r"[^a-z0-9]", "", low)
    names = {re.sub(r"[^a-z0-9]", "", part) for part in (name.lower(), name.lower().rsplit(".", 1)[-1])}
    return (
        PLACEHOLDER in v
        or (_TEMPLATE.search(v) is not None and not _RANDOM_AFTER_DOLLAR.fullmatch(v))  # $VM1A839FRT5X: a key
        or (_PRINTF.search(v) is not None and (len(v) <= 24 or " " in v))
        or norm.strip("x") == ""  # ****, xxxx, :****
        or (_PATHLIKE.fullmatch(v) is not None and not _mixed_case_digits(v))  # /run/secrets/db, not /9dXZD/...
        or low in _NOT_SECRETS
        or norm in _NOT_SECRETS
        or norm in names
        or any(len(n) >= 5 and n in norm for n in names)  # token = self.token2, KEY = mod.KEY
    )


# --- private key blocks (line by line, so no line is merged or dropped) -------------------------

_KEY_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_KEY_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
# one line of key material, as it sits in a file, a diff, a string literal or a YAML block
_KEY_LINE = re.compile(
    r"(?P<pre>[+\- ]?[ \t]*(?:[bBrRuU]?[\"'`])?)(?P<body>[A-Za-z0-9+/=]*+)"
    r"(?P<post>(?:\\[nr])*[\"'`]?[ \t]*[,)+;\\]*[ \t]*)"
)
_KEY_HEADER = re.compile(r"[+\- ]?[ \t]*(?:[bBrRuU]?[\"'`])?[A-Za-z][A-Za-z0-9\-]*: .*")
# escapes and earlier placeholders are kept; what is left of the alternatives is key material
_INLINE_MATERIAL = re.compile(r"\\[nr]|" + re.escape(PLACEHOLDER) + r"|[A-Za-z0-9+/]{8,}=*")
_ENCLOSED_MATERIAL = re.compile(r"\\[nr]|" + re.escape(PLACEHOLDER) + r"|[A-Za-z0-9+/]+=*|=[A-Za-z0-9+/]+")


def _redact_inline(segment: str, enclosed: bool = False) -> str:
    """Key material inside one line (escaped newlines), keeping the escapes; ``enclosed``: the
    segment lies between BEGIN and END, so every base64 run in it is key material."""
    regex = _ENCLOSED_MATERIAL if enclosed else _INLINE_MATERIAL
    return regex.sub(
        lambda m: m.group(0) if m.group(0)[0] == "\\" or m.group(0) == PLACEHOLDER else PLACEHOLDER, segment
    )


def _scrub_key_blocks(text: str) -> str:
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        begin = _KEY_BEGIN.search(lines[i])
        if begin is None:
            i += 1
            continue
        head, rest = lines[i][: begin.end()], lines[i][begin.end() :]
        end = _KEY_END.search(rest)
        if end is not None:  # the whole block on one line (escaped newlines, as in a JSON file)
            lines[i] = head + _redact_inline(rest[: end.start()], enclosed=True) + rest[end.start() :]
            i += 1
            continue
        lines[i] = head + _redact_inline(rest)
        i += 1
        seen_body = False
        while i < len(lines):
            line = lines[i]
            end = _KEY_END.search(line)
            if end is not None:
                m = _KEY_LINE.fullmatch(line[: end.start()])
                if m and m.group("body"):
                    lines[i] = m.group("pre") + PLACEHOLDER + m.group("post") + line[end.start() :]
                i += 1
                break
            m = _KEY_LINE.fullmatch(line)
            if m and m.group("body"):
                body = m.group("body")
                short = len(body) < 16 and not body.startswith("=") and not body.endswith("=")
                if short and not any(_KEY_END.search(ln) for ln in lines[i + 1 : i + 3]):
                    break  # a short word after a BEGIN marker: code, not a key
                lines[i] = m.group("pre") + PLACEHOLDER + m.group("post")
                seen_body = True
            elif not seen_body and (m is not None or _KEY_HEADER.fullmatch(line)):
                pass  # armor headers (Proc-Type, Version, ...) and the blank line after them
            else:
                break  # no END: the block was cut off; what follows is not key material
            i += 1
    return "\n".join(lines)


# --- AWS secret keys: 40 base64 characters, only where the line is about AWS --------------------

_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_CONTEXT = ("aws", "akia", "asia", "secretaccesskey", "secret_access_key", "secret_key")


def _scrub_aws_secret(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        v = m.group(0)
        if not _mixed_case_digits(v):  # git SHAs, paths and words are not
            return v
        line = (_line_before(text, m.start()) + " " + _line_after(text, m.end())).lower()
        return PLACEHOLDER if any(w in line for w in _AWS_CONTEXT) else v

    return _AWS_SECRET.sub(sub, text)


# --- URLs with a password ---------------------------------------------------------------------------

# anchored on "://" (a literal the regex engine finds fast); the scheme in front does not matter
_URL_CREDS = re.compile(r"://[^\s:/?#@\"'`<>]{0,100}:(?P<pw>[^\s\"'`<>]{1,200}?)@(?=[A-Za-z0-9\[_%])")
# the rest of the authority after the first "@": an "@" in it means the password held one (pa@ss@host)
_AUTHORITY_REST = re.compile(r"[^\s/?#\"'`<>@]{0,200}(?:@[^\s/?#\"'`<>@]{0,200}){0,8}")


def _scrub_url_credentials(text: str) -> str:
    """``scheme://user:password@host``: the password, up to the authority's last "@" (RFC 3986: the
    user-info ends there), so ``mysql://root:pa@ss@host/db`` loses all of ``pa@ss``."""
    out: list[str] = []
    last = 0
    for m in _URL_CREDS.finditer(text):
        if m.start() < last:
            continue
        end = m.end("pw")
        found = _AUTHORITY_REST.match(text, m.end())  # matches always, if only ""
        rest = found.group(0) if found else ""
        if "@" in rest:
            end = m.end() + rest.rindex("@")
        password = text[m.start("pw") : end]
        if _url_password_ok(password):
            out += [text[last : m.start("pw")], PLACEHOLDER]
            last = end
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _url_password_ok(pw: str) -> bool:
    if re.fullmatch(r"\d{1,5}(?:[/?#].*)?", pw):  # host:port/path@..., not a password
        return False
    if "@" in pw:  # pa@ss: no placeholder has an @, though without it the letters may spell one
        return _TEMPLATE.search(pw) is None
    return not _placeholder_like(pw, "password")


# --- name = value assignments -----------------------------------------------------------------------

# a secret word ending a name, right before a separator, found in the lower-cased text (fast: no
# case folding in the regex); "key" only counts after api/access/secret/... (see _KEY_PREFIX)
_WORD_AT_SEP = re.compile(
    r"(?:pass(?:word|wd|phrase)?|pwd|secret|token|key(?:[_\-]?id)?|credentials?)(?=[\"'`]?\]?[ \t]*[:=,])"
)
# account/storage/subscription: Azure (AccountKey=, Ocp-Apim-Subscription-Key:); auth/service/
# client/db/priv: the key names detect-secrets' keyword plugin lists
_KEY_PREFIX = re.compile(
    r"(?:api|access|secret|private|priv|signing|encryption|master|app|account|storage|subscription|auth|service"
    r"|client|db|database)[_\-]?$"
)
_ASSIGN_TAIL = re.compile(
    r"(?P<close>[\"'`]?\]?)"
    r"(?P<annot>[ \t]*:[ \t]*[A-Za-z_][\w.\[\], |]{0,60}?(?=[ \t]*=[^=]))?"
    r"(?P<sep>[ \t]*(?P<op>:=|=>|=(?!~)|:(?![:=])|,)[ \t]*)"
    r"(?P<value>[bBrRuUfF]{0,2}\"[^\"\n]{0,4096}\"|[bBrRuUfF]{0,2}'[^'\n]{0,4096}'|`[^`\n]{0,4096}`"
    r"|[^\s\"'`,;(){}\[\]<>|\\&]{1,500})"
)
_VALUE_RUN = re.compile(r"[^\s\"'`,;(){}\[\]<>|\\&]*")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.\-]*$")
_LINE_START = re.compile(r"[+\- ]?[ \t]*(?:(?:export|set|setx|env|arg|declare|readonly|local|-)[ \t]+)*", re.I)
_AT_EOL = re.compile(r"[ \t]*(?:[#;].*)?")
_YAML_RESERVED = "!&*@%`|>'\""
_SNAKE_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|_\w*")
# names written as one word: authtoken (ngrok), apitoken, dbpassword, rootpass
_JOINED_PREFIXES = (
    "api",
    "access",
    "auth",
    "bot",
    "refresh",
    "session",
    "app",
    "client",
    "db",
    "admin",
    "root",
    "user",
    "master",
    "secret",
    "private",
    "webhook",
    "signing",
    "personal",
    "redis",
    "mysql",
    "smtp",
    "mail",
    "ldap",
    "consumer",
    "bearer",
    "encryption",
    "vault",
    "pg",
)
_TYPE_WORD = re.compile(r"(?:[A-Z][a-z]+)+|[a-z]{1,5}")  # SecretStr, Token, bytes: annotations, not passwords


def _secret_word(lowered: str, end: int) -> tuple[int, int] | None:
    """The span of the secret word that ends exactly at ``end`` in ``lowered`` (followed there by a
    separator), or None."""
    m = _WORD_AT_SEP.search(lowered, max(0, end - 10))
    if m is None or m.end() != end:
        return None
    if not m.group(0).startswith("key"):
        return m.span()
    prefix = _KEY_PREFIX.search(lowered, max(0, m.start() - 16), m.start())
    return None if prefix is None else (prefix.start(), end)


def _name_start(text: str, ws: int, word: str) -> int | None:
    """Start of the name that ``word`` (at ``ws``) ends, or None when the word sits inside another
    word (bypass, mytoken) rather than ending a name (DB_PASSWORD, dbPassword, authtoken)."""
    prev = text[ws - 1] if ws else ""
    if prev.isalnum():
        camel = word[0].isupper() and (prev.islower() or prev.isdigit())
        # the ASCII run the word ends ("" after a non-ASCII letter such as the é of résuméToken)
        found = re.search(r"[A-Za-z0-9]+$", text[max(0, ws - 12) : ws])
        joined = found.group(0) if found else ""
        shouted = len(word) > 4 and joined.isupper() and word.isupper()  # PGPASSWORD, not BYPASS
        if not camel and not shouted and not joined.lower().endswith(_JOINED_PREFIXES):
            return None
    elif word.lower() == "pass" and prev not in ("_", "-", "."):
        return None  # the bare word "pass" is prose or Python, not a name (DB_PASS, --pass)
    name = _NAME_CHARS.search(text, max(0, ws - 120), ws)  # `*$`: matches, if only the empty string
    return ws - (len(name.group(0)) if name else 0)


def _assignment_value(text: str, ws: int, we: int, tail: re.Match[str]) -> tuple[int, int] | None:
    """The span of the secret value bound to the name ending at ``we``, or None if the value is not
    a literal secret."""
    word = text[ws:we]
    name_start = _name_start(text, ws, word)
    if name_start is None:
        return None
    name = text[name_start:we]
    if "public" in name.lower():
        return None  # publicKeyToken, public_key: published on purpose
    is_password = word[0] in "pP"
    raw = tail.group("value")
    unprefixed = raw.lstrip("bBrRuUfF")
    quoted = len(unprefixed) >= 2 and unprefixed[0] in "\"'`" and unprefixed[-1] == unprefixed[0]
    if tail.group("op") == "," and not (
        quoted
        and tail.group("close")[:1] in ("'", '"')
        and text[max(0, name_start - 9) : name_start].rstrip(" \t")[-2:-1] == "("
    ):
        return None  # only f("NAME", "value"): define(), os.environ.get(), setenv(); not a list of words
    if quoted:
        start = tail.end("value") - len(unprefixed) + 1
        value = unprefixed[1:-1]
        if _placeholder_like(value, name) or len(value.split()) > 4:
            return None
        if _DOTTED.fullmatch(value) and not _has_letter_and_digit(value):
            return None  # "network.ContinueWithAuthParameters_Credentials": a name, not a key
        if not (len(value) >= 4 if is_password else _random_enough(value)):
            return None
        return start, start + len(value)
    # the value pattern stops at 500 characters, so each candidate name scans at most that far; a
    # longer value (an AWS session token) runs on to its end, found only for a name that binds one
    end = tail.end("value")
    if len(raw) == 500:
        if _placeholder_like(raw, name) or not _random_enough(raw):
            return None  # judged on its first 500 characters before its end is looked for
        run = _VALUE_RUN.match(text, end)  # matches always, if only ""
        end = run.end() if run else end
    if not _unquoted_literal(tail, raw, name, name_start, is_password, end):
        return None
    return tail.start("value"), end


def _unquoted_literal(m: re.Match[str], value: str, name: str, name_start: int, is_password: bool, end: int) -> bool:
    """Whether an unquoted value (ending at ``end``) is a literal secret (.env, YAML, INI, flags, log
    lines) rather than code (``pwd = os.getcwd()``, ``f(password=password)``, ``token: str``)."""
    text = m.string
    rest_of_line = _line_after(text, end)
    op, sep = m.group("op"), m.group("sep")
    if rest_of_line[:1] in ("(", "[", ".") or (op == ":" and value[0] in _YAML_RESERVED):
        return False
    if _placeholder_like(value, name) or (value[0] == "=" and sep != "="):  # ==: a comparison
        return False
    if not (len(value) >= 4 if is_password else _random_enough(value)):
        return False
    mixed = _mixed_case_digits(value)
    # a.b.c is attribute access in code but a literal in .env; n7aUFjF3.Sk7z is no code anyone writes
    dotted = _DOTTED.fullmatch(value) is not None and not all(_has_letter_and_digit(p) for p in value.split("."))
    if m.group("close") or m.group("annot") or op in (":=", "=>"):
        return False  # a dict key, an annotated or Go/PHP binding: the value is an expression
    at_eol = _AT_EOL.fullmatch(rest_of_line) is not None
    identifier_only = _IDENT.fullmatch(value) is not None and not _has_letter_and_digit(value)
    code_like = not mixed and (identifier_only or _SNAKE_NAME.fullmatch(value) is not None or value.isdigit())
    if name.startswith("-"):  # a command-line flag: --password=...
        return op == "="
    prefix = _line_before(text, name_start)
    if _LINE_START.fullmatch(prefix):
        if op == "=" and sep == "=":  # .env / shell NAME=value, unless a keyword argument on its own line
            kwarg = (
                prefix.strip(" \t+-") == ""
                and prefix.strip("+-") != ""
                and _IDENT.fullmatch(name)
                and name.islower()
                and (code_like or dotted)
            )
            return not kwarg and rest_of_line.lstrip()[:1] not in (",", ")")
        if op == ":":  # YAML: the whole rest of the line is the value
            return at_eol and not _TYPE_WORD.fullmatch(value) and not (dotted and not _has_letter_and_digit(value))
        # `name = value`: INI, or Python where an unquoted value is an expression
        return at_eol and not code_like and not dotted
    before = prefix.rstrip(" \t")
    if before[-1:] in "(,[{.=:":
        return False  # a keyword argument, a dict entry, an attribute: code
    # key=value inside a log line, a connection string or a shell command
    return op == "=" or (not dotted and (_has_letter_and_digit(value) or _random_letters(value)))


# <password>value</password> (Maven, NuGet, app configs) and .netrc's "machine h login u password p"
_XML_ELEMENT = re.compile(r"<(?P<tag>[A-Za-z_][\w.\-]*)>(?P<value>[^<>\n]+)</(?P=tag)>")
_NETRC = re.compile(
    r"(?<![^\n+\- \t])machine[ \t]+\S{1,200}[ \t]+(?:[^\n]{0,200}?[ \t])?"
    r"password[ \t]+(?P<value>\S{1,200})"
)


def _scrub_markup(text: str) -> str:
    def element(m: re.Match[str]) -> str:
        tag, value = m.group("tag"), m.group("value")
        word = _secret_word(tag.lower() + "=", len(tag))
        if word is None or _name_start(tag, word[0], tag[word[0] :]) is None or "public" in tag.lower():
            return m.group(0)
        is_password = tag[word[0]] in "pP"
        if _placeholder_like(value, tag) or not (len(value) >= 4 if is_password else _random_enough(value)):
            return m.group(0)
        return f"<{tag}>{PLACEHOLDER}</{tag}>"

    def netrc(m: re.Match[str]) -> str:
        if _placeholder_like(m.group("value"), "password"):
            return m.group(0)
        return m.group(0)[: m.start("value") - m.start(0)] + PLACEHOLDER

    if "</" in text:
        text = _XML_ELEMENT.sub(element, text)
    if "machine" in text:
        text = _NETRC.sub(netrc, text)
    return text


def _scrub_assignments(text: str) -> str:
    text = _scrub_markup(text)
    lowered = text.lower()
    if len(lowered) != len(text):  # a character whose lower case is longer: positions would drift
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    out: list[str] = []
    last = 0
    for m in _WORD_AT_SEP.finditer(lowered):
        ws, we = m.span()
        if m.group(0).startswith("key"):  # only api_key, secretKey, private_key_id...: not cache_key, monkey
            prefix = _KEY_PREFIX.search(lowered, max(0, ws - 16), ws)
            if prefix is None:
                continue
            ws = prefix.start()
        if ws < last:
            continue
        tail = _ASSIGN_TAIL.match(text, we)
        if tail is None:
            continue
        span = _assignment_value(text, ws, we, tail)
        if span is not None:
            out += [text[last : span[0]], PLACEHOLDER]
            last = span[1]
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


# --- command-line flags whose value follows a space --------------------------------------------------

# --password VALUE, --account-key VALUE, --client-secret VALUE; -p VALUE after -u USER (az, docker,
# twine, mysql login lines)
_FLAG_VALUE = re.compile(
    r"-(?P<flag>-(?i:(?:[a-z][\w\-]{0,60}?)?(?:pass(?:word|wd|phrase)?|pwd|secret|token|key(?:[_\-]?id)?|credentials?))"
    r"|p)[ \t]+(?P<value>\"[^\"\n]{1,4096}\"|'[^'\n]{1,4096}'|[^\s\"'`|;&<>()]{1,4096})"
)
_FLAG_EDGE = re.compile(r"[\w\-]")
_NOT_A_PASSWORD = re.compile(r"[\d:./]+")  # docker run -u 1000 -p 8080:80: a port mapping
_USER_FLAG = re.compile(r"(?:^|[ \t])(?:-u|--user(?:name)?)[ \t=]")


def _flag_is_secret(text: str, m: re.Match[str]) -> tuple[str, bool] | None:
    """(the flag's name, whether it names a password) when the flag takes a secret."""
    flag = "-" + m.group("flag")
    if flag == "-p":
        return ("password", True) if _USER_FLAG.search(_line_before(text, m.start())) else None
    name = flag[2:]
    word = _secret_word(name.lower() + "=", len(name))
    if word is None or "public" in name.lower():
        return None
    return name, name[word[0]] in "pP"


def _scrub_flags(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.start() and _FLAG_EDGE.match(text, m.start() - 1):
            return m.group(0)  # inside a word: some-path, not a flag
        found = _flag_is_secret(text, m)
        raw = m.group("value")
        quoted = raw[0] in "\"'"
        value = raw[1:-1] if quoted else raw
        if found is None or value.startswith("-") or _NOT_A_PASSWORD.fullmatch(value):
            return m.group(0)
        name, is_password = found
        if _placeholder_like(value, name) or not (len(value) >= 4 if is_password else _random_enough(value)):
            return m.group(0)
        if value.isalpha() and value.islower():
            return m.group(0)  # "the --username and --password options": prose, not a password
        start = m.start("value") - m.start(0) + quoted
        return m.group(0)[:start] + PLACEHOLDER + m.group(0)[start + len(value) :]

    return _FLAG_VALUE.sub(sub, text)


# --- keys whose shape alone names them (detect-secrets has a plugin for each) --------------------

_EDGE = re.compile(r"[A-Za-z0-9_\-.]")  # a character a key runs on into: no key starts or ends beside one

# Each shape is found from a literal part of it (the regex engine searches literals fast), then the
# rest before that part is checked in a window: (anchor, what must end right before it, or None)
_VENDOR_KEYS: list[tuple[re.Pattern[str], re.Pattern[str] | None]] = [
    (re.compile(r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}"), None),  # SendGrid
    (re.compile(r"-us[0-9]{1,2}"), re.compile(r"[0-9a-f]{32}$")),  # Mailchimp
    (re.compile(r"AC[0-9a-f]{32}"), None),  # Twilio account SID
    (re.compile(r"SK[0-9a-f]{32}"), None),  # Twilio API key SID
    (re.compile(r"\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27}"), re.compile(r"[MNO][A-Za-z0-9_\-]{23,25}$")),  # Discord
    (re.compile(r":[A-Za-z0-9_\-]{35}"), re.compile(r"[0-9]{8,10}$")),  # Telegram bot
    (re.compile(r"sq0(?:csp|atp)-[A-Za-z0-9_\-]{22,43}"), None),  # Square
    (re.compile(r"AKC[A-Za-z0-9]{10,}"), None),  # Artifactory
]


def _vendor_spans(text: str, anchor: re.Pattern[str], head: re.Pattern[str] | None) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for m in anchor.finditer(text):
        start = m.start()
        if head is not None:
            found = head.search(text, max(0, start - 40), start)
            if found is None:
                continue
            start = found.start()
        if (start and _EDGE.match(text, start - 1)) or _EDGE.match(text, m.end()):
            continue  # part of a longer word or token
        value = text[start : m.end()]
        if _has_letter_and_digit(value) and (value[0] not in "MNO" or _mixed_case_digits(value)):
            spans.append((start, m.end()))
    return spans


# one search that rejects a text holding none of the anchors (most log lines) before the eight above
_ANY_VENDOR_ANCHOR = re.compile(
    r"SG\.|-us[0-9]|AC[0-9a-f]{32}|SK[0-9a-f]{32}|\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27}|:[A-Za-z0-9_\-]{35}|sq0|AKC"
)


def _scrub_vendor_keys(text: str) -> str:
    if _ANY_VENDOR_ANCHOR.search(text) is None:
        return text
    for anchor, head in _VENDOR_KEYS:
        spans = _vendor_spans(text, anchor, head)
        for start, end in reversed(spans):
            text = text[:start] + PLACEHOLDER + text[end:]
    return text


# --- authorization headers --------------------------------------------------------------------------

_AUTH_HEADER = re.compile(
    r"(?i)(?<![A-Za-z0-9_\-])(?:proxy-)?authorization[\"'`]?\]?[ \t]*[:=][ \t]*[\"'`]?[ \t]*"
    r"(?P<scheme>(?:bearer|token|basic|digest)\\?[ \t]+)?(?P<value>[A-Za-z0-9_\-.~+/]{8,}=*)"
)
_BEARER = re.compile(r"(?<![A-Za-z0-9])(?i:bearer)\\?[ \t]+(?P<value>[A-Za-z0-9_\-.~+/]{16,}=*)")


def _scrub_auth_headers(text: str) -> str:
    def header(m: re.Match[str]) -> str:
        value = m.group("value")
        if m.group("scheme") is None and (
            not _random_enough(value)
            or _DOTTED.fullmatch(value.rstrip("="))
            or m.string[m.end() : m.end() + 1] in ("(", "[")
        ):
            return m.group(0)  # authorization = base64.decodebytes(...): code, not a header
        s = m.start("value") - m.start(0)
        return m.group(0)[:s] + PLACEHOLDER

    def bearer(m: re.Match[str]) -> str:
        if not _random_enough(m.group("value")):
            return m.group(0)
        s = m.start("value") - m.start(0)
        return m.group(0)[:s] + PLACEHOLDER

    return _BEARER.sub(bearer, _AUTH_HEADER.sub(header, text))


_RULES: list[_Rule] = [
    _Rule("private-key-block", ("private key",), _scrub_key_blocks),
    _Rule(
        "github-token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        _replace_all(
            r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"
            r"(?![A-Za-z0-9_])"
        ),
    ),
    _Rule(
        "gitlab-token",
        ("glpat-", "glptt-", "gldt-", "glrt-"),
        _replace_all(r"(?<![A-Za-z0-9_\-])gl(?:pat|ptt|dt|rt)-[A-Za-z0-9_\-]{20,}"),
    ),
    _Rule(
        "aws-secret-key",
        ("aws", "akia", "asia", "secretaccesskey", "secret_access_key", "secret_key"),
        _scrub_aws_secret,
    ),
    _Rule(
        "aws-access-key-id",
        ("akia", "asia", "abia", "acca"),
        _replace_all(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
    ),
    _Rule(
        "slack-webhook-url",
        ("hooks.slack.com",),
        _replace_group(r"(?i)hooks\.slack\.com/(?:services|workflows|triggers)/(?P<path>[A-Za-z0-9_/\-]+)", "path"),
    ),
    _Rule("slack-token", ("xox", "xapp-"), _replace_all(r"(?<![A-Za-z0-9])(?:xox[abposre]|xapp)-[A-Za-z0-9\-]{10,}")),
    _Rule(
        "stripe-key",
        ("sk_live_", "rk_live_", "sk_test_", "rk_test_", "whsec_"),
        _replace_all(
            r"(?<![A-Za-z0-9_])(?:[rs]k_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9+/=]{20,})"
            r"(?![A-Za-z0-9_])"
        ),
    ),
    _Rule("google-api-key", ("aiza",), _replace_all(r"(?<![A-Za-z0-9_\-])AIza[0-9A-Za-z_\-]{35}(?![A-Za-z0-9_\-])")),
    _Rule(
        "openai-style-key",
        ("sk-",),
        _replace_group(
            r"(?<![A-Za-z0-9_\-])(?P<key>sk-(?:proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,})",
            "key",
            _has_letter_and_digit,
        ),
    ),
    _Rule("huggingface-token", ("hf_",), _replace_all(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}(?![A-Za-z0-9_])")),
    _Rule("npm-token", ("npm_",), _replace_all(r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9_])")),
    _Rule("pypi-token", ("pypi-",), _replace_all(r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{20,}")),
    _Rule(
        "jwt",
        ("eyj",),
        _replace_all(r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ),
    _Rule("authorization-header", ("authorization", "bearer"), _scrub_auth_headers),
    _Rule("url-credentials", ("://",), _scrub_url_credentials),
    _Rule("command-line-flag", ("--", "-p"), _scrub_flags),
    _Rule("vendor-key", (), _scrub_vendor_keys),  # no hint: it rejects a text by one search of its own
    _Rule("assignment", ("pass", "pwd", "secret", "token", "key", "credential"), _scrub_assignments),
]

PATTERN_NAMES = [rule.name for rule in _RULES]
# one scan that rejects the common case (a log line, a comment without any hint) before the
# per-rule checks
_ANY_HINT = re.compile("|".join(sorted({re.escape(h) for rule in _RULES for h in rule.hints}, key=len, reverse=True)))


_ALWAYS = [rule for rule in _RULES if not rule.hints]


def _candidates(text: str) -> list[_Rule]:
    lowered = text.lower()
    if _ANY_HINT.search(lowered) is None:
        return _ALWAYS
    return [rule for rule in _RULES if not rule.hints or any(hint in lowered for hint in rule.hints)]


def scrub_text(text: str | None) -> str | None:
    """Replace every secret in ``text`` with a placeholder; None stays None."""
    if not text:
        return text
    for rule in _candidates(text):
        text = rule.apply(text)
    return text


def find_secrets(text: str) -> list[str]:
    """Names of the rules that would change ``text`` (for reporting what was scrubbed)."""
    return [rule.name for rule in _candidates(text or "") if rule.apply(text) != text]
