"""Mask consensus (instance and semantic), gold scoring and agreement on masks."""

from __future__ import annotations

import numpy as np
import pytest

from qa.consensus.masks import (
    mask_model,
    merge_masks,
    merge_masks_batch,
    merge_semantic_batch,
    pixel_majority_vote,
    semantic_model,
    semantic_union,
)
from qa.geometry import mask_iou
from qa.scoring import gold_score
from tests.qa.mask_crowd import WORKERS, Scene, crowd, ellipse, quality, rle, scene

W, H = 40, 30


def square(x: int, y: int, side: int) -> dict:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y : y + side, x : x + side] = 1
    return rle(mask)


def sizes(scenes: list[Scene]) -> list[tuple[int, int]]:
    return [(s.width, s.height) for s in scenes]


@pytest.fixture(scope="module")
def generated() -> tuple[list[Scene], list]:
    return crowd(seed=7, images=30)


def test_consensus_beats_the_pixel_majority_vote(generated) -> None:
    """Three careful workers who each miss one object in five, one who paints over every edge
    with a broad brush, one spammer. The majority vote loses objects only two careful workers
    marked, joins touching objects and takes the brush's edge where it tips the vote; the
    merge keeps each object apart and weighs each painter by their pixel reliability."""
    scenes, crowds = generated
    merged = merge_masks_batch(crowds, sizes(scenes))
    ours = np.mean(
        [quality(s, [o.to_item() for o in objs]) for s, objs in zip(scenes, merged, strict=True)]
    )
    vote = np.mean([
        quality(s, [o.to_item() for o in pixel_majority_vote(c, width=s.width, height=s.height)])
        for s, c in zip(scenes, crowds, strict=True)
    ])  # fmt: skip
    assert ours >= 0.8, (ours, vote)
    assert ours >= vote + 0.15, (ours, vote)
    # The model's posterior keeps what a fixed quorum of the same clusters would lose.
    quorum = np.mean([
        quality(s, [o.to_item() for o in merge_masks(c, width=s.width, height=s.height, quorum=0.5)])
        for s, c in zip(scenes, crowds, strict=True)
    ])  # fmt: skip
    assert ours > quorum, (ours, quorum)


def test_the_model_tells_careful_painters_from_sloppy_ones(generated) -> None:
    scenes, crowds = generated
    model = mask_model(crowds, sizes(scenes))
    careful = [model.worker(w) for w in ("c1", "c2", "c3")]
    brush, spam = model.worker("brush"), model.worker("spam")
    assert set(WORKERS) == set(model.workers)
    for worker in careful:
        assert worker.specificity > brush.specificity + 0.1
        assert worker.recall > 2 * spam.recall
        assert worker.false_marks < spam.false_marks
        assert 0.7 <= worker.recall <= 0.95  # they miss one object in five


def test_chunks_with_the_batch_model_get_what_one_batch_gets(generated) -> None:
    scenes, crowds = generated
    model = mask_model(crowds, sizes(scenes))
    whole = merge_masks_batch(crowds, sizes(scenes), model=model)
    parts = merge_masks_batch(crowds[:10], sizes(scenes[:10]), model=model) + merge_masks_batch(
        crowds[10:], sizes(scenes[10:]), model=model
    )
    assert [[o.to_item() for o in objs] for objs in whole] == [
        [o.to_item() for o in objs] for objs in parts
    ]


def test_merged_masks_are_traceable_rles_of_the_image() -> None:
    answers = [
        ("a", 1.0, [{"label": "car", "rle": square(2, 2, 10)}]),
        ("b", 1.0, [{"label": "car", "rle": square(3, 2, 10)}]),
        ("c", 0.5, [{"label": "person", "rle": square(2, 3, 10)}, {"label": "car", "rle": square(25, 15, 4)}]),
    ]  # fmt: skip
    objects = merge_masks(answers, width=W, height=H, quorum=0.5)
    assert len(objects) == 1
    (obj,) = objects
    item = obj.to_item()
    assert item["label"] == "car"
    assert item["rle"]["size"] == [H, W]
    assert isinstance(item["rle"]["counts"], str)
    assert mask_iou([item["rle"]], [square(2, 2, 10)])[0, 0] > 0.8
    assert set(obj.workers) == {"a", "b", "c"}
    assert item["num_votes"] == 3
    # Nothing to merge: nothing merged, no crash on an empty or all-empty crowd.
    assert merge_masks([], width=W, height=H) == []
    assert merge_masks([("a", 1.0, [])], width=W, height=H) == []
    with pytest.raises(ValueError, match="not the image's"):
        merge_masks([("a", 1.0, [{"label": "car", "rle": square(0, 0, 3)}])], width=W + 1, height=H)


