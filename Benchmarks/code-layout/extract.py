"""Lists the functions of the binary `berth` that a callgrind profile saw run,
one symbol per line, the hottest first: lld's --symbol-ordering-file input.

    python3 extract.py callgrind.out.<pid> > Sources/berth/berth.order
"""

import re
import sys
from collections import defaultdict

ENTRY = re.compile(r"(c?ob|c?fn)=\((\d+)\)(?: (.*))?")
SUFFIX = re.compile(r"'\d+$")


def executed(profile: str) -> list[str]:
    objects: dict[str, str] = {}
    functions: dict[str, str] = {}
    cost: dict[str, int] = defaultdict(int)
    current_object = current_function = None
    with open(profile, errors="replace") as lines:
        for line in lines:
            match = ENTRY.match(line)
            if match:
                kind, ident, name = match.groups()
                table = objects if kind.endswith("ob") else functions
                if name:
                    table[ident] = name
                if kind == "ob":
                    current_object = objects.get(ident)
                elif kind == "fn":
                    name = functions.get(ident)
                    if name:
                        name = SUFFIX.sub("", name)  # callgrind tells contexts of one function apart with 'N
                    current_function = name if current_object and current_object.endswith("/berth") else None
                    if current_function:
                        cost.setdefault(current_function, 0)  # listed even if its cost lines are all zero
                continue
            # "<position> <Ir>" cost lines of the current function (calls' inclusive costs count too:
            # the order only needs to be roughly hottest first).
            if current_function and line[:1] in "0123456789+-*":
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    cost[current_function] += int(parts[1])
    return sorted(cost, key=lambda name: -cost[name])


if __name__ == "__main__":
    for symbol in executed(sys.argv[1]):
        print(symbol)
