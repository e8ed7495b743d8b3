"""A seeded generator of realistic FAKE secrets embedded in realistic code, for measuring the
scrubber (bot.secrets) per kind of secret.

Every value is drawn from ``random.Random(seed)`` in the shape the real issuer uses (prefix, length,
alphabet), so none is a real credential, and the same seed always gives the same corpus. Each
sample is a small snippet (source file, config file, diff hunk or review-comment body): ordinary
lines around one or more lines that carry the secret, so a test can check both that the secret is
gone and that every other line is left byte for byte as it was.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"


@dataclass(frozen=True)
class Sample:
    kind: str
    text: str
    secrets: tuple[str, ...]  # substrings that must not survive scrubbing
    secret_lines: frozenset[int]  # indices of the lines that carry secret material (may change)
    style: str  # where the snippet sits: source, diff, comment


# --- ordinary lines: never to be changed (several are near-misses for a careless scrubber) ---------

PLAIN_PY = [
    "import os",
    "import logging",
    "log = logging.getLogger(__name__)",
    "pwd = os.getcwd()",
    "token = tokenizer(text)",
    "tokens = tokenizer.encode(prompt, add_special_tokens=False)",
    "max_tokens = 512",
    "if password:",
    "    headers['Authorization'] = f'Bearer {token}'",
    "password = getpass.getpass('Password: ')",
    "api_key = os.environ['API_KEY']",
    "secret = secrets.token_hex(32)",
    "if not token:",
    "    raise ValueError('token is required')",
    "PASSWORD_MIN_LENGTH = 12",
    "def login(self, username, password):",
    "    self.password = password",
    "    return self.session.post(url, auth=(username, password), timeout=10)",
    "cache_key = f'user:{user_id}'",
    "token_type = 'bearer'",
    "url = 'https://example.com/api/v1/users'",
    "for key, value in sorted(settings.items()):",
    "    print(key, value)",
    "password_hash = bcrypt.hashpw(password.encode(), salt)",
    "client = Client(api_key=api_key, timeout=30)",
    "log.info('rotating api key for %s', user)",
    "private_key = load_pem_private_key(data, password=None)",
    "access_token = response.json()['access_token']",
    "def refresh(self) -> str:",
    '    """Fetch a new token when the old one expires."""',
    "return {'user': user, 'token': token}",
    "assert resp.status_code == 200, resp.text",
    "with open(path, encoding='utf-8') as fh:",
    "    data = json.load(fh)",
    "",
    "# TODO: move the key to the vault",
]
PLAIN_CONF = [
    "version: '3.9'",
    "services:",
    "  db:",
    "    image: postgres:16",
    "    ports:",
    "      - '5432:5432'",
    "DATABASE_HOST=db.internal",
    "LOG_LEVEL=info",
    "export PATH=$HOME/.local/bin:$PATH",
    "password: ${DB_PASSWORD}",
    "token: !vault secret/ci/token",
    "[database]",
    "port = 5432",
    "PWD=/home/deploy/app",
    "",
]
PLAIN_PROSE = [
    "Thanks, this looks good to me.",
    "Please rotate the token after merging.",
    "The password field should not be logged.",
    "nit: rename `secret` to `shared_secret` for clarity",
    "See https://docs.python.org/3/library/secrets.html for how to make a token.",
]


# --- value generators --------------------------------------------------------------------------


def _s(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64(rng: random.Random, nbytes: int) -> str:
    return base64.b64encode(bytes(rng.getrandbits(8) for _ in range(nbytes))).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


WORDS = [
    "correct",
    "horse",
    "battery",
    "staple",
    "orange",
    "river",
    "planet",
    "coffee",
    "silver",
    "garden",
    "winter",
    "summer",
    "falcon",
    "rocket",
    "marble",
    "violet",
    "thunder",
    "canyon",
]


def password_value(rng: random.Random) -> str:
    style = rng.randrange(6)
    if style == 0:  # Word + year + symbol
        return rng.choice(WORDS).capitalize() + str(rng.randint(1990, 2030)) + rng.choice("!#$%&*?")
    if style == 1:  # random printable, no quotes or spaces
        return _s(rng, ALNUM + "!#$%&*+-.=?@^_~", rng.randint(12, 28))
    if style == 2:  # passphrase
        sep = rng.choice(["-", ".", "_", " "])
        return sep.join(rng.choice(WORDS) for _ in range(rng.randint(3, 4))) + str(rng.randint(0, 99))
    if style == 3:  # leet
        w = rng.choice(WORDS)
        return w.replace("o", "0").replace("e", "3").replace("a", "@").capitalize() + str(rng.randint(10, 999))
    if style == 4:
        return _s(rng, HEX, rng.choice([16, 24, 32]))
    return _s(rng, ALNUM, rng.randint(10, 20))


def url_password(rng: random.Random) -> str:
    return _s(rng, ALNUM + "-._~!$*+", rng.randint(10, 24))


def random_token(rng: random.Random) -> str:
    style = rng.randrange(5)
    if style == 0:
        return _s(rng, HEX, rng.choice([32, 40, 64]))
    if style == 1:
        return _s(rng, B64URL, rng.randint(24, 64))
    if style == 2:
        return "-".join(_s(rng, HEX, n) for n in (8, 4, 4, 4, 12))
    if style == 3:  # bot-style id:secret
        return f"{rng.randint(10**8, 10**10)}:{_s(rng, B64URL, 35)}"
    return _s(rng, ALNUM, rng.randint(20, 48))


def secret_value(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:  # a web framework's generated secret key
        return "django-insecure-" + _s(rng, string.ascii_lowercase + string.digits + "!@#$%^&*(-_=+)", 50)
    if style == 1:
        return _s(rng, HEX, 64)
    if style == 2:
        return _b64(rng, rng.choice([24, 32, 48]))
    return _s(rng, ALNUM + "-_", rng.randint(24, 40))


def api_key_value(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return _s(rng, HEX, 32)
    if style == 1:
        return "key-" + _s(rng, HEX, 32)
    if style == 2:
        return _s(rng, ALNUM, 40)
    return "-".join(_s(rng, HEX, n) for n in (8, 4, 4, 4, 12))


def aws_secret(rng: random.Random) -> str:
    while True:  # a real one is 30 random bytes in base64: practically always mixed
        v = _s(rng, B64, 40)
        if any(c.isupper() for c in v) and any(c.islower() for c in v) and any(c.isdigit() for c in v):
            return v


def google_key(rng: random.Random) -> str:
    body = _s(rng, ALNUM + "-_", 34)
    return "AIza" + body + rng.choice(["-", "_", rng.choice(ALNUM), rng.choice(ALNUM)])


def jwt_value(rng: random.Random) -> str:
    header = {"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    payload = {"sub": str(rng.randint(1, 10**9)), "name": rng.choice(WORDS), "iat": rng.randint(1.6e9, 1.8e9)}
    if rng.random() < 0.5:
        payload["scope"] = "read write"
    sig = bytes(rng.getrandbits(8) for _ in range(rng.choice([32, 64, 256])))
    parts = [_b64url(json.dumps(x, separators=(",", ":")).encode()) for x in (header, payload)]
    return ".".join(parts + [_b64url(sig)])


def pem_lines(rng: random.Random, label: str) -> list[str]:
    body = _b64(rng, rng.randint(120, 1200))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    head = [f"-----BEGIN {label}-----"]
    if label == "RSA PRIVATE KEY" and rng.random() < 0.3:
        head += ["Proc-Type: 4,ENCRYPTED", f"DEK-Info: AES-128-CBC,{_s(rng, HEX.upper(), 32)}", ""]
    return head + lines + [f"-----END {label}-----"]


def pgp_lines(rng: random.Random) -> list[str]:
    body = _b64(rng, rng.randint(300, 1500))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    head = ["-----BEGIN PGP PRIVATE KEY BLOCK-----"]
    if rng.random() < 0.5:
        head.append(f"Version: GnuPG v{rng.randint(1, 2)}")
    if rng.random() < 0.3:
        head.append("Comment: exported for the release signer")
    head.append("")
    return head + lines + ["=" + _s(rng, B64, 4), "-----END PGP PRIVATE KEY BLOCK-----"]


# --- kinds: each returns (lines, secrets, indices of secret lines) --------------------------------

Snippet = tuple[list[str], list[str], set[int]]


def _one(line: str, secret: str) -> Snippet:
    return [line], [secret], {0}


def _pick(rng: random.Random, options: list[str]) -> str:
    return rng.choice(options)


def _assignment(rng: random.Random, name: str, value: str) -> str:
    """``name`` bound to ``value`` in one of the syntaxes config and code use."""
    camel = name != name.lower() and name != name.upper()  # dbPassword: kept as written
    lower = name if camel else name.lower()
    upper = name if camel else name.upper()
    kebab = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower().replace("_", "-")  # mapsApiKey: maps-api-key
    syntaxes = [
        f'{name} = "{value}"',
        f"{name} = '{value}'",
        f'    {lower}="{value}",',
        f'self.{lower} = "{value}"',
        f'config["{lower}"] = "{value}"',
        f'{lower}: str = "{value}"',
        f'  {lower}: "{value}"',
        f"{lower}: '{value}'",
        f'  "{lower}": "{value}",',
        f'export {upper}="{value}"',
        f"{upper}='{value}'",
        f'const {lower} = "{value}";',
        f'{lower} := "{value}"',
        f"'{lower}' => '{value}',",
        f'    {name}: "{value}",',
        f'ENV {upper}="{value}"',
        f'os.environ["{upper}"] = "{value}"',
        f'{lower} = "{value}"  # rotate quarterly',
        f'  "{lower}" : "{value}"',
        f"define('{upper}', '{value}');",
        f'value = os.environ.get("{upper}", "{value}")',
        f"<{name}>{value}</{name}>",
        f"      {upper}: '{value}'",
    ]
    if not any(c in value for c in " '\"#;&$`\\()<>{}[]|") and value[0] not in "!*@%?:,-=":
        # values .env, shell and YAML take unquoted (YAML would read a leading @ or ! as syntax)
        syntaxes += [
            f"{upper}={value}",
            f"export {upper}={value}",
            f"  {lower}: {value}",
            f"    - {upper}={value}",
            f"{lower} = {value}",
            f"docker run -e {upper}={value} app:latest",
            f"app --{kebab}={value} --verbose",
            f"{lower}={value}",
            f"spring.datasource.{lower}={value}",
            f"2024-05-01 12:00:03 INFO auth ok user=bob {lower}={value} elapsed=12ms",
            f"      {upper}: {value}",
        ]
    if re.fullmatch(r"[A-Za-z0-9._~-]+", value):  # URL-safe as it is
        syntaxes.append(f"GET /v1/items?{lower}={value}&page=2 HTTP/1.1")
    if "-" in name:  # an HTTP header or a config key, never an identifier
        syntaxes = [
            f'  "{name}": "{value}",',
            f'headers = {{"{name}": "{value}"}}',
            f"{name}: '{value}'",
            f"curl -H '{name}: {value}' https://api.example.com/v1/items",
            f"> {name}: {value}",
        ]
    return rng.choice(syntaxes)


PASSWORD_NAMES = [
    "password",
    "PASSWORD",
    "passwd",
    "DB_PASSWORD",
    "db_password",
    "dbPassword",
    "smtp_password",
    "POSTGRES_PASSWORD",
    "MYSQL_ROOT_PASSWORD",
    "admin_pass",
    "DB_PASS",
    "pwd",
    "DB_PWD",
    "passphrase",
    "key_passphrase",
    "redisPassword",
    "mail_password",
    "LDAP_BIND_PASSWORD",
    "PGPASSWORD",
    "MYSQL_PWD",
]
SECRET_NAMES = [
    "secret",
    "client_secret",
    "CLIENT_SECRET",
    "clientSecret",
    "app_secret",
    "WEBHOOK_SECRET",
    "jwt_secret",
    "JWT_SECRET",
    "SECRET_KEY",
    "secret_key",
    "consumer_secret",
    "session_secret",
    "SLACK_SIGNING_SECRET",
    "secretKey",
    "encryption_key",
    "ENCRYPTION_KEY",
    "signing_key",
    "private_key",
]
API_KEY_NAMES = [
    "api_key",
    "API_KEY",
    "apiKey",
    "apikey",
    "x-api-key",
    "X-Api-Key",
    "OPENWEATHER_API_KEY",
    "SENDGRID_API_KEY",
    "mapsApiKey",
    "MINIO_ACCESS_KEY",
    "access_key",
    "datadog_api_key",
]
TOKEN_NAMES = [
    "token",
    "TOKEN",
    "GITHUB_TOKEN",
    "access_token",
    "accessToken",
    "refresh_token",
    "refreshToken",
    "auth_token",
    "authToken",
    "bot_token",
    "BOT_TOKEN",
    "SENTRY_AUTH_TOKEN",
    "api_token",
    "apiToken",
    "session_token",
    "DISCORD_TOKEN",
    "TELEGRAM_BOT_TOKEN",
    "CI_JOB_TOKEN",
    "vault_token",
    "personalAccessToken",
]


def k_password(rng):
    v = password_value(rng)
    if " " not in v and rng.random() < 0.06:  # a .netrc entry
        return _one(f"machine api.example.com login deploy password {v}", v)
    if rng.random() < 0.05:  # a Kubernetes Secret manifest: base64 of the password
        b = base64.b64encode(v.encode()).decode()
        return _one(f"  {rng.choice(['password', 'db-password', 'DB_PASSWORD'])}: {b}", b)
    return _one(_assignment(rng, rng.choice(PASSWORD_NAMES), v), v)


def k_secret(rng):
    v = secret_value(rng)
    return _one(_assignment(rng, rng.choice(SECRET_NAMES), v), v)


def k_api_key(rng):
    v = api_key_value(rng)
    return _one(_assignment(rng, rng.choice(API_KEY_NAMES), v), v)


def k_token_name(rng):
    v = random_token(rng)
    return _one(_assignment(rng, rng.choice(TOKEN_NAMES), v), v)


def k_github(rng):
    kind = rng.randrange(6)
    v = (
        (f"gh{'pousr'[kind]}_" + _s(rng, ALNUM, 36))
        if kind < 5
        else "github_pat_" + _s(rng, ALNUM, 22) + "_" + _s(rng, ALNUM, 59)
    )
    line = _pick(
        rng,
        [
            f'GITHUB_TOKEN = "{v}"',
            f"gh auth login --with-token <<< {v}",
            f"token: {v}",
            f"git clone https://x-access-token:{v}@github.com/acme/app.git",
            f"g = Github(auth=Auth.Token('{v}'))",
            f"You leaked `{v}` in the workflow log.",
            f"      - run: echo {v} | docker login ghcr.io -u bot --password-stdin",
        ],
    )
    return _one(line, v)


def k_aws_id(rng):
    v = rng.choice(["AKIA", "ASIA"]) + _s(rng, string.ascii_uppercase + "234567", 16)
    line = _pick(
        rng,
        [
            f"aws_access_key_id = {v}",
            f'AWS_ACCESS_KEY_ID="{v}"',
            f"  AccessKeyId: {v}",
            f's3 = boto3.client("s3", aws_access_key_id="{v}")',
            f"key id {v} was used from 10.0.0.8",
            f'"AccessKeyId": "{v}",',
        ],
    )
    return _one(line, v)


def k_aws_secret(rng):
    v = aws_secret(rng)
    kid = "AKIA" + _s(rng, string.ascii_uppercase + "234567", 16)
    line = _pick(
        rng,
        [
            f"AWS_SECRET_KEY={v}",
            f'aws_secret_key = "{v}"',
            f'  "SecretAccessKey": "{v}",',
            f"  secretAccessKey: '{v}'",
            f"AWS_SECRET={v}",
            f'    aws_secret_access_key="{v}",',
            f"{kid},{v}",
            f"aws configure set aws_secret_access_key {v}",
            f'secret_key = "{v}"',
            f"export AWS_SECRET_ACCESS_KEY={v}",
            f"credentials: {kid}:{v}",
            f"s3cmd --access_key={kid} --secret_key={v} ls",
        ],
    )
    secrets = [v] + ([kid] if kid in line else [])
    return [line], secrets, {0}


def k_private_key(rng):
    label = rng.choice(
        [
            "RSA PRIVATE KEY",
            "PRIVATE KEY",
            "EC PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "DSA PRIVATE KEY",
        ]
    )
    lines = pem_lines(rng, label)
    material = [ln for ln in lines[1:-1] if ln and ":" not in ln]
    return _embed_block(rng, lines, material)


def k_pgp(rng):
    lines = pgp_lines(rng)
    material = [ln for ln in lines[1:-1] if ln and ":" not in ln and not ln.startswith("=")]
    return _embed_block(rng, lines, material)


def _embed_block(rng: random.Random, lines: list[str], material: list[str]) -> Snippet:
    style = rng.randrange(5)
    if style == 0:  # a Python triple-quoted constant
        out = ['SIGNING_KEY = """' + lines[0]] + lines[1:-1] + [lines[-1] + '"""']
    elif style == 1:  # a YAML block scalar
        out = ["signing_key: |"] + ["  " + ln if ln else "" for ln in lines]
    elif style == 2:  # implicitly concatenated string literals
        out = ["KEY = ("] + [f'    "{ln}\\n"' for ln in lines] + [")"]
    elif style == 3:  # a bare file (key.pem) shown in a hunk
        out = list(lines)
    else:  # one JSON line (a service-account file)
        out = ['  "private_key": "' + "\\n".join(lines) + '\\n",']
    if style == 4:
        return out, material, {0}
    first = 1 if style in (0, 1, 2) else 0
    return out, material, set(range(first, first + len(lines)))


def k_jwt(rng):
    v = jwt_value(rng)
    line = _pick(
        rng,
        [
            f"Authorization: Bearer {v}",
            f'id_token = "{v}"',
            f"curl -H 'Cookie: session={v}' ",
            f'{{"access_token": "{v}", "expires_in": 3600}}',
            f"jwt: {v}",
            f"Decoded `{v}` and it still has admin scope.",
        ],
    )
    return _one(line, v)


def k_slack_token(rng):
    t = rng.randrange(5)
    if t == 0:
        v = f"xoxb-{rng.randint(10**10, 10**13)}-{rng.randint(10**10, 10**13)}-{_s(rng, ALNUM, 24)}"
    elif t == 1:
        ids = "-".join(str(rng.randint(10**10, 10**13)) for _ in range(3))
        v = f"xoxp-{ids}-{_s(rng, HEX, 32)}"
    elif t == 2:
        v = f"xoxa-2-{rng.randint(10**10, 10**13)}-{_s(rng, HEX, 32)}"
    elif t == 3:
        v = f"xoxe.xoxp-1-{_s(rng, ALNUM, 120)}"
    else:
        v = f"xoxr-{rng.randint(10**10, 10**13)}-{_s(rng, ALNUM, 40)}"
    line = _pick(
        rng,
        [
            f'SLACK_BOT_TOKEN="{v}"',
            f"client = WebClient(token='{v}')",
            f"slack_token: {v}",
            f"curl -H 'Authorization: Bearer {v}' https://slack.com/api/auth.test",
            f"token {v} revoked",
        ],
    )
    return _one(line, v)


def k_slack_app(rng):
    v = f"xapp-1-A{_s(rng, UPPER_DIGITS, 10)}-{rng.randint(10**12, 10**13)}-{_s(rng, HEX, 64)}"
    line = _pick(
        rng,
        [
            f'SLACK_APP_TOKEN="{v}"',
            f"handler = SocketModeHandler(app, '{v}')",
            f"app_level: {v}",
            f"export SLACK_APP_TOKEN={v}",
            f"The socket-mode token `{v}` is in the diff.",
        ],
    )
    return _one(line, v)


def k_slack_webhook(rng):
    team, channel = _s(rng, UPPER_DIGITS, rng.randint(8, 10)), _s(rng, UPPER_DIGITS, rng.randint(8, 10))
    path = f"T{team}/B{channel}/{_s(rng, ALNUM, 24)}"
    v = f"https://hooks.slack.com/services/{path}"
    line = _pick(
        rng,
        [
            f'SLACK_WEBHOOK_URL = "{v}"',
            f"requests.post('{v}', json={{'text': msg}})",
            f"  webhook: {v}",
            f"SLACK_WEBHOOK={v}",
            f"curl -X POST -d @payload.json {v}",
            f"Posting to <{v}|#alerts> fails.",
        ],
    )
    return _one(line, path)


def k_stripe(rng):
    p = rng.choice(["sk_live_", "rk_live_", "sk_test_", "rk_test_"])
    v = p + _s(rng, ALNUM, rng.choice([24, 34, 99]))
    line = _pick(
        rng,
        [
            f'stripe.api_key = "{v}"',
            f"STRIPE_SECRET_KEY={v}",
            f"  stripe_key: {v}",
            f"Stripe(api_key='{v}')",
            f"curl https://api.stripe.com/v1/charges -u {v}:",
            f"`{v}` is a live key, please revoke it.",
        ],
    )
    return _one(line, v)


def k_stripe_webhook(rng):
    v = "whsec_" + _s(rng, ALNUM, 32)
    line = _pick(
        rng,
        [
            f'endpoint_secret = "{v}"',
            f"STRIPE_WEBHOOK_SECRET={v}",
            f"event = stripe.Webhook.construct_event(payload, sig, '{v}')",
            f"  signing: {v}",
            f"> Ready! Your webhook signing secret is {v} (^C to quit)",
        ],
    )
    return _one(line, v)


def k_google(rng):
    v = google_key(rng)
    line = _pick(
        rng,
        [
            f'GOOGLE_API_KEY = "{v}"',
            f"maps.googleapis.com/maps/api/js?key={v}&callback=init",
            f"  apiKey: '{v}',",
            f"genai.configure(api_key='{v}')",
            f"key={v}",
        ],
    )
    return _one(line, v)


def k_openai(rng):
    t = rng.randrange(3)
    v = (
        "sk-" + _s(rng, ALNUM, 48)
        if t == 0
        else ("sk-proj-" + _s(rng, B64URL, 156) if t == 1 else "sk-ant-api03-" + _s(rng, B64URL, 93) + "AA")
    )
    line = _pick(
        rng,
        [
            f'OPENAI_API_KEY="{v}"',
            f"client = OpenAI(api_key='{v}')",
            f"  openai_key: {v}",
            f"export ANTHROPIC_API_KEY={v}",
            f"Please don't paste `{v}` in issues.",
        ],
    )
    return _one(line, v)


def k_auth_header(rng):
    scheme = rng.choice(["Bearer", "token", "Basic", "bearer"])
    v = _b64(rng, rng.randint(12, 30)) if scheme == "Basic" else _s(rng, B64URL, rng.randint(24, 64))
    line = _pick(
        rng,
        [
            f"Authorization: {scheme} {v}",
            f'headers = {{"Authorization": "{scheme} {v}"}}',
            f"curl -H 'Authorization: {scheme} {v}' https://api.example.com/v2/items",
            f"session.headers['authorization'] = '{scheme} {v}'",
            f"proxy-authorization: {scheme} {v}",
            f"> authorization: {scheme} {v}",
        ],
    )
    return _one(line, v)


SCHEMES = [
    "postgres",
    "postgresql",
    "mysql",
    "mongodb",
    "mongodb+srv",
    "amqp",
    "https",
    "http",
    "ftp",
    "smtp",
    "ldap",
    "sftp",
    "git+https",
    "mssql",
]
HOSTS = [
    "db.internal",
    "127.0.0.1:5432",
    "mq.example.com",
    "cluster0.ab1cd.mongodb.net",
    "pypi.example.com",
    "git.example.com",
    "10.0.3.7:3306",
    "ldap.corp.example.com",
]


def _url_line(rng: random.Random, url: str, name: str = "DATABASE_URL") -> str:
    return _pick(
        rng,
        [
            f'{name} = "{url}"',
            f"{name}={url}",
            f"  url: {url}",
            f"git clone {url}",
            f"pip install --index-url {url}/simple app",
            f"engine = create_engine('{url}')",
            f"connecting to {url} failed: timeout",
            f"    - {name}={url}",
        ],
    )


def _user(rng):
    return rng.choice(["admin", "app", "deploy", "ci-bot", "svc_orders", "root", "jane.doe"])


def k_url(rng):
    pw = url_password(rng)
    path = rng.choice(["app", "orders", "repo.git", ""])
    url = f"{rng.choice(SCHEMES)}://{_user(rng)}:{pw}@{rng.choice(HOSTS)}/{path}"
    return _one(_url_line(rng, url), pw)


def k_url_upper(rng):
    pw = url_password(rng)
    scheme = rng.choice(["HTTPS", "Postgres", "MYSQL", "MongoDB", "AMQP", "Redis", "HTTP", "FTP"])
    url = f"{scheme}://{_user(rng)}:{pw}@{rng.choice(HOSTS)}/db"
    return _one(_url_line(rng, url), pw)


def k_redis(rng):
    pw = url_password(rng)
    host = rng.choice(["cache.internal", "127.0.0.1"])
    url = f"{rng.choice(['redis', 'rediss'])}://:{pw}@{host}:6379/{rng.randint(0, 15)}"
    return _one(_url_line(rng, url, rng.choice(["REDIS_URL", "CELERY_BROKER_URL", "cache_url"])), pw)


def k_url_slash(rng):
    a, b = _s(rng, ALNUM, rng.randint(4, 10)), _s(rng, ALNUM + "+=", rng.randint(4, 12))
    pw = a + "/" + b
    url = f"{rng.choice(SCHEMES)}://{_user(rng)}:{pw}@{rng.choice(HOSTS)}/app"
    return [_url_line(rng, url)], [a + "/", "/" + b], {0}


def k_hf(rng):
    v = "hf_" + _s(rng, string.ascii_letters, 34)
    line = _pick(
        rng,
        [
            f'HF_TOKEN="{v}"',
            f"login(token='{v}')",
            f"huggingface-cli login --token {v}",
            f"  hf_token: {v}",
            f"model = AutoModel.from_pretrained(name, token='{v}')",
        ],
    )
    return _one(line, v)


def k_gitlab(rng):
    v = "glpat-" + _s(rng, B64URL, 20)
    line = _pick(
        rng,
        [
            f'GITLAB_TOKEN="{v}"',
            f"git clone https://oauth2:{v}@gitlab.example.com/g/p.git",
            f"  private-token: {v}",
            f"gl = gitlab.Gitlab(url, private_token='{v}')",
        ],
    )
    return [line], [v], {0}


def k_npm(rng):
    v = "npm_" + _s(rng, ALNUM, 36)
    line = _pick(
        rng,
        [
            f"//registry.npmjs.org/:_authToken={v}",
            f'NPM_TOKEN="{v}"',
            f"  npm-token: {v}",
            f"echo //registry.npmjs.org/:_authToken={v} > .npmrc",
        ],
    )
    return _one(line, v)


def k_pypi(rng):
    v = "pypi-AgEIcHlwaS5vcmc" + _s(rng, B64URL, rng.randint(60, 160))
    line = _pick(
        rng,
        [f"password = {v}", f'TWINE_PASSWORD="{v}"', f"twine upload -u __token__ -p {v} dist/*", f"  pypi_token: {v}"],
    )
    return _one(line, v)


# --- kinds written from the shapes maintained detectors document (issue 22): detect-secrets 1.5.0's
# plugins (AzureStorageKey, Keyword, BasicAuth, AWSKey, SendGrid, Mailchimp, Twilio, Discord,
# Telegram, Square, Artifactory), the providers' own connection-string and key-file formats, and
# the shapes issue 22 found stored in full. None is derived from revbot's own patterns.


def _azure_key(rng: random.Random) -> str:
    return _b64(rng, 64)  # 88 characters ending in "==", as the portal shows a storage account key


def k_azure_storage(rng):
    key, account = _azure_key(rng), rng.choice(["acmeprod", "widgetsstore", "ciartifacts01"])
    conn = f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key};EndpointSuffix=core.windows.net"
    line = _pick(
        rng,
        [
            f'AZURE_STORAGE_CONNECTION_STRING="{conn}"',
            f"export AZURE_STORAGE_CONNECTION_STRING='{conn}'",
            f'    "StorageConnection": "{conn}",',
            f'az storage blob upload --connection-string "{conn}" -f build.zip -c drops',
            f"AccountKey={key}",
            f"curl -H 'AccountKey: {key}' https://{account}.blob.core.windows.net/drops",
            f'  "AccountKey": "{key}",',
            f"az storage blob list --account-name {account} --account-key {key} -c drops",
            f"storage_key: {key}",
        ],
    )
    return _one(line, key)


def k_azure_shared_access(rng):
    key = _b64(rng, 32)
    ns = rng.choice(["acme-events", "orders-bus", "telemetry01"])
    conn = f"Endpoint=sb://{ns}.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={key}"
    if rng.random() < 0.5:
        conn += f";EntityPath={rng.choice(['orders', 'events'])}"
    line = _pick(
        rng,
        [
            f'SERVICEBUS_CONNECTION="{conn}"',
            f"  connection_string: '{conn}'",
            f'    "EventHubConnection": "{conn}"',
            f"client = ServiceBusClient.from_connection_string('{conn}')",
            f"SharedAccessKey={key}",
            f"HostName=hub01.azure-devices.net;DeviceId=sensor-7;SharedAccessKey={key}",
        ],
    )
    return _one(line, key)


def k_gcp_service_account(rng):
    key_id = _s(rng, HEX, 40)
    pem = pem_lines(rng, "PRIVATE KEY")
    material = [ln for ln in pem[1:-1] if ln]
    project = rng.choice(["acme-prod", "widgets-ci-4821", "ml-train-77"])
    lines = [
        "{",
        '  "type": "service_account",',
        f'  "project_id": "{project}",',
        f'  "private_key_id": "{key_id}",',
        '  "private_key": "' + "\\n".join(pem) + '\\n",',
        f'  "client_email": "deploy@{project}.iam.gserviceaccount.com",',
        f'  "client_id": "{rng.randint(10**20, 10**21)}",',
        '  "token_uri": "https://oauth2.googleapis.com/token"',
        "}",
    ]
    return lines, [key_id, *material], {3, 4}


def k_oauth_client_secret(rng):
    v = rng.choice(
        [
            "GOCSPX-" + _s(rng, B64URL, 28),  # a Google OAuth client secret
            _s(rng, ALNUM, 3) + "8Q~" + _s(rng, ALNUM + "._~-", 34),  # an Azure AD client secret
            _s(rng, HEX, 40),  # a GitHub OAuth App's
        ]
    )
    line = _pick(
        rng,
        [
            f'    "client_secret": "{v}",',
            f"AZURE_CLIENT_SECRET={v}",
            f"curl -X POST https://login.example.com/oauth2/token -d client_id=app -d client_secret={v}",
            f"POST /token?grant_type=client_credentials&client_id=app&client_secret={v} HTTP/1.1",
            f"az login --service-principal -u $APP_ID -p {v} --tenant acme",
            f'clientSecret: "{v}"',
            f"  --client-secret={v}",
            f"oauth = OAuth2Session(client_id, client_secret='{v}')",
        ],
    )
    return _one(line, v)


def k_credentials_field(rng):
    v = _s(rng, ALNUM, rng.choice([32, 40])) if rng.random() < 0.7 else _b64(rng, 24)
    line = _pick(
        rng,
        [
            f'  "credentials": "{v}",',
            f"credentials: {v}",
            f"CREDENTIALS={v}",
            f"credentials = '{v}'",
            f'registry_credentials = "{v}"',
            f'"credential": "{v}"',
        ],
    )
    return _one(line, v)


def k_api_key_header(rng):
    v = rng.choice([_s(rng, HEX, 32), _s(rng, ALNUM, 40), _s(rng, B64URL, 48)])
    name = rng.choice(["x-api-key", "X-API-Key", "apikey", "api-key", "X-Apikey", "Ocp-Apim-Subscription-Key"])
    line = _pick(
        rng,
        [
            f"curl -H '{name}: {v}' https://api.example.com/v1/items",
            f'curl --header "{name}: {v}" https://api.example.com/v1/items',
            f"{name}: {v}",
            f'headers = {{"{name}": "{v}", "Accept": "application/json"}}',
            f"http GET https://api.example.com/v1/items {name}:{v}",
            f"wget --header='{name}: {v}' https://api.example.com/export.csv",
            f"requests.get(url, headers={{'{name}': '{v}'}})",
        ],
    )
    return _one(line, v)


def k_curl_bearer(rng):
    v = rng.choice([_s(rng, B64URL, rng.randint(20, 60)), _s(rng, HEX, 40), _b64(rng, 30)])
    line = _pick(
        rng,
        [
            f'curl -H "Authorization: Bearer {v}" https://api.example.com/v2/me',
            f"curl -sS --header 'Authorization: Bearer {v}' https://api.example.com/v2/me",
            f"curl --oauth2-bearer {v} https://api.example.com/v2/me",
            f"http https://api.example.com/v2/me Authorization:'Bearer {v}'",
            f'wget --header="Authorization: Bearer {v}" https://api.example.com/v2/me',
            f"curl -H 'Authorization: token {v}' https://api.github.example.com/user",
            f"curl https://api.example.com/v2/me -H Authorization:Bearer\\ {v}",
        ],
    )
    return _one(line, v)


def k_url_at_in_password(rng):
    a, b = _s(rng, ALNUM, rng.randint(4, 10)), _s(rng, ALNUM + "!*-", rng.randint(4, 10))
    sep = rng.choice(["@", "@", ":", "@@", ":@"])
    scheme = rng.choice(["mysql", "postgres", "mongodb", "amqp", "redis", "https", "mssql"])
    url = f"{scheme}://{_user(rng)}:{a}{sep}{b}@{rng.choice(HOSTS)}/{rng.choice(['db', 'app', ''])}"
    return [_url_line(rng, url)], [a + sep[0], sep[-1] + b], {0}


def k_aws_session(rng):
    v = rng.choice(["IQoJb3JpZ2luX2Vj", "FwoGZXIvYXdzE"]) + _s(rng, B64, rng.randint(300, 700))
    line = _pick(
        rng,
        [
            f"aws_session_token = {v}",
            f"export AWS_SESSION_TOKEN={v}",
            f'        "SessionToken": "{v}",',
            f"AWS_SESSION_TOKEN='{v}'",
            f"  aws_session_token: {v}",
        ],
    )
    return _one(line, v)


def k_vendor_key(rng):
    """Keys whose shape alone names them (each a detect-secrets plugin), in ordinary places."""
    v = rng.choice(
        [
            f"SG.{_s(rng, B64URL, 22)}.{_s(rng, B64URL, 43)}",  # SendGrid
            f"{_s(rng, HEX, 32)}-us{rng.randint(1, 21)}",  # Mailchimp
            f"AC{_s(rng, HEX, 32)}",  # Twilio account SID
            f"SK{_s(rng, HEX, 32)}",  # Twilio API key SID
            f"{rng.choice('MNO')}{_s(rng, B64URL, 23)}.{_s(rng, B64URL, 6)}.{_s(rng, B64URL, 27)}",  # Discord bot
            f"{rng.randint(10**7, 10**10 - 1)}:{_s(rng, B64URL, 35)}",  # Telegram bot
            f"sq0csp-{_s(rng, B64URL, 43)}",  # Square OAuth secret
            f"AKC{_s(rng, ALNUM, rng.randint(60, 73))}",  # Artifactory API key
        ]
    )
    line = _pick(
        rng,
        [
            f'notify = Client("{v}")',
            f"  - run: ./deploy.sh --with {v}",
            f"It still fails with {v} set.",
            f"curl -X POST https://hooks.example.com/{v}/sendMessage",
            f'VENDOR = "{v}"',
            f"vendor: {v}",
        ],
    )
    return _one(line, v)


KINDS: dict[str, Callable[[random.Random], Snippet]] = {
    "github-token": k_github,
    "aws-access-key-id": k_aws_id,
    "aws-secret-key": k_aws_secret,
    "private-key-block": k_private_key,
    "pgp-private-key-block": k_pgp,
    "jwt": k_jwt,
    "slack-token": k_slack_token,
    "slack-app-token": k_slack_app,
    "slack-webhook-url": k_slack_webhook,
    "stripe-key": k_stripe,
    "stripe-webhook-secret": k_stripe_webhook,
    "google-api-key": k_google,
    "openai-style-key": k_openai,
    "authorization-header": k_auth_header,
    "url-credentials": k_url,
    "url-credentials-upper-scheme": k_url_upper,
    "url-credentials-empty-user": k_redis,
    "url-credentials-slash-password": k_url_slash,
    "password-assignment": k_password,
    "secret-assignment": k_secret,
    "api-key-assignment": k_api_key,
    "token-name-assignment": k_token_name,
    "huggingface-token": k_hf,
    "gitlab-token": k_gitlab,
    "npm-token": k_npm,
    "pypi-token": k_pypi,
    # issue 22: shapes from the maintained detectors' documentation
    "azure-storage-connection-string": k_azure_storage,
    "azure-shared-access-key": k_azure_shared_access,
    "gcp-service-account-json": k_gcp_service_account,
    "oauth-client-secret": k_oauth_client_secret,
    "credentials-field": k_credentials_field,
    "api-key-header": k_api_key_header,
    "curl-bearer-token": k_curl_bearer,
    "url-credentials-at-in-password": k_url_at_in_password,
    "aws-session-token": k_aws_session,
    "vendor-key-by-shape": k_vendor_key,
}
EXTENDED_KINDS = frozenset(list(KINDS)[list(KINDS).index("azure-storage-connection-string") :])


def _context(rng: random.Random, n: int, pool: list[str]) -> list[str]:
    return [rng.choice(pool) for _ in range(n)]


def make_sample(kind: str, rng: random.Random) -> Sample:
    """One snippet of ``kind``: the secret lines between 1-4 ordinary lines each side, as a source
    file, a diff hunk (every line with its +/space marker) or a review-comment body."""
    lines, secrets, secret_idx = KINDS[kind](rng)
    style = rng.choice(["source", "source", "diff", "comment"])
    pool = PLAIN_PROSE if style == "comment" else rng.choice([PLAIN_PY, PLAIN_PY, PLAIN_CONF])
    before, after = _context(rng, rng.randint(1, 4), pool), _context(rng, rng.randint(1, 4), pool)
    if style == "comment" and len(lines) == 1 and rng.random() < 0.5:
        lines = ["```", *lines, "```"]
        secret_idx = {i + 1 for i in secret_idx}
    body = before + lines + after
    idx = frozenset(i + len(before) for i in secret_idx)
    if style == "diff":
        body = [("+" if i in idx or rng.random() < 0.5 else " ") + ln for i, ln in enumerate(body)]
        body.insert(0, f"@@ -{rng.randint(1, 300)},{len(body)} +{rng.randint(1, 300)},{len(body)} @@")
        idx = frozenset(i + 1 for i in idx)
    return Sample(kind, "\n".join(body), tuple(secrets), idx, style)


def generate_corpus(seed: int = 20240611, per_kind: int = 60) -> list[Sample]:
    """``per_kind`` samples of every kind in KINDS, the same for the same seed."""
    rng = random.Random(seed)
    return [make_sample(kind, rng) for kind in KINDS for _ in range(per_kind)]
