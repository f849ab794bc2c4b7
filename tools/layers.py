#!/usr/bin/env python3
"""The module dependencies of tryvox-core, read from its `use crate::` lines (and any
other `crate::` or `super::` path outside tests), checked against its layers.

Fails (exit 1) when a module imports a module of a higher layer, or when modules import
each other in a cycle (at any depth, within a layer too). Prints the dependency list:

    tools/layers.py              # check, print one line per module: its layer and imports
    tools/layers.py --quiet      # check only
    tools/layers.py --self-test  # on copies of core/src: a cycle and an upward import
                                 # planted in several disguises must each fail the check

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

# An item a module defines, by name.
DEFINES = r"\b(?:fn|struct|enum|const|static|type|trait|mod|union|macro_rules!)\s+(\w+)"

# What hides a dependency from reading the code: refused outright.
UNFOLLOWABLE = [
    ("a path built by a macro (crate::$x)", r"(?:crate|super|self)::\$"),
    ("include!", r"\binclude!"),
    ("a #[path] module", r"#\[\s*path\s*="),
]


def modules(root):
    """Module path (tuple) -> file, for every .rs file under `root` except lib.rs."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts == ["lib"]:
                continue
            out[tuple(parts)] = os.path.join(dirpath, f)
    return out


def strip(text):
    """`text` with comments (nested block comments too), string literals (escaped, raw,
    byte) and character literals blanked, lines kept: what is left is code."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif (m := re.compile(r'[bc]?r(#*)"').match(text, i)) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and (m := re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]{1,6}\}|.)|[^\\'\n])'").match(text, i)):
            out.append("' '")
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def code_of(path):
    """The file's code (see `strip`), without its `#[cfg(test)] mod tests { ... }` block."""
    text = strip(open(path, encoding="utf-8").read())
    # `crate :: x` and `crate::\n x` are paths too; `r#x` is the identifier x.
    text = re.sub(r"\s*::\s*", "::", text)
    text = re.sub(r"\br#(?=[A-Za-z_])", "", text)
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{", text)
    if m:
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        text = text[: m.start()] + text[j:]
    return text


def expand(tree):
    """`a::{b, c::{d as e}}` -> [(a::b, b), (a::c::d, e)]: each leaf's segments, with the
    name it is known by here."""
    tree = tree.strip()
    m = re.match(r"^(.*?)\{(.*)\}$", tree, re.S)
    if not m:
        path, _, alias = tree.partition(" as ")
        segs = [x.strip() for x in path.split("::") if x.strip()]
        return [(segs, alias.strip() or (segs[-1] if segs else ""))]
    prefix = [x.strip() for x in m.group(1).split("::") if x.strip()]
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
            out += [(prefix + segs, name) for segs, name in expand(p)]
    return out


def absolute(mod, segs, mods):
    """`segs` as written in module `mod` (crate::, super::, self::, or a child module's
    name), as a path from the crate root; None for anything else (std, a dependency)."""
    if not segs:
        return None
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] in ("super", "self"):
        base = list(mod)
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
        if segs and segs[0] == "self":
            segs = segs[1:]
        return base + segs
    if tuple(mod) + (segs[0],) in mods:
        return list(mod) + segs
    return None


def uses(mod, text, mods):
    """(absolute path, local name) of each `use` leaf of module `mod`."""
    out = []
    for m in re.finditer(r"\buse\s+([^;]*);", text):
        for segs, name in expand(m.group(1)):
            p = absolute(mod, segs, mods)
            if p is not None:
                out.append((p, name))
    return out


def references(mod, text, mods):
    """The paths module `mod` names: in its `use` lines and anywhere in its code
    (crate::, super::, self::, a child module's name), from the crate root."""
    paths = [p for p, _ in uses(mod, text, mods)]
    for m in re.finditer(r"(?<![\w:])([a-z_]\w*(?:::\w+)+)", text):
        p = absolute(mod, m.group(1).split("::"), mods)
        if p is not None:
            paths.append(p)
    return paths


def resolve(path, mods, reexports):
    """The module `path` names: its longest module prefix, followed through `use`
    re-exports (a parent's `use child::item` named as `parent::item` is the child's);
    None for an item of the crate root."""
    target = None
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in mods:
            target = tuple(path[:n])
            break
    for _ in range(16):
        if target is None or len(path) <= len(target):
            break
        via = reexports.get(target, {}).get(path[len(target)])
        if via is None or via == target:
            break
        path = list(via[0]) + path[len(target) + 1 :]
        target = via[1]
    return target


