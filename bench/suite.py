"""A small library with a pytest suite like a real project's, for the sample project.

Four modules (text, number theory, statistics, graphs) and ``tests`` tests
of them, parametrized over generated inputs and checked against slower
reference implementations, so the suite spends its seconds as real ones
do: collecting, importing, and computing, not sleeping. About 400 tests
take about 3 s on one core of the project's machine.
"""

from __future__ import annotations

LIBRARY = {
    "samplelib/__init__.py": '"""Helpers the sample project\'s steps sit beside."""\n',
    "samplelib/text.py": '''"""Text helpers."""

import re
from collections import Counter


def slugify(title: str) -> str:
    """Lower-case words joined by dashes."""
    return "-".join(re.findall(r"[a-z0-9]+", title.lower()))


def word_counts(text: str) -> Counter:
    return Counter(re.findall(r"[a-z']+", text.lower()))


def caesar(text: str, shift: int) -> str:
    def move(c: str) -> str:
        if not c.isascii() or not c.isalpha():
            return c
        base = ord("a") if c.islower() else ord("A")
        return chr(base + (ord(c) - base + shift) % 26)
    return "".join(move(c) for c in text)


def wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap; a word longer than ``width`` gets a line of its own."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines
''',
    "samplelib/numbers.py": '''"""Number theory helpers."""


def primes_below(n: int) -> list[int]:
    """The primes below ``n`` (a sieve of Eratosthenes)."""
    if n < 3:
        return []
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for p in range(2, int(n ** 0.5) + 1):
        if sieve[p]:
            sieve[p * p::p] = bytearray(len(range(p * p, n, p)))
    return [i for i, flag in enumerate(sieve) if flag]


def gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return abs(a)


def collatz_length(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps
''',
    "samplelib/stats.py": '''"""Descriptive statistics."""

import math


def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def variance(values: list[float]) -> float:
    m = mean(values)
    return math.fsum((v - m) ** 2 for v in values) / len(values)
''',
    "samplelib/graphs.py": '''"""Graphs as dicts from a node to its neighbours."""

from collections import deque


def distances(graph: dict[int, list[int]], start: int) -> dict[int, int]:
    """Hops from ``start`` to every node it reaches (breadth first)."""
    seen = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in graph.get(node, []):
            if nxt not in seen:
                seen[nxt] = seen[node] + 1
                queue.append(nxt)
    return seen


def topological_order(graph: dict[int, list[int]]) -> list[int]:
    """Every node after the nodes that point to it; ValueError on a cycle."""
    indegree = {node: 0 for node in graph}
    for targets in graph.values():
        for t in targets:
            indegree[t] = indegree.get(t, 0) + 1
    ready = sorted(n for n, d in indegree.items() if d == 0)
    order = []
    while ready:
        node = ready.pop()
        order.append(node)
        for t in graph.get(node, []):
            indegree[t] -= 1
            if indegree[t] == 0:
                ready.append(t)
    if len(order) != len(indegree):
        raise ValueError("the graph has a cycle")
    return order
''',
}


def _tests(cases: int) -> dict[str, str]:
    """Four test files with ``cases`` parametrized cases each, plus a few plain tests."""
    return {
        "tests/test_text.py": f'''import random
import string

import pytest

from samplelib.text import caesar, slugify, word_counts, wrap

CASES = range({cases})


def sentence(seed):
    rng = random.Random(seed)
    return " ".join("".join(rng.choices(string.ascii_letters, k=rng.randint(1, 12))) for _ in range(rng.randint(5, 400)))


@pytest.mark.parametrize("seed", CASES)
def test_caesar_round_trip(seed):
    text = sentence(seed)
    assert caesar(caesar(text, seed % 26), -(seed % 26)) == text


@pytest.mark.parametrize("seed", CASES)
def test_wrap_keeps_words_and_width(seed):
    text = sentence(seed)
    width = 10 + seed % 50
    lines = wrap(text, width)
    assert " ".join(lines).split() == text.split()
    assert all(len(line) <= width or " " not in line for line in lines)


def test_slugify():
    assert slugify("Hello, World: 2 Times!") == "hello-world-2-times"


def test_word_counts():
    assert word_counts("a b A c b a")["a"] == 3
''',
        "tests/test_numbers.py": f'''import pytest

from samplelib.numbers import collatz_length, gcd, primes_below

CASES = range({cases})


def is_prime(n):
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


@pytest.mark.parametrize("seed", CASES)
def test_sieve_agrees_with_trial_division(seed):
    n = 2000 + 600 * seed
    assert primes_below(n) == [i for i in range(n) if is_prime(i)]


@pytest.mark.parametrize("seed", CASES)
def test_gcd_divides_both(seed):
    a, b = 7919 * seed + 12, 104729 % (seed + 3) + seed
    g = gcd(a, b)
    assert a % g == 0 and b % g == 0
    assert all(a % d or b % d for d in range(g + 1, min(a, b) + 1, max(1, min(a, b) // 200)))


def test_collatz():
    assert collatz_length(27) == 111
''',
        "tests/test_stats.py": f'''import random
import statistics

import pytest

from samplelib.stats import mean, median, variance

CASES = range({cases})


def sample(seed):
    rng = random.Random(seed)
    return [rng.uniform(-1000, 1000) for _ in range(50 + 40 * seed)]


@pytest.mark.parametrize("seed", CASES)
def test_against_the_standard_library(seed):
    values = sample(seed)
    assert mean(values) == pytest.approx(statistics.fmean(values))
    assert median(values) == statistics.median(values)
    assert variance(values) == pytest.approx(statistics.pvariance(values))
''',
        "tests/test_graphs.py": f'''import random

import pytest

from samplelib.graphs import distances, topological_order

CASES = range({cases})


def dag(seed):
    rng = random.Random(seed)
    nodes = 20 + seed * 12
    return {{n: sorted(rng.sample(range(n + 1, nodes), min(3, nodes - n - 1))) for n in range(nodes)}}


@pytest.mark.parametrize("seed", CASES)
def test_order_respects_every_edge(seed):
    graph = dag(seed)
    position = {{node: i for i, node in enumerate(topological_order(graph))}}
    assert all(position[a] < position[b] for a, targets in graph.items() for b in targets)


@pytest.mark.parametrize("seed", CASES)
def test_distances_are_shortest(seed):
    graph = dag(seed)
    found = distances(graph, 0)
    for node, hops in found.items():
        assert hops == 0 or any(found.get(p) == hops - 1 for p, targets in graph.items() if node in targets)


def test_a_cycle_is_refused():
    with pytest.raises(ValueError):
        topological_order({{1: [2], 2: [1]}})
''',
    }


def suite_files(tests: int) -> dict[str, str]:
    """The library and a suite of about ``tests`` tests (at least a dozen)."""
    return {**LIBRARY, **_tests(max(2, tests // 7)), "tests/__init__.py": ""}
