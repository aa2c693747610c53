#!/usr/bin/env python3
"""The layers of src/ (docs/design.md): every #include of a project header must name
a header of the same folder or of a folder before it in LAYERS.  One check per
folder; ends with "N passed, N failed"."""
import os
import re
import sys

LAYERS = ['core', 'compute', 'model', 'tokenizer', 'formats', 'data', 'dist', 'infer', 'eval', 'train', 'serve']

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src')
where = {}
for d in os.listdir(root):
    if d == 'cuda' or not os.path.isdir(os.path.join(root, d)):
        continue
    if d not in LAYERS:
        print(f'FAIL src/{d}/ is not in the list of layers (scripts/check_layers.py, docs/design.md)')
        print('0 passed, 1 failed')
        sys.exit(1)
    for f in os.listdir(os.path.join(root, d)):
        if f in where:
            print(f'FAIL {f} is in both src/{where[f]}/ and src/{d}/')
            print('0 passed, 1 failed')
            sys.exit(1)
        where[f] = d
passed = failed = 0
for layer in LAYERS:
    bad = []
    for f, d in sorted(where.items()):
        if d != layer:
            continue
        for n, line in enumerate(open(os.path.join(root, d, f), encoding='utf-8'), 1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m and m.group(1) in where and LAYERS.index(where[m.group(1)]) > LAYERS.index(d):
                bad.append(f'src/{d}/{f}:{n} includes {m.group(1)} of src/{where[m.group(1)]}/, a later layer')
    if bad:
        failed += 1
        print(f'FAIL layers/{layer}')
        for b in bad:
            print('     ' + b)
    else:
        passed += 1
        print(f'ok   layers/{layer}')
print(f'{passed} passed, {failed} failed')
sys.exit(1 if failed else 0)
