#!/usr/bin/env python3
"""The module dependencies of tryvox-core, read from its `use crate::` lines (and any
other `crate::` or `super::` path outside tests), checked against its layers.

Fails (exit 1) when a module imports a module of a higher layer, or when modules import
each other in a cycle (at any depth, within a layer too). Prints the dependency list:

    tools/layers.py            # check, print one line per module: its layer and imports
    tools/layers.py --quiet    # check only

The layers, bottom to top, are the folders (and the few top-level files) of core/src,
as core/src/lib.rs's module map describes them. A module may use its own layer and
those below it; within a layer, no cycle.
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "core", "src")

# Bottom to top. A module belongs to the layer of its first path segment.
LAYERS = [
    ("host", ["host"]),
    ("vocabulary", ["contract"]),
    ("policy", ["policy"]),
    ("network", ["net"]),
    ("shared state", ["state"]),
    ("paths", ["blocking", "engine"]),
    ("operations", ["ops"]),
    ("facade", ["client"]),
]
RANK = {top: i for i, (_, tops) in enumerate(LAYERS) for top in tops}


def modules():
    """Module path (tuple) -> file, for every .rs file under core/src except lib.rs."""
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts == ["lib"]:
                continue
            out[tuple(parts)] = os.path.join(dirpath, f)
    return out


def code_of(path):
    """The file's text without comments, strings and its test module."""
    text = open(path, encoding="utf-8").read()
    cut = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests\b", text, re.M)
    if cut:
        text = text[: cut.start()]
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (as lists of segments)."""
    tree = tree.strip()
    m = re.match(r"^(.*?)\{(.*)\}$", tree, re.S)
    if not m:
        return [[s.strip() for s in tree.split(" as ")[0].split("::") if s.strip()]]
    prefix = [s for s in m.group(1).split("::") if s.strip()]
    inner, depth, parts, cur = m.group(2), 0, [], ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p.strip():
            out += [prefix + sub for sub in expand(p)]
    return out


def references(mod, text):
    """The paths this module names: crate::..., super::... (as absolute segment lists)."""
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]*);", text):
        paths += expand(m.group(1))
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
        paths.append(m.group(1).split("::"))
    out = []
    for p in paths:
        if p[0] == "crate":
            out.append(p[1:])
        elif p[0] in ("super", "self"):
            base = list(mod)
            while p and p[0] == "super":
                base = base[:-1]
                p = p[1:]
            if p and p[0] == "self":
                p = p[1:]
            out.append(base + p)
    return out


def resolve(path, mods):
    """The longest module prefix of `path`, or None (an item of the crate root)."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return None


def main():
    quiet = "--quiet" in sys.argv[1:]
    mods = modules()
    deps, problems = {}, []
    for mod, path in sorted(mods.items()):
        if mod[0] not in RANK:
            problems.append(f"{'::'.join(mod)}: in no layer (add its folder to LAYERS)")
            continue
        deps[mod] = set()
        for ref in references(mod, code_of(path)):
            target = resolve(ref, mods)
            if target is None:
                problems.append(
                    f"{'::'.join(mod)}: names crate::{'::'.join(ref)} through the crate "
                    "root: import it from its module"
                )
                continue
            # A module's own children and ancestors are the same module family.
            if target[: len(mod)] == mod or mod[: len(target)] == target:
                continue
            deps[mod].add(target)
            if RANK.get(target[0], -1) > RANK[mod[0]]:
                problems.append(
                    f"{'::'.join(mod)} ({LAYERS[RANK[mod[0]]][0]}) imports "
                    f"{'::'.join(target)} ({LAYERS[RANK[target[0]]][0]}): upward"
                )

    # Cycles: Tarjan's strongly connected components.
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in deps.get(v, ()):
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            visit(v)
    for comp in sccs:
        problems.append("cycle among: " + ", ".join("::".join(m) for m in comp))

    if not quiet:
        for name, tops in reversed(LAYERS):
            print(f"# {name}")
            for mod in sorted(m for m in deps if m[0] in tops):
                used = ", ".join(sorted("::".join(t) for t in deps[mod])) or "-"
                print(f"{'::'.join(mod)} -> {used}")
    if problems:
        for p in problems:
            print(f"layers: {p}", file=sys.stderr)
        return 1
    if not quiet:
        print(f"layers: {len(deps)} modules, no import upward, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
