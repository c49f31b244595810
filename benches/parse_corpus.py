"""A differential corpus for the model reader: mutated models and what ``sgflows.compile``
says of each, one JSON line per model, so that two builds can be compared byte for byte.

Each model is one of four bases (the ``p10`` workload, its RPC shape, ``examples/two-tier.json``,
``tests/data/neutron-rpc-payload.json``) with one to three random edits (a value replaced by
one of another type or out of range, a key deleted, misspelt or added, a list item repeated,
sometimes a repeated JSON key), compiled from JSON bytes, msgpack and Python objects with a
random ``strict`` and ``widen_unmatchable_port_ranges``. A line holds the errors (or the
warnings and a hash of the flows) of the three inputs::

    PYTHONPATH=build/before_pkg python benches/parse_corpus.py 1500 > before.jsonl
    python benches/parse_corpus.py 1500 > after.jsonl
    cmp before.jsonl after.jsonl

Seeded: the same count gives the same models.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sgflows
import workload

ROOT = Path(__file__).resolve().parent.parent

VALUES: list[Any] = [
    None, 1, -1, 0, 70000, 1.5, "x", "", "1.5", " 22 ", [], {}, True, False, [1], {"a": 1},
    "tcp", "ingress", "IPv6", "10.0.0.0/8", "fa:16:3e:00:00:01", "::/0", "0.0.0.0/0",
    65535, 255, 256,
]  # fmt: skip


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _at(obj: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def mutate(model: Any, rng: random.Random) -> Any:
    """The model with one to three random edits."""
    m = copy.deepcopy(model)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(_paths(m))[1:])
        parent, k = _at(m, path[:-1]), path[-1]
        op = rng.random()
        if op < 0.35:
            parent[k] = copy.deepcopy(rng.choice(VALUES))
        elif op < 0.5 and isinstance(parent, dict):
            del parent[k]
        elif op < 0.65 and isinstance(parent, dict):
            parent[k[:-1] if rng.random() < 0.5 else k + "x"] = parent.pop(k)
        elif op < 0.75 and isinstance(parent, dict):
            parent["unknown_" + rng.choice(["prefix", "thing", "remote"])] = 1
        elif op < 0.85 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[k]))
        else:
            parent[k] = copy.deepcopy(rng.choice(VALUES))
    return m


def outcome(data: Any, **options: Any) -> dict[str, Any]:
    """What compiling says: the errors, or the warnings and a hash of the flows."""
    try:
        r = sgflows.compile(data, **options)
    except sgflows.ModelError as e:
        return {"ok": False, "error": str(e), "errors": [list(x) for x in e.errors]}
    except Exception as e:  # any other failure is part of the comparison
        return {"ok": False, "exc": type(e).__name__, "error": str(e)}
    flows = hashlib.sha1(r.to_ofctl().encode()).hexdigest()
    return {"ok": True, "warnings": r.warnings, "flows": flows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=1500)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args(argv)
    print(f"sgflows from {Path(sgflows.__file__).parent}", file=sys.stderr)
    rng = random.Random(args.seed)
    p10 = workload.preset("p10")
    bases = [
        p10,
        workload.to_neutron_rpc(p10),
        json.loads((ROOT / "examples/two-tier.json").read_text()),
        json.loads((ROOT / "tests/data/neutron-rpc-payload.json").read_text()),
    ]
    for i in range(args.count):
        base = bases[i % len(bases)]
        m = mutate(base, rng) if i >= len(bases) else base
        text = json.dumps(m)
        if rng.random() < 0.1:  # a repeated key: the last value wins
            text = text.replace(
                '"direction": "ingress"', '"direction": "egress", "direction": "ingress"', 1
            )
        options = {
            "widen_unmatchable_port_ranges": rng.random() < 0.5,
            "strict": rng.choice([None, "error", "warn", "ignore"]),
        }
        line = {
            "i": i,
            "bytes": outcome(text.encode(), **options),
            "msgpack": outcome(msgpack.packb(m), **options),
            "dict": outcome(m, **options),
        }
        print(json.dumps(line, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
