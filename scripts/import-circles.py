#!/usr/bin/env python3
"""Import circles between the source files of a crate, and imports that run up its floors.

Usage: scripts/import-circles.py [crates/core/src crates/cli/src]

Every file is a module (`foo.rs` and `foo/mod.rs` are `foo`, `foo/bar.rs` is `foo::bar`). A file
depends on every module it names through `crate::a::b`, `super::x` or `self::x` paths (in `use`
lines and in code), resolved to the longest module path that exists; a `mod.rs` does not count
as depending on its own submodules for declaring them (`mod x;`, `pub use x::...`), which is how
it exposes them. `super::` in `a/b.rs` (module `a::b`) is `a`; in `a/mod.rs` (module `a`) it is
the crate root. A name the crate root re-exports (`crate::Context`) is the module it comes from.

Prints each circle (a strongly connected component of more than one file) and each import from
one top-level folder into one above it in FLOORS (bottom to top), and exits 1 if there is any.
"""

import re
import sys
from pathlib import Path

# The engine's top-level modules, bottom to top: a module may import from its own folder and
# from folders below it, never from one above. (The crate root, `lib.rs`, is the top: the
# front door re-exporting the verbs.)
FLOORS = {
    "crates/core/src": [
        "error", "units", "version", "crypto", "config", "progress", "storage", "pipeline",
        "tarchunk", "process", "context", "repository", "backup", "wal", "postgres", "redis",
        "buckets", "retention", "verify", "copies", "automation", "",
    ],
}


def modules(root: Path):
    out = {}
    for path in sorted(root.rglob("*.rs")):
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        out["::".join(parts)] = path
    return out


def strip(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    # Tests may use anything.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return text[: cut.start()] if cut else text


def reexports(known: dict):
    """Names the crate root re-exports (`pub use a::b::{X, Y}`), to the module they come from."""
    root = known.get("")
    out = {}
    if root is None:
        return out
    for use in re.findall(r"\bpub\s+use\s+([^;]+);", strip(root.read_text())):
        for p in expand(use.replace("\n", " ").replace(" ", "")):
            segs = p.split("::")
            if segs[0] == "crate":
                segs = segs[1:]
            out[segs[-1]] = segs[:-1]
    return out


def deps(name: str, path: Path, known: dict, roots: dict):
    text = strip(path.read_text())
    here = name.split("::") if name else []
    is_mod = path.name in ("mod.rs", "lib.rs", "main.rs")
    base = here
    found = set()
    # Expand `use a::{b, c::{d}}` groups into paths.
    paths = []
    for use in re.findall(r"\buse\s+([^;]+);", text):
        paths.extend(expand(use.replace("\n", " ").replace(" ", "")))
    paths.extend(re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", text))
    for p in paths:
        segs = p.split("::")
        if segs[0] == "crate":
            target = segs[1:]
            if target and target[0] in roots and target[0] not in known:
                target = roots[target[0]] + target[1:]
        elif segs[0] in ("super", "self"):
            target = list(base)
            while segs and segs[0] == "super":
                target = target[:-1]
                segs = segs[1:]
            if segs and segs[0] == "self":
                segs = segs[1:]
            target = target + segs
        else:
            continue
        # Longest existing module path.
        for n in range(len(target), -1, -1):
            candidate = "::".join(target[:n])
            if candidate in known:
                if candidate != name:
                    found.add(candidate)
                break
    if is_mod:
        # A module file re-exporting its children does not depend on them.
        found = {d for d in found if not (d.startswith(name + "::") if name else d)}
    return found


def expand(use: str):
    if "{" not in use:
        return [use.split(" as ")[0]]
    head, rest = use.split("{", 1)
    inner = rest[: rest.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for item in filter(None, items):
        out.extend(expand(head + item))
    return out


def circles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def upward(graph, floors):
    """Imports from a top-level folder into one above it."""
    rank = {top: i for i, top in enumerate(floors)}
    out = []
    for a, targets in sorted(graph.items()):
        top_a = a.split("::")[0]
        for b in sorted(targets):
            top_b = b.split("::")[0]
            if top_a == top_b:
                continue
            if top_a not in rank or top_b not in rank:
                out.append((a, b, f"`{top_a if top_a not in rank else top_b}` has no floor"))
            elif rank[top_b] > rank[top_a]:
                out.append((a, b, f"`{top_b}` is above `{top_a}`"))
    return out


def main():
    bad = False
    for root in sys.argv[1:] or ["crates/core/src", "crates/cli/src"]:
        known = modules(Path(root))
        roots = reexports(known)
        graph = {name: deps(name, path, known, roots) for name, path in known.items()}
        found = circles(graph)
        edges = sum(len(d) for d in graph.values())
        floors = FLOORS.get(root.rstrip("/"))
        up = upward(graph, floors) if floors else []
        print(f"{root}: {len(known)} files, {edges} imports, {len(found)} circles, {len(up)} upward")
        for a, b, why in up:
            bad = True
            print(f"  upward: {a or '(root)'} -> {b or '(root)'} ({why})")
        for comp in found:
            bad = True
            print(f"  circle of {len(comp)}: {', '.join(comp)}")
            for v in comp:
                inside = sorted(d for d in graph[v] if d in comp)
                print(f"    {v or '(root)'} -> {', '.join(inside)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
