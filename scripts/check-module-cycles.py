#!/usr/bin/env python3
"""Report import circles between the files of each crate.

For every crate (a directory with Cargo.toml and src/), each .rs file under src/ is a
module. File A depends on file B when A names B through `crate::...`, `super::...` or
`self::...` (in a `use` or in a path expression). Names re-exported by a module
(`pub use child::Item`) resolve to the file that defines them, and the re-export itself
is not a dependency: a parent declaring or re-exporting its children is the facade
pattern, not a circle. Likewise a parent calling into its own child while the child uses
the parent's helpers (`super::...`) is the module hierarchy, not a circle: that pair of
edges is dropped. A circle is A -> B -> ... -> A between files otherwise, e.g. two
siblings naming each other, or a loop through three files.

Usage: scripts/check-module-cycles.py [ROOT]   (default: the repository)
Exit status 1 when any crate has a circle; the circles are printed one per line.
"""

import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return re.sub(r"//[^\n]*", "", text)


def module_path(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return ()
    if len(rel) >= 1 and rel[0] == "bin":
        return None  # binaries are their own crate roots
    return tuple(rel)


def expand_use(tree):
    """Expands `a::{b, c::{d, e}}` into ['a::b', 'a::c::d', 'a::c::e']."""
    tree = tree.strip()
    i = tree.find("{")
    if i < 0:
        return [re.sub(r"\s+as\s+\w+$", "", tree).strip()]
    prefix, body = tree[:i], tree[i + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
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
            for e in expand_use(p):
                out.append(prefix + e if e != "self" else prefix.rstrip(":"))
    return out


def absolute(mod, path):
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        return tuple(segs[1:])
    base = list(mod)
    is_rel = False
    while segs and segs[0] in ("super", "self"):
        is_rel = True
        if segs.pop(0) == "super":
            if not base:
                return None
            base.pop()
    return tuple(base + segs) if is_rel else None


def locate(mod, path, files):
    """The absolute path `path` names from inside `mod`, or None for other crates."""
    a = absolute(mod, path)
    if a is None:
        # `use child::Item` inside a parent names a declared child module
        segs = tuple(path.split("::"))
        if tuple(mod) + segs[:1] in files:
            a = tuple(mod) + segs
    return a


def analyse(crate):
    src = os.path.join(crate, "src")
    files = {}
    for dirpath, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(dirpath, n)
                m = module_path(src, p)
                if m is not None:
                    files[m] = p
    texts = {m: strip_comments(open(p, encoding="utf-8").read()) for m, p in files.items()}

    # re-exports: module -> {name: absolute path}
    reexports = {}
    for m, t in texts.items():
        r = reexports.setdefault(m, {})
        for tree in re.findall(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", t):
            for p in expand_use(tree):
                a = locate(m, p, files)
                if a and not a[-1] == "*":
                    r[a[-1]] = a

    def resolve(path, seen=0):
        """The file module that defines `path` (longest file-module prefix, re-exports followed)."""
        for n in range(len(path), -1, -1):
            head = path[:n]
            if head in files:
                if n < len(path) and seen < 8:
                    target = reexports.get(head, {}).get(path[n])
                    if target and target != head + (path[n],):
                        return resolve(target + path[n + 1 :], seen + 1)
                return head
        return None

    edges = {m: set() for m in files}
    for m, t in texts.items():
        pub_use = set()
        for tree in re.findall(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", t):
            pub_use.update(expand_use(tree))
        paths = []
        for tree in re.findall(r"(?<![\w:])(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", t):
            paths.extend(p for p in expand_use(tree) if p not in pub_use)
        body = re.sub(r"\buse\s+[^;]+;", "", t)
        paths.extend(re.findall(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", body))
        for p in paths:
            a = locate(m, p, files)
            if a is None:
                continue
            target = resolve(tuple(s for s in a if s != "*"))
            if target is not None and target != m:
                edges[m].add(target)
    for m in files:
        for t in list(edges[m]):
            if t[: len(m)] == m and m in edges[t]:
                edges[m].discard(t)  # parent -> own child that uses the parent back
    return files, edges


def cycles(edges):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def loop_in(comp, edges):
    """One concrete loop through the component, for the report."""
    members = set(comp)
    start = sorted(comp)[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in edges[path[-1]] if w in members)
        back = [w for w in nxt if w in path]
        if back:
            return path[path.index(back[0]) :] + [back[0]]
        fresh = [w for w in nxt if w not in seen]
        if not fresh:
            return path
        path.append(fresh[0])
        seen.add(fresh[0])


def main():
    crates = []
    for dirpath, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in ("target", ".git", "node_modules")]
        if "Cargo.toml" in names and os.path.isdir(os.path.join(dirpath, "src")):
            crates.append(dirpath)
    found = 0
    for crate in sorted(crates):
        files, edges = analyse(crate)
        for comp in cycles(edges):
            found += 1
            loop = loop_in(comp, edges)
            name = lambda m: os.path.relpath(files[m], ROOT)
            print(f"import circle in {os.path.relpath(crate, ROOT)}: " + " -> ".join(name(m) for m in loop))
    if found:
        sys.exit(1)
    print(f"no import circles in {len(crates)} crates")


if __name__ == "__main__":
    main()