def test_semantic_pixels_follow_the_reliable_workers() -> None:
    """Two careful workers, a third who swaps labels now and then, and two spammers who paint
    a blob of each label anywhere: the weighted per-pixel vote keeps the truth, and the model
    gives the spammers the lowest pixel accuracy."""
    rng = np.random.default_rng(3)
    scenes = [scene(rng) for _ in range(15)]

    def painter(flip: float):
        def paint(s: Scene) -> list[dict]:
            swap = {"car": "person", "person": "car"}
            return [{"label": swap[label] if rng.random() < flip else label, "rle": rle(mask)}
                    for label, mask in s.objects]  # fmt: skip

        return paint

    def spam(s: Scene) -> list[dict]:
        taken = np.zeros((s.height, s.width), dtype=np.uint8)
        out = []
        for label in ("car", "person"):
            blob = ellipse(
                s.width, s.height, rng.uniform(0, s.width), rng.uniform(0, s.height), 15, 15
            )
            blob &= 1 - taken
            taken |= blob
            if blob.any():
                out.append({"label": label, "rle": rle(blob)})
        return out

    painters = {
        "c1": painter(0.05),
        "c2": painter(0.05),
        "c3": painter(0.3),
        "s1": spam,
        "s2": spam,
    }
    crowds = [[(w, 1.0, paint(s)) for w, paint in painters.items()] for s in scenes]
    model = semantic_model(crowds, sizes(scenes))
    assert min(model.worker(w).accuracy for w in ("c1", "c2")) > model.worker("c3").accuracy
    assert model.worker("c3").accuracy > max(model.worker(w).accuracy for w in ("s1", "s2"))
    merged = merge_semantic_batch(crowds, sizes(scenes))
    per_label = []
    for s, objects in zip(scenes, merged, strict=True):
        truth = {
            i["label"]: i["rle"]
            for i in semantic_union([{"label": name, "rle": rle(m)} for name, m in s.objects])
        }
        found = {o.label: o.to_item()["rle"] for o in objects}
        assert len(found) == len(objects)  # one object a label
        per_label += [
            mask_iou([truth[name]], [found[name]])[0, 0] if name in found else 0.0 for name in truth
        ]
    assert np.mean(per_label) >= 0.9
    # Merged semantic masks never overlap.
    for objects in merged:
        rles = [o.to_item()["rle"] for o in objects]
        overlap = mask_iou(rles, rles) - np.eye(len(rles))
        assert not (overlap > 0).any()


class TestGoldScoring:
    def test_masks_score_by_iou_and_report_dice(self) -> None:
        gold = [{"label": "car", "rle": square(0, 0, 10)}]
        same = gold_score("mask", gold, gold)
        assert (same.score, same.mean_iou, same.mean_dice) == (1.0, 1.0, 1.0)
        # Shifted 5 pixels: 50 pixels shared, 150 in either: IoU 1/3, Dice 1/2.
        shifted = [{"label": "car", "rle": square(5, 0, 10)}]
        loose = gold_score("mask", gold, shifted, iou_threshold=0.3)
        assert loose.mean_iou == pytest.approx(1 / 3)
        assert loose.mean_dice == pytest.approx(1 / 2)
        assert loose.details()["mean_dice"] == 0.5
        strict = gold_score("mask", gold, shifted, iou_threshold=0.5)
        assert (strict.score, strict.missed, strict.extra, strict.mean_dice) == (0.0, 1, 1, None)
        relabelled = gold_score("mask", gold, [{"label": "person", "rle": square(0, 0, 10)}])
        assert (relabelled.score, relabelled.wrong_label) == (0.0, 1)
        assert "mean_dice" not in gold_score("bbox", [], []).details()

    def test_a_semantic_label_in_two_strokes_is_the_same_answer(self) -> None:
        whole = np.zeros((H, W), dtype=np.uint8)
        whole[0:10, 0:20] = 1
        left, right = whole.copy(), whole.copy()
        left[:, 10:] = 0
        right[:, :10] = 0
        gold = semantic_union([{"label": "road", "rle": rle(whole)}])
        answer = semantic_union(
            [{"label": "road", "rle": rle(left)}, {"label": "road", "rle": rle(right)}]
        )
        assert len(answer) == 1
        assert gold_score("mask", gold, answer).score == 1.0


