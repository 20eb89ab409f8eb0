#!/usr/bin/env python3
"""Fails when a function of shipped code (not tests) is longer than the
limit (120 lines) without a reason. A reason is a comment line
`// long: <why>` among the lines just above the function (its doc comment
and attributes included).

Usage: tools/fn_length.py [--list] [--limit N]
  --list   print every function over the limit, with or without a reason

Run by `make lint`. It reads Rust as text: braces in strings and comments
are masked, which is enough for this tree (rustfmt-formatted code).
"""
import os
import re
import sys

ROOTS = ["appliance/src", "bench/src", "blockstore/src", "cluster/src", "control/src",
         "datapath/src", "mgmt/src", "vmm/src", "vswitch/src"]
FN = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?'
                r'(extern\s+"[^"]*"\s+)?fn\s+(\w+)')
STRING = re.compile(r'"(\\.|[^"\\])*"')
CHAR = re.compile(r"'(\\.|[^'\\])'")


def code(line):
    """The line without strings, chars and comments."""
    line = STRING.sub('""', line)
    line = CHAR.sub("''", line)
    return line.split('//')[0]


def block_end(lines, start):
    """The index of the line closing the block opened at or after
    `start`, or None for a declaration without a body."""
    depth, opened = 0, False
    for j in range(start, len(lines)):
        c = code(lines[j])
        if not opened and ';' in c and '{' not in c:
            return None
        depth += c.count('{') - c.count('}')
        opened = opened or '{' in c
        if opened and depth <= 0:
            return j
    return None


def reason(lines, i):
    """The `// long:` reason above line i, if any."""
    j = i - 1
    while j >= 0 and re.match(r'\s*(///|//|#\[|#!\[)', lines[j]):
        m = re.match(r'\s*//\s*long:\s*(.+)', lines[j])
        if m:
            return m.group(1).strip()
        j -= 1
    return None


def long_functions(path, limit):
    lines = open(path, encoding='utf-8').read().split('\n')
    i = 0
    while i < len(lines):
        if re.match(r'\s*#\[cfg\(test\)\]', lines[i]):
            end = block_end(lines, i + 1)
            i = (end if end is not None else i) + 1
            continue
        m = FN.match(lines[i])
        if m:
            end = block_end(lines, i)
            if end is not None and end - i + 1 > limit:
                yield (end - i + 1, i + 1, m.group(7), reason(lines, i))
        i += 1


def main():
    limit = 120
    args = sys.argv[1:]
    if '--limit' in args:
        limit = int(args[args.index('--limit') + 1])
    found = []
    for root in ROOTS:
        for dirpath, _, files in os.walk(root):
            for f in sorted(files):
                p = os.path.join(dirpath, f)
                if not f.endswith('.rs') or '/tests/' in p or f == 'tests.rs':
                    continue
                for n, line, name, why in long_functions(p, limit):
                    found.append((n, f"{p}:{line}", name, why))
    found.sort(reverse=True)
    bad = [f for f in found if f[3] is None]
    if '--list' in args:
        for n, where, name, why in found:
            print(f"{n:5} {where} {name}" + (f"  (long: {why})" if why else ""))
    for n, where, name, _ in bad:
        print(f"{where}: fn {name} is {n} lines (limit {limit}): split it, "
              f"or say why not in a `// long: <why>` comment above it",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
