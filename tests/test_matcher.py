"""The numpy matcher against a brute-force oracle."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fr_numpy import NumpyMatcher
from hypothesis import given
from hypothesis import strategies as st

from fr_core.interfaces import ComponentKind, Matcher
from fr_core.plugins import build_registry

DIMS = {"SFace": 8, "ArcFace": 12}


def oracle_search(gallery, q, k, threshold):
    qn = q / np.linalg.norm(q)
    scored = sorted(
        ((1.0 - float(np.dot(v / np.linalg.norm(v), qn)), uid) for uid, v in gallery.items()),
        key=lambda t: t[0],
    )
    return [(uid, d) for d, uid in scored[:k] if d <= threshold]


op = st.one_of(
    st.tuples(
        st.just("add"), st.sampled_from(sorted(DIMS)), st.integers(0, 15), st.integers(0, 2**31)
    ),
    st.tuples(st.just("remove"), st.sampled_from(sorted(DIMS)), st.integers(0, 15), st.just(0)),
    st.tuples(
        st.just("batch"), st.sampled_from(sorted(DIMS)), st.integers(0, 15), st.integers(0, 2**31)
    ),
)


@given(
    st.lists(op, max_size=40),
    st.integers(1, 6),
    st.sampled_from([0.3, 1.0, 1.99]),
    st.integers(0, 2**31),
)
def test_matches_brute_force(ops, k, threshold, seed):
    m = NumpyMatcher(threshold=threshold)
    oracle: dict[str, dict[str, np.ndarray]] = {model: {} for model in DIMS}
    owner: dict[str, str] = {}
    for step, (kind, model, n, s) in enumerate(ops):
        uid = f"u{n}"
        rng = np.random.default_rng([s, step])  # distinct vectors: no ties to break
        if kind == "add":
            v = rng.standard_normal(DIMS[model]).astype(np.float32)
            m.add(model, uid, v)
            if uid in owner and owner[uid] != model:
                del oracle[owner[uid]][uid]
            oracle[model][uid] = v
            owner[uid] = model
        elif kind == "remove":
            present = uid in oracle[model]
            assert m.remove(model, uid) == present
            oracle[model].pop(uid, None)
            if present:
                del owner[uid]
        else:  # a batch: three upserts and one removal in one swap
            ups = []
            for j in range(3):
                u = f"u{(n + j) % 16}"
                v = rng.standard_normal(DIMS[model]).astype(np.float32)
                ups.append((model, u, v))
            gone = f"u{(n + 7) % 16}"
            m.apply(upserts=ups, removals=[gone])
            for o in oracle.values():
                o.pop(gone, None)
            owner.pop(gone, None)
            for _, u, v in ups:
                if u in owner and owner[u] != model:
                    del oracle[owner[u]][u]
                oracle[model][u] = v
                owner[u] = model
    rng = np.random.default_rng(seed)
    for model, dim in DIMS.items():
        assert m.size(model) == len(oracle[model])
        for _ in range(3):
            q = rng.standard_normal(dim).astype(np.float32)
            got = [(x.user_id, x.distance) for x in m.search(model, q, k=k)]
            want = oracle_search(oracle[model], q, k, threshold)
            assert [u for u, _ in got] == [u for u, _ in want]
            assert np.allclose([d for _, d in got], [d for _, d in want], atol=1e-5)
            top1 = m.search(model, q)
            assert [x.user_id for x in top1] == [
                u for u, _ in oracle_search(oracle[model], q, 1, threshold)
            ]


def test_batch_search_equals_single_searches():
    rng = np.random.default_rng(1)
    m = NumpyMatcher(threshold=1.0)
    E = rng.standard_normal((300, 16)).astype(np.float32)
    m.replace_gallery("S", [f"u{i}" for i in range(300)], E)
    Q = rng.standard_normal((32, 16)).astype(np.float32)
    single = [(m.search("S", q) or [None])[0] for q in Q]
    batch = m.search_batch("S", Q)
    assert [b and b.user_id for b in batch] == [x and x.user_id for x in single]
    assert all(
        b is None or abs(b.distance - x.distance) < 1e-5 for b, x in zip(batch, single, strict=True)
    )


def test_models_and_dimensions_are_never_mixed():
    m = NumpyMatcher()
    m.add("SFace", "a", np.ones(128, np.float32))
    m.add("ArcFace", "b", np.ones(512, np.float32))
    assert m.search("SFace", np.ones(128, np.float32))[0].user_id == "a"
    with pytest.raises(ValueError, match="never compared"):
        m.search("SFace", np.ones(512, np.float32))
    assert m.search("Other", np.ones(128, np.float32)) == []
    with pytest.raises(ValueError, match="differs from the gallery"):
        m.add("SFace", "c", np.ones(64, np.float32))


def test_threshold_and_bad_queries():
    m = NumpyMatcher(threshold=0.5)
    m.add("S", "a", np.array([1, 0, 0], np.float32))
    assert m.search("S", np.array([0, 1, 0], np.float32)) == []  # distance 1.0 > 0.5
    assert m.search("S", np.array([1, 0.1, 0], np.float32))[0].distance < 0.01
    with pytest.raises(ValueError):
        m.search("S", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="both upserted and removed"):
        m.apply(upserts=[("S", "a", np.ones(3, np.float32))], removals=["a"])


def test_registered_and_configured_from_the_top_level_threshold():
    from fr_core.config import default_config
    from fr_core.plugins import BuildContext

    registry = build_registry()
    ctx = BuildContext(registry=registry, app_config=default_config(match_threshold=0.4))
    m = registry.create(ComponentKind.MATCHER, "numpy", {}, ctx)
    assert isinstance(m, Matcher) and m.threshold == 0.4
    assert registry.create(ComponentKind.MATCHER, "numpy", {"threshold": 0.3}, ctx).threshold == 0.3


def test_concurrent_readers_and_writers():
    rng = np.random.default_rng(5)
    m = NumpyMatcher(threshold=2.0)
    m.replace_gallery(
        "S", [f"u{i}" for i in range(500)], rng.standard_normal((500, 32)).astype(np.float32)
    )
    errors = []
    stop = threading.Event()

    def read():
        q = rng.standard_normal(32).astype(np.float32)
        while not stop.is_set():
            try:
                assert len(m.search("S", q, k=5)) == 5
            except Exception as exc:
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(200):
        m.apply(
            upserts=[("S", f"new{i}", rng.standard_normal(32).astype(np.float32))],
            removals=[f"u{i}"],
        )
    stop.set()
    for t in readers:
        t.join()
    assert not errors and m.size("S") == 500