def check(root, quiet):
    mods = modules(root)
    codes = {mod: code_of(path) for mod, path in mods.items()}
    # What each module's `use` lines bring in from its own descendants: `use turn::run`
    # in engine makes `engine::run` a name for `engine::turn::run`.
    reexports = {}
    for mod, text in codes.items():
        for p, name in uses(mod, text, mods):
            if name == "*" and tuple(p[:-1]) in mods and tuple(p[: len(mod)]) == mod:
                # `use child::*`: each item the child defines, by name.
                child = tuple(p[:-1])
                for item in re.findall(DEFINES, codes[child]):
                    reexports.setdefault(mod, {}).setdefault(item, (list(child) + [item], child))
                continue
            for n in range(len(p) - 1, len(mod), -1):
                if tuple(p[:n]) in mods and tuple(p[: len(mod)]) == mod:
                    reexports.setdefault(mod, {})[name] = (p, tuple(p[:n]))
                    break
    deps, problems = {}, []
    for mod, path in sorted(mods.items()):
        if mod[0] not in RANK:
            problems.append(f"{'::'.join(mod)}: in no layer (add its folder to LAYERS)")
            continue
        deps[mod] = set()
        for what, pattern in UNFOLLOWABLE:
            if re.search(pattern, codes[mod]):
                problems.append(f"{'::'.join(mod)}: {what}: this check cannot follow it")
        for ref in references(mod, codes[mod], mods):
            target = resolve(ref, mods, reexports)
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



# Planted in a copy of the tree, each must fail the check: (file, text appended).
PLANTS = [
    ("net/conn.rs", "fn _cycle() { let _ = crate::net::idle::IDLE_CONN; }\n"),
    ("net/trust.rs", "fn _up() { let _ = crate::client::Client::new; }\n"),
    ("net/trust.rs", 'fn _s() { let _ = "a \\\ncontinued"; let _ = crate::ops::bulk::MAX_PARALLEL; }\n'),
    ("net/trust.rs", "fn _c() { let _ = '\"'; let _ = crate::ops::bulk::MAX_PARALLEL; }\n"),
    ("net/trust.rs", 'fn _r() { let _ = r#"a " b"#; let _ = crate::ops::bulk::MAX_PARALLEL; }\n'),
    ("net/trust.rs", '/* " */ fn _b() { let _ = crate::ops::bulk::MAX_PARALLEL; }\n'),
    ("net/trust.rs", "#[cfg(test)]\nmod tests {}\nfn _late() { let _ = crate::engine::MAX_CONNECTING; }\n"),
    ("net/trust.rs", "use crate::{contract::error, ops::{bulk, sweep}};\n"),
    ("engine/mod.rs", "pub(super) use turn::run as run_again;\n", "engine/timers.rs", "use super::run_again;\n"),
    ("net/trust.rs", "fn _sp() { let _ = crate :: ops :: bulk :: MAX_PARALLEL; }\n"),
    ("net/trust.rs", "fn _nl() { let _ = crate::\n    ops::bulk::MAX_PARALLEL; }\n"),
    ("net/trust.rs", 'fn _cr() { let _ = cr"\\"; let _ = crate::ops::bulk::MAX_PARALLEL; let _ = "\\""; }\n'),
    ("net/conn.rs", "use super::r#idle::IDLE_CONN as _I;\n"),
    ("net/conn.rs", "fn _ri() { let _ = crate::net::r#idle::IDLE_CONN; }\n"),
    ("net/mod.rs", "pub(crate) use idle::*;\n", "net/conn.rs", "fn _g() { let _ = super::IDLE_CONN; }\n"),
    ("net/trust.rs", "macro_rules! up { ($a:ident) => { crate::$a::bulk::MAX_PARALLEL }; }\n"),
    ("net/trust.rs", 'include!("../ops/up.in");\n'),
    ("net/trust.rs", '#[path = "../ops/up.rs"]\nmod up;\n'),
]


def self_test():
    import shutil
    import tempfile

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for plant in PLANTS:
            root = os.path.join(tmp, "src")
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(ROOT, root)
            for f, text in zip(plant[::2], plant[1::2]):
                with open(os.path.join(root, f), "a", encoding="utf-8") as out:
                    out.write(text)
            with open(os.devnull, "w") as null:
                err, sys.stderr = sys.stderr, null
                try:
                    rc = check(root, quiet=True)
                finally:
                    sys.stderr = err
            if rc == 0:
                failures += 1
                print(f"layers self-test: not caught: {plant}", file=sys.stderr)
    if failures:
        return 1
    print(f"layers self-test: {len(PLANTS)} planted cycles and upward imports caught")
    return 0


def main():
    if "--self-test" in sys.argv[1:]:
        return self_test()
    return check(ROOT, quiet="--quiet" in sys.argv[1:])

if __name__ == "__main__":
    sys.exit(main())