def test_a_window_is_cut_from_the_runs_as_the_decoded_mask_would_be() -> None:
    from qa.consensus.masks import _crop

    rng = np.random.default_rng(5)
    for _ in range(20):
        mask = (rng.random((H, W)) > 0.7).astype(np.uint8)
        left, right = sorted(rng.choice(W + 1, 2, replace=False).tolist())
        top, bottom = sorted(rng.choice(H + 1, 2, replace=False).tolist())
        encoded = rle(mask)
        assert np.array_equal(
            _crop(encoded, left, top, right, bottom), mask[top:bottom, left:right]
        )
        as_bytes = {**encoded, "counts": encoded["counts"].encode()}
        assert np.array_equal(
            _crop(as_bytes, left, top, right, bottom), mask[top:bottom, left:right]
        )


def test_edge_bands_measure_the_distance_to_the_edge() -> None:
    from qa.consensus.masks import N_BANDS, edge_bands

    inside = np.zeros((40, 40), dtype=bool)
    inside[5:35, 5:35] = True
    bands = edge_bands(inside)
    assert bands[5, 20] == 0  # either side of the edge
    assert bands[4, 20] == 0
    assert bands[6, 20] == 1  # 2 px in
    assert bands[8, 20] == 2  # 4 px in
    assert bands[20, 20] == N_BANDS - 1  # 16 px in
    assert (edge_bands(np.ones((5, 5), dtype=bool)) == N_BANDS - 1).all()


def _shaky_crowd(images: int, seed: int) -> tuple[list[np.ndarray], list, list[tuple[int, int]]]:
    """Two careful painters and three shaky ones (edges moved out by 1 px and by a smooth
    field of ~2.5 px) on each image of one ellipse: the shaky ones outnumber the careful on
    every edge."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    truths, crowds = [], []
    for _ in range(images):
        truth = ellipse(100, 80, rng.uniform(40, 60), rng.uniform(35, 45), rng.uniform(15, 25),
                        rng.uniform(15, 25))  # fmt: skip
        signed = np.where(
            truth,
            -ndimage.distance_transform_edt(truth) + 0.5,
            ndimage.distance_transform_edt(~truth) - 0.5,
        )
        answers = []
        for worker in ("c1", "c2", "s1", "s2", "s3"):
            jitter, bias = (0.3, 0.0) if worker.startswith("c") else (2.5, 1.0)
            field = ndimage.gaussian_filter(rng.normal(size=truth.shape), 3.0)
            painted = signed - bias + field * jitter / field.std() < 0
            answers.append((worker, 1.0, [{"label": "a", "rle": rle(painted.astype(np.uint8))}]))
        truths.append(truth)
        crowds.append(answers)
    return truths, crowds, [(100, 80)] * images


def test_the_model_learns_who_errs_on_the_edge_and_who_does_not() -> None:
    """Shaky painters err on the edge only: the band model sees them as unreliable there and
    as reliable as the careful deep inside; the consensus keeps to the truth's edge."""
    truths, crowds, shapes = _shaky_crowd(40, seed=3)
    model = mask_model(crowds, shapes)
    careful, shaky = model.worker("c1"), model.worker("s1")
    assert careful.edge_sensitivity[0] > shaky.edge_sensitivity[0] + 0.1
    assert careful.edge_sensitivity[1] > shaky.edge_sensitivity[1] + 0.05
    assert min(shaky.edge_sensitivity[-1], careful.edge_sensitivity[-1]) > 0.99  # deep inside
    assert model.crowd.edge_sensitivity[0] < model.crowd.edge_sensitivity[-1]
    merged = merge_masks_batch(crowds, shapes, model=model)
    iou = [
        mask_iou([rle(t.astype(np.uint8))], [objs[0].to_item()["rle"]])[0, 0]
        for t, objs in zip(truths, merged, strict=True)
    ]
    assert np.mean(iou) > 0.98


def test_a_model_stored_without_edge_rates_still_merges() -> None:
    _, crowds, shapes = _shaky_crowd(10, seed=4)
    model = mask_model(crowds, shapes)
    older = type(model)(
        {w: r._replace(edge_sensitivity=(), edge_specificity=()) for w, r in model.workers.items()},
        model.crowd._replace(edge_sensitivity=(), edge_specificity=()),
        model.objects,
        model.n_labels,
    )
    merged = merge_masks_batch(crowds, shapes, model=older)
    assert all(len(objs) == 1 for objs in merged)


# --- Matching thin objects at the crowd's edge tolerance ----------------------------------------


