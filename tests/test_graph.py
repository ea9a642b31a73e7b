"""The per-category pair graph (`sc_imagenet.dataset.graph`): seeded cliques of near-equal size."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sc_imagenet.dataset.graph import group_edges, group_seed, group_sizes, n_groups, pair_groups


def _ids(n: int) -> list[str]:
    return [f"n1_{i:04d}" for i in range(n)]


@pytest.mark.parametrize(("n", "g"), [(3, 20), (19, 20), (20, 20), (21, 20), (40, 20), (41, 20), (57, 7),
                                      (1300, 20), (12, 3), (100, 5), (9, 4)])
def test_sizes_are_near_equal_and_cover_every_image_once(n: int, g: int) -> None:
    groups = pair_groups(_ids(n), g, seed=0, key="n1")
    sizes = [len(x) for x in groups]
    assert len(groups) == -(-n // g)  # ceil(n / g)
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 3 and max(sizes) <= g
    flat = [i for x in groups for i in x]
    assert sorted(flat) == _ids(n) and len(set(flat)) == n
    assert sizes == group_sizes(n, g)


@pytest.mark.parametrize(("n", "g", "sizes"), [(4, 3, [4]), (5, 3, [5]), (6, 3, [3, 3]), (8, 3, [4, 4]),
                                               (5, 4, [5]), (7, 4, [4, 3])])
def test_small_group_sizes_never_make_a_group_under_three(n: int, g: int, sizes: list[int]) -> None:
    """ceil(n / g) groups would give groups of 2 for g = 3 or 4 (e.g. 4 images, g = 3): fewer, larger groups."""
    assert group_sizes(n, g) == sizes
    assert [len(x) for x in pair_groups(_ids(n), g, 1, "w")] == sizes


@pytest.mark.parametrize("n", [0, 1, 2])
def test_fewer_than_three_images_make_no_groups(n: int) -> None:
    assert pair_groups(_ids(n), 20, 0, "n1") == [] and n_groups(n, 20) == 0 and group_edges([]) == []


def test_deterministic_order_free_and_seeded() -> None:
    ids = _ids(60)
    a = pair_groups(ids, 20, seed=0, key="n1")
    assert a == pair_groups(list(reversed(ids)), 20, seed=0, key="n1")  # input order does not matter
    assert a != pair_groups(ids, 20, seed=1, key="n1")
    assert a != pair_groups(ids, 20, seed=0, key="n2")
    assert a[0] != sorted(a[0]) or a[1] != sorted(a[1])  # actually shuffled
    with pytest.raises(ValueError, match="unique"):
        pair_groups(["a", "a", "b"], 20, 0, "k")


def test_the_seed_is_stable_across_processes() -> None:
    """Python's `hash()` of a str is salted per process; the group seed must not be."""
    code = "from sc_imagenet.dataset.graph import group_seed; print(group_seed(3, 'n01530575'))"
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONHASHSEED": str(s)}).stdout.strip() for s in (1, 2)}
    assert out == {str(group_seed(3, "n01530575"))}


def test_edges_are_every_ordered_pair_inside_each_group() -> None:
    groups = pair_groups(_ids(23), 8, seed=5, key="n9")
    edges = group_edges(groups)
    assert len(edges) == sum(len(g) * (len(g) - 1) for g in groups)
    assert len(set(edges)) == len(edges) and all(s != t for s, t, _ in edges)
    for s, t, gi in edges:
        assert s in groups[gi] and t in groups[gi]
    for gi, g in enumerate(groups):
        for s in g:
            assert sum(1 for e in edges if e[0] == s) == len(g) - 1
            assert {e[1] for e in edges if e[0] == s} == set(g) - {s}
            assert all(e[2] == gi for e in edges if e[0] == s)
    assert edges == group_edges(groups)
    assert group_edges([["a", "b", "c"]]) == [("a", "b", 0), ("a", "c", 0), ("b", "a", 0), ("b", "c", 0),
                                              ("c", "a", 0), ("c", "b", 0)]
