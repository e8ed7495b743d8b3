"""Code the sample project's pull requests are made of, and the team's review habits.

Each template is a small function of an invented inventory/billing service. A line may hold a
*slot* ``<<kind|arg|...>>`` that renders either as the clean code the team writes or as one of the
habits the team always flags in review. The same habit always draws the same comment, so that a
model trained on this history has one clear style to learn.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# habit -> the comment the team writes every time it sees it
STYLE: dict[str, str] = {
    "print": "Use the module logger instead of print.",
    "except": "Catch a specific exception here; a bare except hides bugs.",
    "none": "Use `is None` / `is not None` to compare with None.",
    "mutdef": "Mutable default argument: default to None and create it inside.",
    "todo": "Link a ticket in this TODO (TEAM-123 style).",
    "sleep": "No time.sleep in service code; use the retry helper with backoff.",
    "percent": "Prefer f-strings.",
}

# slot kind -> habit it can show
SLOT_HABIT = {
    "log": "print",
    "except": "except",
    "none": "none",
    "notnone": "none",
    "mutdef": "mutdef",
    "todo": "todo",
    "sleep": "sleep",
    "pct": "percent",
}

_SLOT = re.compile(r"<<([a-z]+)((?:\|[^>|]*)*)>>")


def render_slot(kind: str, args: list[str], habit: bool, rng: random.Random) -> str:
    """One slot as code: the habit the team flags (``habit=True``) or the clean form."""
    if kind == "log":
        msg, var = args
        return f'print(f"{msg}: {{{var}}}")' if habit else f'logger.info("{msg}", extra={{"id": {var}}})'
    if kind == "except":
        return "except:" if habit else f"except {args[0]}:"
    if kind == "none":
        return f"if {args[0]} == None:" if habit else f"if {args[0]} is None:"
    if kind == "notnone":
        return f"if {args[0]} != None:" if habit else f"if {args[0]} is not None:"
    if kind == "mutdef":
        name, container = args
        return f"{name}={container}" if habit else f"{name}=None"
    if kind == "todo":
        return f"# TODO: {args[0]}" if habit else f"# TODO(TEAM-{rng.randint(100, 999)}): {args[0]}"
    if kind == "sleep":
        return f"time.sleep({args[0]})" if habit else "backoff.wait(attempt)"
    if kind == "pct":
        var, text, *values = args
        if habit:
            fmt = text.replace("{}", "%s")
            rhs = values[0] if len(values) == 1 else "(" + ", ".join(values) + ")"
            return f'{var} = "{fmt}" % {rhs}'
        filled = text
        for value in values:
            filled = filled.replace("{}", "{" + value + "}", 1)
        return f'{var} = f"{filled}"'
    raise ValueError(f"unknown slot kind {kind!r}")


@dataclass
class Rendered:
    """A template rendered for one noun: its lines and, per line, the habit shown there (or None)."""

    lines: list[str]
    habits: list[str | None]
    slots: list[int]  # indexes of lines that hold a slot (whether rendered as a habit or not)


def slot_lines(template: list[str]) -> list[int]:
    return [i for i, line in enumerate(template) if _SLOT.search(line)]


def render(template: list[str], noun: str, active: set[int], rng: random.Random) -> Rendered:
    """Render ``template`` for ``noun``; lines in ``active`` show their habit."""
    lines, habits, slots = [], [], []
    subst = {"{n}": noun, "{N}": "".join(part.capitalize() for part in noun.split("_")), "{U}": noun.upper()}
    for i, raw in enumerate(template):
        text = raw
        for key, value in subst.items():
            text = text.replace(key, value)
        match = _SLOT.search(text)
        habit = None
        if match:
            kind, args = match.group(1), [a for a in match.group(2).split("|")[1:]]
            show = i in active
            text = text[: match.start()] + render_slot(kind, args, show, rng) + text[match.end() :]
            habit = SLOT_HABIT[kind] if show else None
            slots.append(i)
        lines.append(text)
        habits.append(habit)
    return Rendered(lines, habits, slots)


# Templates: small functions of the service. {n} is the noun, {N} its class name.
TEMPLATES: dict[str, list[str]] = {
    "get": [
        "def get_{n}({n}_id):",
        "    {n} = _{n}s.get({n}_id)",
        "    <<none|{n}>>",
        "        raise NotFound({n}_id)",
        "    return {n}",
    ],
    "send": [
        "def send_{n}(client, {n}):",
        "    payload = {n}.to_dict()",
        "    for attempt in range(3):",
        "        try:",
        '            return client.post("/{n}s", json=payload, timeout=5)',
        "        except ConnectionError:",
        "            <<sleep|2 ** attempt>>",
        "    raise DeliveryFailed({n}.id)",
    ],
    "parse": [
        "def parse_{n}(raw):",
        "    try:",
        "        return {N}.from_dict(json.loads(raw))",
        "    <<except|ValueError>>",
        "        <<log|could not parse {n}|raw>>",
        "        return None",
    ],
    "create": [
        "def create_{n}(name, <<mutdef|tags|[]>>):",
        "    {n} = {N}(name=name, tags=tags or [])",
        "    _{n}s[{n}.id] = {n}",
        "    <<log|created {n}|{n}.id>>",
        "    return {n}",
    ],
    "message": [
        "def {n}_message({n}):",
        "    <<pct|subject|{N} {} is ready|{n}.id>>",
        '    body = render_template("{n}.txt", {n}={n})',
        "    return subject, body",
    ],
    "cancel": [
        "def cancel_{n}({n}, reason):",
        "    <<todo|handle a {n} that is half shipped>>",
        '    {n}.status = "cancelled"',
        "    {n}.reason = reason",
        "    {n}.save()",
        "    return {n}",
    ],
    "total": [
        "def total_{n}s({n}s):",
        "    total = Decimal(0)",
        "    for {n} in {n}s:",
        "        <<notnone|{n}.discount>>",
        "            total -= {n}.discount",
        "        total += {n}.amount",
        "    return total",
    ],
    "update": [
        "def update_{n}({n}, <<mutdef|changes|{}>>):",
        "    for key, value in (changes or {}).items():",
        "        setattr({n}, key, value)",
        "    <<log|updated {n}|{n}.id>>",
        "    {n}.save()",
    ],
    "export": [
        "def export_{n}s(path, {n}s):",
        '    with open(path, "w") as fh:',
        "        for {n} in {n}s:",
        "            <<pct|line|{},{}|{n}.id|{n}.total>>",
        '            fh.write(line + "\\n")',
    ],
    "sync": [
        "def sync_{n}s(source):",
        "    <<todo|page through more than 100 {n}s>>",
        "    skipped = 0",
        "    for row in source.fetch():",
        "        try:",
        "            upsert_{n}(row)",
        "        <<except|KeyError>>",
        "            skipped += 1",
        "    return skipped",
    ],
    "poll": [
        "def wait_for_{n}({n}_id):",
        "    for attempt in range(5):",
        "        {n} = fetch_{n}({n}_id)",
        "        <<notnone|{n}>>",
        "            return {n}",
        "        <<sleep|1>>",
        "    raise TimeoutError({n}_id)",
    ],
    "archive": [
        "def archive_{n}({n}, <<mutdef|labels|[]>>):",
        "    <<none|{n}.closed_at>>",
        "        raise StillOpen({n}.id)",
        "    <<pct|key|archive/{}|{n}.id>>",
        "    storage.put(key, {n}.to_json())",
    ],
    "notify": [
        "def notify_{n}_owner({n}):",
        "    owner = {n}.owner",
        "    <<none|owner>>",
        "        return False",
        "    <<log|notifying owner of {n}|{n}.id>>",
        "    mailer.send(owner.email, {n}_message({n}))",
        "    return True",
    ],
    # clean templates: nothing in them the team comments on
    "list": [
        "def list_{n}s(status=None):",
        "    query = _{n}s.values()",
        "    if status is not None:",
        "        query = [x for x in query if x.status == status]",
        "    return sorted(query, key=lambda x: x.created_at)",
    ],
    "error": [
        "class {N}Error(Exception):",
        '    """Raised when a {n} cannot be processed."""',
        "",
        "    def __init__(self, {n}_id, reason):",
        '        super().__init__(f"{n} {{n}_id}: {reason}")',
        "        self.{n}_id = {n}_id",
    ],
    "count": [
        "def count_{n}s(status):",
        '    """Cheap enough for dashboards: no database query."""',
        "    return sum(1 for x in _{n}s.values() if x.status == status)",
    ],
    "validate": [
        "def validate_{n}({n}):",
        "    errors = []",
        "    if not {n}.name:",
        '        errors.append("name is required")',
        "    if {n}.amount < 0:",
        '        errors.append("amount must not be negative")',
        "    return errors",
    ],
    "config": [
        '{U}_TIMEOUT = settings.get("{n}_timeout", 10)',
        '{U}_BATCH_SIZE = settings.get("{n}_batch_size", 50)',
        '{U}_RETRIES = settings.get("{n}_retries", 3)',
    ],
}

CLEAN_TEMPLATES = ["list", "error", "count", "validate", "config"]
HABIT_TEMPLATES = [name for name in TEMPLATES if name not in CLEAN_TEMPLATES]

# module -> nouns its functions are about
MODULES: dict[str, list[str]] = {
    "stockroom/inventory.py": ["item", "sku", "stock_level"],
    "stockroom/billing.py": ["invoice", "payment", "refund"],
    "stockroom/orders.py": ["order", "cart", "line_item"],
    "stockroom/shipping.py": ["shipment", "parcel", "carrier"],
    "stockroom/customers.py": ["customer", "account", "address"],
    "stockroom/pricing.py": ["price", "discount", "coupon"],
    "stockroom/suppliers.py": ["supplier", "purchase_order"],
    "stockroom/notify.py": ["email", "alert"],
}
