"""A lone car typed unlike both its coupled neighbours, which agree, takes their class
where a fallback rule typed it (session 36, issue 6: the gondola class as a sink).

Freight trains on 1520 mm gauge run largely as blocks or whole trains of one car type;
a car read as another class between two coupled cars of one class is far more often a
misread (a cut misplaced by a metre or two, a height unread at 0.75-1 m pixels) than a
single car of another type marshalled into the block
(:func:`changedet.objects.railcars._block_types`). Only the fallback rules of
:func:`changedet.objects.railcars._classify_rule` (``_WEAK_RULES``) are overridden; a
locomotive never is; a class from the neighbours is flagged in the detection's attrs
(``type_from``: "neighbours"). Cars with known answers, and synthetic tops.
"""

from __future__ import annotations

from changedet.objects import railcars as R


def _train(types: list[str], gap_m: float = R.GAP_M, lengths_m: float = 14.0,
           gaps_m: dict[int, float] | None = None) -> list[tuple[float, float, str, float]]:
    """Cars (start_m, end_m, type, score) of ``types`` coupled ``gap_m`` apart (``gaps_m``:
    the gap before car k where it differs)."""
    cars, a = [], 5.0
    for k, t in enumerate(types):
        a += (gaps_m or {}).get(k, gap_m) if k else 0.0
        cars.append((a, a + lengths_m, t, 0.9))
        a += lengths_m
    return cars


def _types(cars):
    if isinstance(cars, tuple):      # _block_types: (cars, from_neighbours)
        cars = cars[0]
    return [c[2] for c in cars]


def test_a_lone_gondola_read_in_a_boxcar_block_is_a_boxcar():
    # A boxcar cut 12-13 m long (the commonest car of that length: the gondola class).
    cars = _train(["boxcar", "boxcar", "gondola", "boxcar", "boxcar"])
    out, changed = R._block_types(cars)
    assert _types(out) == ["boxcar"] * 5
    assert changed == [False, False, True, False, False]
    # Places and scores are kept: only the class changes.
    assert [c[:2] + (c[3],) for c in out] == [c[:2] + (c[3],) for c in cars]


def test_a_lone_car_in_a_tank_train_and_a_flat_block():
    assert _types(R._block_types(_train(["tank", "gondola", "tank"]))) == ["tank"] * 3
    assert _types(R._block_types(_train(["flatcar", "gondola", "flatcar", "flatcar"]))) == ["flatcar"] * 4


def test_uncoupled_neighbours_say_nothing():
    # A car standing 6 m apart from the block (uncoupled, or a car missed between) keeps
    # its class: only bodies within a coupler gap and half a pixel of each other are one train.
    cars = _train(["boxcar", "gondola", "boxcar"], gaps_m={2: 6.0})
    assert _types(R._block_types(cars)) == ["boxcar", "gondola", "boxcar"]
    cars = _train(["boxcar", "gondola", "boxcar"], gaps_m={1: R._COUPLED_GAP_M + 0.3})
    assert _types(R._block_types(cars)) == ["boxcar", "gondola", "boxcar"]


def test_block_ends_disagreeing_neighbours_and_two_odd_cars_keep_their_class():
    # A train's locomotive at its head, a block's end car: one neighbour only.
    assert _types(R._block_types(_train(["locomotive", "boxcar", "boxcar"]))) == ["locomotive", "boxcar", "boxcar"]
    # Neighbours of two classes: no block.
    assert _types(R._block_types(_train(["tank", "gondola", "boxcar"]))) == ["tank", "gondola", "boxcar"]
    # Two cars of another class together: a block of their own.
    two = ["boxcar", "gondola", "gondola", "boxcar"]
    assert _types(R._block_types(_train(two))) == two


