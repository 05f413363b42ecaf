"""One nftables table as data, and the scripts that write it whole or change it in place.

The Service proxy (`servicerules`) and the NetworkPolicy rules (`policyrules`) each own one
table, built as a `Table` by a pure function; the agent keeps the kernel in step by applying
`delta(applied, wanted)`, one transaction touching only what differs (set and map elements,
the chains whose rules changed), and `full(wanted)` at start, after a failure and once a
minute, replacing the table whole in one transaction. The kernel's table is never read back.

    table = Table("k8py-policy", sets={...}, base={...}, chains={...})
    Nft().run(full(table)); ...; Nft().run(delta(table, newer))
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Set:
    """A named set or map: its declaration lines and elements (`key` for a set, `key :
    value` for a map), written in this order."""
    declaration: tuple[str, ...]
    elements: tuple[str, ...] = ()
    is_map: bool = False

    @property
    def kind(self) -> str:
        return "map" if self.is_map else "set"


def verdict_map(key_type: str, elements: dict[str, str]) -> Set:
    """A map from `key_type` to verdicts (`goto chain`, `jump chain`, `drop`)."""
    return Set((f"type {key_type} : verdict",),
               tuple(f"{key} : {verdict}" for key, verdict in elements.items()), is_map=True)


@dataclasses.dataclass
class Table:
    name: str  # of an `ip` family table
    sets: dict[str, Set]  # sets and maps, written before the chains that use them
    base: dict[str, tuple[str, ...]]  # chains that rarely change (hooks); any change: `full`
    chains: dict[str, tuple[str, ...]]  # chain -> rules


def full(table: Table) -> str:
    """The script that replaces the table whole, in one transaction."""
    blocks = [_set_block(name, s) for name, s in table.sets.items()]
    blocks += [_block(f"chain {name}", list(lines)) for name, lines in table.base.items()]
    blocks += [_block(f"chain {name}", list(lines)) for name, lines in table.chains.items()]
    body = "\n".join(blocks)
    return removal(table.name) + f"table ip {table.name} {{\n{body}}}\n"


def delta(old: Table, new: Table) -> str | None:
    """The script that turns the table from `old` into `new` in one transaction, touching
    only what changed ("": nothing; None: the base chains or a set's declaration changed,
    write it whole with `full`)."""
    if old.base != new.base or old.name != new.name or any(
            s.declaration != new.sets[n].declaration or s.is_map != new.sets[n].is_map
            for n, s in old.sets.items() if n in new.sets):
        return None
    t = f"ip {new.name}"
    lines: list[str] = []
    for name, s in new.sets.items():
        if name not in old.sets:
            lines.append(f"add {s.kind} {t} {name} {{ {'; '.join(s.declaration)}; }}")
    changed = [n for n, rules in new.chains.items() if old.chains.get(n) != rules]
    for name in changed:
        if name not in old.chains:
            lines.append(f"add chain {t} {name}")
    for name in changed:
        if name in old.chains:
            lines.append(f"flush chain {t} {name}")
        lines.extend(f"add rule {t} {name} {rule}" for rule in new.chains[name])
    for name, s in new.sets.items():
        before = old.sets[name].elements if name in old.sets else ()
        kept = set(s.elements)
        gone = [_key(e, s.is_map) for e in before if e not in kept]
        if gone:
            lines.append(f"delete element {t} {name} {{ {', '.join(gone)} }}")
        had = set(before)
        fresh = [e for e in s.elements if e not in had]
        if fresh:
            lines.append(f"add element {t} {name} {{ {', '.join(fresh)} }}")
    removed = [n for n in old.chains if n not in new.chains]
    lines.extend(f"flush chain {t} {name}" for name in removed)
    lines.extend(f"delete chain {t} {name}" for name in removed)
    lines.extend(f"delete {s.kind} {t} {name}" for name, s in old.sets.items()
                 if name not in new.sets)
    return "\n".join(lines) + "\n" if lines else ""


def removal(name: str) -> str:
    """The script that takes table `ip <name>` away (declared first, so it works whether
    or not the table exists)."""
    return f"table ip {name} {{}}\ndelete table ip {name}\n"


def _key(element: str, is_map: bool) -> str:
    return element.split(" : ", 1)[0] if is_map else element


def _block(head: str, lines: list[str]) -> str:
    inner = "".join(f"\t\t{line}\n" for line in lines)
    return f"\t{head} {{\n{inner}\t}}\n"


def _set_block(name: str, s: Set) -> str:
    lines = list(s.declaration)
    if s.elements:
        lines.append("elements = { " + ",\n\t\t\t".join(s.elements) + " }")
    return _block(f"{s.kind} {name}", lines)