def _stroke(width: int, height: int, y: float, across: float, x0: int = 10, x1: int = 90):
    """A horizontal stroke ``across`` px thick centred on row ``y``, from ``x0`` to ``x1``."""
    rows = np.arange(height)[:, None] + 0.5
    mask = (np.abs(rows - y) <= across / 2) & (np.arange(width)[None, :] >= x0)
    return (mask & (np.arange(width)[None, :] < x1)).astype(np.uint8)


def _thin_crowd(images: int, seed: int, pairs: bool) -> tuple[list, list, list]:
    """On each 100x60 image a disc of radius 12 and a stroke 3 px thick (``pairs``: two
    strokes 3 px apart), painted by five workers whose hands are off by 0, +1, -1, +1 and -1
    px (``pairs``: half that) down the image, with a light smooth wobble: the disc's masks
    still match by plain IoU and tell the crowd's hand; on the stroke pairs of workers
    overlap at IoU 0.2 (2 px apart) or 0.5 (1 px apart)."""
    from scipy import ndimage

    def signed(mask: np.ndarray) -> np.ndarray:
        return np.where(
            mask, -ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(1 - mask)
        )

    rng = np.random.default_rng(seed)
    truths, crowds = [], []
    for _ in range(images):
        strokes = [_stroke(100, 60, 12.5, 3, 5, 55)]
        if pairs:
            strokes.append(_stroke(100, 60, 18.5, 3, 5, 55))  # 3 px below the first
        answers = []
        for k, offset in enumerate((0.0, 1.0, -1.0, 1.0, -1.0)):
            shift = offset / 2 if pairs else offset
            field = ndimage.gaussian_filter(rng.normal(size=(60, 100)), 3.0)
            disc = ellipse(100, 60, 70, 40 + shift, 12, 12)
            painted = signed(disc) + 0.5 + 0.5 * field / field.std() < 0
            items = [{"label": "a", "rle": rle(painted.astype(np.uint8))}]
            for stroke in strokes:
                ys, _ = np.nonzero(stroke)
                items.append({"label": "a", "rle": rle(_stroke(100, 60, ys.mean() + 0.5 + shift,
                                                               3, 5 + k, 55 - k))})  # fmt: skip
            answers.append((f"w{k}", 1.0, items))
        truths.append(strokes)
        crowds.append(answers)
    return truths, crowds, [(100, 60)] * images


def test_thin_masks_of_one_object_offset_by_a_pixel_or_two_are_one_object() -> None:
    """Five strokes 3 px thick, each 1 or 2 px from the others: by plain IoU the pairs 2 px
    apart fall below 0.5 and the object splits; at the crowd's edge tolerance (measured on
    the discs) they are one object of all five, on the truth."""
    from qa.consensus.masks import _build

    truths, crowds, shapes = _thin_crowd(8, seed=1, pairs=False)
    plain, _ = _build(crowds, shapes, 0.5, 0.0)
    assert len(plain.clusters) >= 3 * 8  # the disc, and the stroke in two or more
    model = mask_model(crowds, shapes)
    assert 1.0 <= model.edge_tolerance < 3.0
    merged = merge_masks_batch(crowds, shapes, model=model)
    for strokes, objects in zip(truths, merged, strict=True):
        assert len(objects) == 2  # the disc and the stroke
        iou = mask_iou([rle(strokes[0])], [o.to_item()["rle"] for o in objects])[0]
        assert iou.max() > 0.6
        assert objects[int(iou.argmax())].num_votes == 5


def test_two_adjacent_thin_objects_stay_two() -> None:
    """Two strokes 3 px thick, 3 px apart, each painted by all five workers within a pixel:
    at the crowd's tolerance the two are still apart, and each keeps its own masks."""
    truths, crowds, shapes = _thin_crowd(8, seed=2, pairs=True)
    model = mask_model(crowds, shapes)
    merged = merge_masks_batch(crowds, shapes, model=model)
    for strokes, objects in zip(truths, merged, strict=True):
        assert len(objects) == 3  # the disc and both strokes
        iou = mask_iou([rle(s) for s in strokes], [o.to_item()["rle"] for o in objects])
        assert (iou.max(axis=1) > 0.6).all()
        assert iou.argmax(axis=1)[0] != iou.argmax(axis=1)[1]