def test_an_alternating_run_is_left_as_read():
    # Every interior car is lone between two agreeing neighbours: a mixed train, or one
    # whose cuts read every other car wrong; flipping each would only swap the errors.
    alt = ["boxcar", "gondola", "boxcar", "gondola", "boxcar"]
    assert _types(R._block_types(_train(alt))) == alt


def test_short_lists():
    assert R._block_types([]) == ([], [])
    one = _train(["gondola"])
    assert R._block_types(one) == (one, [False])


def test_a_car_read_from_the_image_keeps_its_class_in_a_mixed_train():
    # A boxcar's even roof sheet of a boxcar's length, an open wagon seen into, a barrel:
    # read from what the image shows (by_length False), kept between two cars of another
    # class (mixed trains: the own simulator's khasan_railyard scenes, test_objects_matrix).
    cars = _train(["gondola", "boxcar", "gondola", "tank", "gondola"])
    by_length = [False, False, False, False, False]
    assert _types(R._block_types(cars, by_length)) == _types(cars)
    # Only the car typed by its length alone takes its coupled neighbours' class.
    by_length = [False, True, False, False, False]
    assert _types(R._block_types(cars, by_length)) == ["gondola", "gondola", "gondola", "tank", "gondola"]


def _top(half_m: float, n: int = 60):
    """A strip (0.5 m along, 0.25 m across) of an even bright top ``half_m`` (m) half-wide
    on darker ground: a "plain" look."""
    import numpy as np
    from changedet.objects.strips import Strip

    a = np.arange(-3.0, 3.01, 0.25)
    v = np.full((4, a.size, n), 0.15, "float32")
    v[:, np.abs(a) <= half_m, :] = 0.4
    return Strip(v, np.arange(n) * 0.5, a, np.zeros((a.size, n)), np.zeros((a.size, n)), 0.5)


def test_classify_rule_names_the_rule_and_only_fallbacks_are_weak():
    roof = _top(1.5)                     # 3.0 m wide: a walled or roofed body's top
    assert R._look(roof, 0, 26, 0.15) == "plain"
    # Height unread at 1 m pixels: the commonest car of a 12.5 m length (a fallback).
    ctype, rule = R._classify_rule(roof, 0, 26, 12.5, 0.15, tall=None, resolution_m=1.0)
    assert (ctype, rule) == ("gondola", "short_plain_by_length") and rule in R._WEAK_RULES
    # The same top at 0.5 m pixels: its width is read (wider than any deck): kept.
    ctype, rule = R._classify_rule(roof, 0, 26, 12.5, 0.15, tall=None, resolution_m=0.5)
    assert (ctype, rule) == ("gondola", "top_width") and rule not in R._WEAK_RULES
    # Its shadow gives its height: read from the image.
    assert R._classify_rule(roof, 0, 26, 12.5, 0.15, tall=True, resolution_m=1.0)[1] not in R._WEAK_RULES
    # An even roof sheet of a boxcar's length: read from the image.
    assert R._classify_rule(roof, 0, 32, 15.5, 0.15, tall=None, resolution_m=1.0) == ("boxcar", "roof_sheet")
    # _classify gives the class of the same decision path.
    assert R._classify(roof, 0, 26, 12.5, 0.15, tall=None, resolution_m=1.0) == "gondola"


def test_a_container_width_read_is_kept_between_two_tank_cars():
    # An ISO container's 2.44 m top, even out to its shoulders (2.25-2.6 m read), between
    # two coupled tank cars: a single container flat in a manifest, read from the image.
    box = _top(1.22)
    for res in (0.5, 0.75):
        ctype, rule = R._classify_rule(box, 0, 26, 12.5, 0.15, tall=None, resolution_m=res)
        assert (ctype, rule) == ("flatcar", "container_width")
        cars = _train(["tank", ctype, "tank"])
        out, changed = R._block_types(cars, [False, rule in R._WEAK_RULES, False])
        assert _types(out) == ["tank", "flatcar", "tank"] and changed == [False] * 3


