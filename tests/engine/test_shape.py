import pytest

from k1.engine.model.shape import TreeShape
from k1.errors import ConfigError


def test_default_branching_gives_41_agents_with_hierarchical_names():
    s = TreeShape.from_branching([4, 3, 2])
    assert s.n_agents == 41 and s.level_sizes() == [1, 4, 12, 24]
    names = s.names()
    assert names[:2] == ["root", "n0"] and "n2.a1" in names and "n3.a2.s1" in names
    assert len(set(names)) == 41 and len({a.id for a in s.agents}) == 41


def test_parent_index_points_into_previous_level():
    s = TreeShape.from_branching([2, 3])
    assert s.parent_index(0) == [0]
    assert s.parent_index(1) == [0, 0]
    assert s.parent_index(2) == [0, 0, 0, 1, 1, 1]
    assert s.flat_parents()[:3] == [-1, 0, 0]
    assert s.is_leaf() == [False, False, False] + [True] * 6


def test_roundtrip_and_bad_branching():
    s = TreeShape.from_branching([2, 2], ["block", "mlp", "mlp"])
    assert TreeShape.from_dict(s.to_dict()) == s
    with pytest.raises(ConfigError):
        TreeShape.from_branching([0])
    with pytest.raises(ConfigError, match="one kind per level"):
        TreeShape.from_branching([2], ["block"])