def test_masks_are_compared_at_a_tolerance_of_their_dilation() -> None:
    """Strokes 3 px thick, 80 long: one 1 px and one 2 px below the first, one with 4 px of
    background between. Dilated by the tolerance first, those a pixel or two apart match at
    IoU 0.5 and the one across a gap wider than twice the tolerance does not."""
    from qa.consensus.masks import _Masks, tolerant_iou
    from qa.consensus.objects import Answer

    strokes = [_stroke(100, 60, y, 3) for y in (20.5, 21.5, 22.5, 27.5)]
    image = _Masks([Answer(f"w{k}", 1.0, [{"label": "a", "rle": rle(m)}])
                    for k, m in enumerate(strokes)], 100, 60)  # fmt: skip
    assert image.iou[0, 1] == pytest.approx(2 / 4, abs=0.01)
    assert image.iou[0, 2] == pytest.approx(1 / 5, abs=0.01)
    assert (tolerant_iou(image, 0.0) == image.iou).all()
    one = tolerant_iou(image, 1.0)  # each row band 2 px thicker
    assert one[0, 1] == pytest.approx(4 / 6, abs=0.02)
    assert one[0, 2] == pytest.approx(3 / 7, abs=0.02)
    two = tolerant_iou(image, 2.0)
    assert two[0, 2] == pytest.approx(5 / 9, abs=0.02)
    assert two[0, 3] == 0.0
    assert two[2, 3] < 0.3
    assert two == pytest.approx(two.T)
    assert (np.diag(two) == 1.0).all()


def test_the_edge_tolerance_follows_the_crowd_s_hand() -> None:
    """The dilation is measured on the batch: a crowd whose edges wander by 2.5 px is matched
    more loosely than one of careful painters; with nothing to measure, the typical hand."""
    from qa.consensus.masks import (
        TOLERANCE_PER_EDGE_DISTANCE,
        TYPICAL_EDGE_DISTANCE,
        _build,
        edge_tolerance,
    )

    _, crowds, shapes = _shaky_crowd(20, seed=5)
    steady = mask_model([c[:2] for c in crowds], shapes).edge_tolerance
    shaky = mask_model([c[2:] for c in crowds], shapes).edge_tolerance
    assert steady < 1.2, steady
    assert shaky > steady + 0.6, (steady, shaky)
    # The median of the pairs' edge distances, shrunk toward the typical one by 4 pairs.
    batch, _ = _build([c[:2] for c in crowds], shapes, 0.5, 0.0)
    assert edge_tolerance(batch.polygons, 0.5) == pytest.approx(steady)  # type: ignore[arg-type]
    lone = [[("w0", 1.0, [{"label": "a", "rle": rle(_stroke(100, 60, 20.5, 3))}])]]
    assert mask_model(lone, [(100, 60)]).edge_tolerance == pytest.approx(
        TOLERANCE_PER_EDGE_DISTANCE * TYPICAL_EDGE_DISTANCE
    )


def test_a_model_stored_before_the_tolerance_matches_by_plain_iou() -> None:
    """A model stored before the tolerance was learnt rebuilds with none: its merge clusters
    by plain IoU, as the merge it was learnt for did (and splits the strokes)."""
    _, crowds, shapes = _thin_crowd(4, seed=3, pairs=False)
    model = mask_model(crowds, shapes)
    older = type(model)(model.workers, model.crowd, model.objects, model.n_labels)
    assert older.edge_tolerance == 0.0 < model.edge_tolerance
    stroke = rle(_stroke(100, 60, 12.5, 3, 5, 55))

    def stroke_votes(merged: list) -> list[int]:
        return [
            max([o.num_votes for o in objects if mask_iou([o.mask], [stroke])[0, 0] > 0.3],
                default=0)
            for objects in merged
        ]  # fmt: skip

    assert stroke_votes(merge_masks_batch(crowds, shapes, model=model)) == [5] * 4
    assert max(stroke_votes(merge_masks_batch(crowds, shapes, model=older))) < 5


def test_each_band_s_prior_is_the_share_its_edge_puts_inside() -> None:
    """The banded vote's prior in a band is the share of its pixels inside the edge the bands
    were measured from, not re-estimated from the vote: on the edge each member's word is
    weak, and an estimate fed by a slightly negative vote there drifted with it (each round
    lowering the share, and the next vote with it) until whole bands flipped."""
    from qa.consensus.masks import _with_band_prior, edge_bands

    drawn = np.zeros((40, 40), dtype=bool)
    drawn[10:30, 10:30] = True
    bands = edge_bands(drawn)
    evidence = np.where(bands == 0, -0.1, np.where(drawn, 6.0, -6.0))
    posterior = _with_band_prior(evidence, bands, drawn)
    share = drawn[bands == 0].mean()
    expected = 1.0 / (1.0 + np.exp(-(np.log(share / (1.0 - share)) - 0.1)))
    assert posterior[bands == 0] == pytest.approx(expected)
    assert 0.45 < expected < 0.5