def test_a_locomotive_is_never_rewritten_nor_makes_a_block():
    # A mid-train helper or distributed-power unit between two hoppers (gondola class).
    cars = _train(["gondola", "gondola", "locomotive", "gondola", "gondola"])
    assert R._block_types(cars) == (cars, [False] * 5)
    # A car between two locomotives (double-headed light engines) keeps its class.
    cars = _train(["locomotive", "gondola", "locomotive"])
    assert _types(R._block_types(cars)) == ["locomotive", "gondola", "locomotive"]


def test_extra_elements_of_a_car_are_kept():
    cars = [c + ("x",) for c in _train(["tank", "gondola", "tank"])]
    out, changed = R._block_types(cars, [False, True, False])
    assert [c[2] for c in out] == ["tank"] * 3 and [c[4] for c in out] == ["x"] * 3 and changed[1]


def test_a_class_from_the_neighbours_is_flagged_in_the_detection_and_its_json():
    import pyproj

    from changedet.objects.common import CountResult

    strip = _top(1.5)
    read = R._detection(strip, 1.0, 14.0, "gondola", 0.9, "T1")
    block = R._detection(strip, 1.0, 14.0, "gondola", 0.9, "T1", "neighbours")
    assert "type_from" not in read.attrs
    assert block.attrs["type_from"] == "neighbours"
    # The detection's confidence does not change: it was found as surely.
    assert block.score == read.score and block.polygon.equals(read.polygon)
    res = CountResult("railcars", 2, {"gondola": 2}, (), (read, block), pyproj.CRS.from_epsg(32652))
    dets = res.to_json()["detections"]
    assert "type_from" not in dets[0] and dets[1]["type_from"] == "neighbours"
    assert dets[0]["length_m"] == dets[1]["length_m"]


def _three_cars():
    """A strip with three coupled 14 m bodies (1 m gaps, 0.5 m samples) and its
    occupancy."""
    import numpy as np

    from changedet.objects.strips import Strip

    a = np.arange(-3.0, 3.01, 0.25)
    n = 200
    v = np.full((4, a.size, n), 0.15, "float32")
    for s0 in (20, 50, 80):
        v[:, np.abs(a) <= 1.5, s0:s0 + 28] = 0.4
    strip = Strip(v, np.arange(n) * 0.5, a, np.zeros((a.size, n)), np.zeros((a.size, n)), 0.5)
    occ = np.zeros(n, bool)
    occ[20:108] = True
    return strip, occ


def _split(strip, occ, **kw):
    import numpy as np

    return R._split_cars(strip, occ, np.ones(occ.size, bool), np.full(4, 0.01), np.full(4, 0.15), **kw)


def test_split_cars_states_where_each_class_came_from():
    # Each car typed from what it shows: with provenance each carries "image".
    strip, occ = _three_cars()
    plain = _split(strip, occ)
    tagged = _split(strip, occ, provenance=True)
    assert len(plain) == 3 and all(len(c) == 4 for c in plain)
    assert [c[:4] for c in tagged] == plain
    assert [c[4] for c in tagged] == ["image"] * 3


def test_split_cars_gives_a_fallback_typed_middle_car_its_block_class(monkeypatch):
    # The rules' outcome is set (boxcars' roof sheets either side); only the middle car's
    # tag differs: a fallback rule is overridden and flagged, a width read is not.
    strip, occ = _three_cars()
    for middle, want, source in ((("gondola", "short_flat_by_length"), "boxcar", "neighbours"),
                                 (("flatcar", "container_width"), "flatcar", "image")):
        monkeypatch.setattr(R, "_classify_rule", lambda s, s0, s1, *a, _m=middle, **k:
                            _m if 40 <= s0 <= 60 else ("boxcar", "roof_sheet"))
        cars = _split(strip, occ, provenance=True)
        assert [c[2] for c in cars] == ["boxcar", want, "boxcar"]
        assert [c[4] for c in cars] == ["image", source, "image"]
