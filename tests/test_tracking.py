"""Pose tracking on synthetic walkers: stable IDs, occlusion, track buffer, crossings, low scores, OKS."""

import math

import numpy as np
import pytest
import torch

import handlers.pose_tracker.steps as tracking
from handlers.pose_tracker.steps import (
    COCO_SIGMAS,
    SequenceStore,
    TrackerConfig,
    TrackState,
    associate,
    oks,
    predict,
    track,
)

# A standing person's joints in a unit box (x right, y down), COCO order.
SKELETON = torch.tensor(
    [
        (0.50, 0.08),
        (0.54, 0.06),
        (0.46, 0.06),
        (0.60, 0.08),
        (0.40, 0.08),
        (0.70, 0.22),
        (0.30, 0.22),
        (0.80, 0.38),
        (0.20, 0.38),
        (0.85, 0.52),
        (0.15, 0.52),
        (0.62, 0.55),
        (0.38, 0.55),
        (0.63, 0.75),
        (0.37, 0.75),
        (0.64, 0.95),
        (0.36, 0.95),
    ]
)
SIZE = (80.0, 200.0)  # width, height of every person's box


def people(corners, scores, rng, noise=0.5):
    """Boxes, keypoints and scores of people whose boxes start (top left) at ``corners``, jittered by ``noise`` px."""
    corner = torch.tensor(corners, dtype=torch.float32).view(-1, 2)
    size = torch.tensor(SIZE)
    boxes = torch.cat([corner, corner + size], dim=1) + torch.from_numpy(rng.normal(0, noise, (len(corner), 4))).float()
    xy = corner[:, None] + SKELETON * size + torch.from_numpy(rng.normal(0, noise, (len(corner), 17, 2))).float()
    keypoints = torch.cat([xy, torch.full((len(corner), 17, 1), 0.9)], dim=2)
    return boxes, keypoints, torch.tensor(scores, dtype=torch.float32).view(-1)


def run(frames, **config):
    """The IDs ``{person: [id per frame seen]}`` for frames ``{person: (x, y, score)}``, tracked with ``config``."""
    rng = np.random.default_rng(0)
    state, answers = TrackState.empty(), {}
    for frame in frames:
        names = list(frame)
        boxes, keypoints, scores = people([frame[n][:2] for n in names], [frame[n][2] for n in names], rng)
        state, ids = track(state, boxes, keypoints, scores, TrackerConfig(**config))
        for name, track_id in zip(names, ids):
            answers.setdefault(name, []).append(track_id)
    return answers


def walk(start, velocity, frame, score=0.9):
    """Where a person walking from ``start`` at ``velocity`` px a frame is at ``frame``, with their score."""
    return (start[0] + velocity[0] * frame, start[1] + velocity[1] * frame, score)


@pytest.mark.parametrize("min_hits", [1, 2, 3])
def test_people_on_separate_paths_keep_distinct_ids_from_their_min_hits_th_frame(min_hits):
    paths = {"a": ((0, 50), (8, 0)), "b": ((600, 300), (-6, 2)), "c": ((100, 600), (5, -3))}
    order = np.random.default_rng(1)
    frames = []
    for t in range(30):  # a new input order every frame: IDs follow people, not slots
        names = order.permutation(list(paths)).tolist()
        frames.append({n: walk(*paths[n], t) for n in names})
    answers = run(frames, min_hits=min_hits)
    first_ids = {name: i for i, name in enumerate(frames[min_hits - 1])}  # IDs are given in input order
    for name in paths:
        assert answers[name] == [None] * (min_hits - 1) + [first_ids[name]] * (31 - min_hits)


def test_a_person_hidden_for_five_frames_keeps_their_id():
    frames = [
        {"a": walk((0, 50), (6, 0), t), **({} if 10 <= t < 15 else {"b": walk((0, 400), (7, 1), t)})} for t in range(25)
    ]
    answers = run(frames)
    assert answers["a"] == [None] + [0] * 24
    assert answers["b"] == [None] + [1] * 19  # 5 frames hidden, then found where its motion predicts


@pytest.mark.parametrize(("gap", "returning_ids"), [(6, [0] * 5), (7, [None, 2, 2, 2, 2])])
def test_a_track_lives_track_buffer_missed_frames_and_ids_are_never_reused(gap, returning_ids):
    frames = [
        {**({} if 5 <= t < 5 + gap else {"a": walk((0, 50), (6, 0), t)}), "b": walk((0, 400), (5, 0), t)}
        for t in range(10 + gap)
    ]
    answers = run(frames, track_buffer=6)
    assert answers["a"] == [None, 0, 0, 0, 0] + returning_ids
    assert answers["b"] == [None] + [1] * (9 + gap)


def test_a_tentative_track_dies_at_its_first_miss():
    frames = [{"a": walk((0, 50), (5, 0), t)} if t != 1 else {} for t in range(4)]
    assert run(frames)["a"] == [None, None, 0]


def crossing_frames():
    """Two people walking towards each other 12 px a frame, 4 px apart in y: they pass between frames 10 and 11."""
    return [{"a": walk((0, 100), (12, 0), t), "b": walk((252, 104), (-12, 0), t)} for t in range(25)]


def test_motion_keeps_the_ids_of_people_crossing_paths():
    answers = run(crossing_frames())
    assert answers == {"a": [None] + [0] * 24, "b": [None] + [1] * 24}


def test_without_motion_the_crossing_swaps_ids(monkeypatch):
    # The scenario above is a real test of motion: tracks left where last seen swap people.
    monkeypatch.setattr(tracking, "predict", lambda state, steps: (state.boxes, state.keypoints))
    answers = run(crossing_frames())
    assert answers["a"][10:12] == [0, 1]
    assert answers["b"][10:12] == [1, 0]


def test_unsure_people_keep_their_track_in_the_second_stage_and_the_least_sure_are_ignored():
    def score(t):
        return 0.3 if 8 <= t < 12 else 0.05 if 15 <= t < 18 else 0.9

    always_unsure = ((500, 700), (-4, 0))
    frames = [
        {"a": walk((0, 50), (6, 0), t, score(t)), "b": walk((0, 400), (5, 1), t), "c": walk(*always_unsure, t, 0.3)}
        for t in range(22)
    ]
    answers = run(frames)
    assert answers["a"] == [None] + [0] * 14 + [None] * 3 + [0] * 4
    assert answers["b"] == [None] + [1] * 21
    assert answers["c"] == [None] * 22  # never sure enough to start a track


def test_the_same_frame_repeated_gives_the_same_ids():
    boxes, keypoints, scores = people([(0, 0), (200, 0), (100, 300)], [0.9, 0.8, 0.7], np.random.default_rng(0))
    state, answers = TrackState.empty(), []
    for _ in range(10):
        state, ids = track(state, boxes, keypoints, scores)
        answers.append(ids)
    assert answers == [[None, None, None]] + [[0, 1, 2]] * 9
    assert state.ids.tolist() == [0, 1, 2] and state.next_id == 3 and state.frame == 10


def test_oks_is_one_for_the_same_pose_near_zero_far_away_and_ignores_unseen_joints():
    _, poses, _ = people([(0, 0), (200, 0), (100, 300)], [1, 1, 1], np.random.default_rng(0))
    areas = torch.full((3,), SIZE[0] * SIZE[1])
    similarity = oks(poses[:2], poses, areas)
    assert similarity.shape == (2, 3)
    torch.testing.assert_close(similarity, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)

    unseen = poses[:1].clone()
    unseen[0, :5, :2] += 300  # the head far off, but scored at the visibility threshold
    unseen[0, :5, 2] = 0.2
    assert oks(unseen, poses[:1], areas[:1]).item() == pytest.approx(1.0)
    unseen[0, :, 2] = 0.0
    assert oks(unseen, poses[:1], areas[:1]).item() == 0.0

    moved = poses[:1].clone()
    moved[0, 5, 0] += 10  # one of 17 joints moved 10 px
    expected = (16 + math.exp(-100 / (2 * areas[0].item() * (2 * COCO_SIGMAS[5]) ** 2))) / 17
    assert oks(moved, poses[:1], areas[:1]).item() == pytest.approx(expected, rel=1e-5)


def test_predict_moves_each_track_its_steps_at_its_velocity():
    boxes, keypoints, scores = people([(0, 0)], [0.9], np.random.default_rng(0), noise=0)
    state, _ = track(TrackState.empty(), boxes, keypoints, scores)
    state, _ = track(state, boxes + 3, keypoints + torch.tensor([3.0, 3.0, 0.0]), scores)
    predicted_boxes, predicted_keypoints = predict(state, torch.tensor([2]))
    torch.testing.assert_close(predicted_boxes, boxes + 9)
    torch.testing.assert_close(predicted_keypoints, keypoints + torch.tensor([9.0, 9.0, 0.0]))


def test_empty_frames_and_an_empty_state():
    nobody = (torch.zeros(0, 4), torch.zeros(0, 17, 3), torch.zeros(0))
    state, ids = track(TrackState.empty(), *nobody)
    assert ids == [] and len(state.ids) == 0 and state.frame == 1
    assert oks(torch.zeros(0, 17, 3), torch.zeros(2, 17, 3), torch.ones(2)).shape == (0, 2)
    assert [len(pairs) for pairs in associate(torch.zeros(3, 0), 0.3)] == [0, 0]

    rng = np.random.default_rng(0)
    answers = []
    for t in range(6):  # two people, then two empty frames, then the same two again
        frame = people([(5 * t, 0), (300, 5 * t)], [0.9, 0.9], rng) if t not in (2, 3) else nobody
        state, ids = track(state, *frame)
        answers.append(ids)
    assert answers == [[None, None], [0, 1], [], [], [0, 1], [0, 1]]


def one_frame_state(frame_count=1):
    """A state that has seen ``frame_count`` empty frames."""
    state = TrackState.empty()
    for _ in range(frame_count):
        state, _ = track(state, torch.zeros(0, 4), torch.zeros(0, 17, 3), torch.zeros(0))
    return state


def test_a_sequence_store_keeps_state_until_end_then_starts_afresh(tmp_path):
    store = SequenceStore(ttl_s=60, max_sequences=4, markers=tmp_path)
    state, lost = store.open("video", now=0)
    assert (state.frame, lost) == (0, False)
    store.save("video", one_frame_state(3), now=1)
    state, lost = store.open("video", now=2)
    assert (state.frame, lost) == (3, False)
    store.end("video")
    assert len(store) == 0 and not any(tmp_path.iterdir())
    state, lost = store.open("video", now=3)
    assert (state.frame, lost) == (0, False)  # ended on purpose: a new sequence, not a lost one


def test_a_sequence_idle_past_its_ttl_is_freed_and_told_its_state_was_lost(tmp_path):
    store = SequenceStore(ttl_s=10, max_sequences=4, markers=tmp_path)
    store.open("idle", now=0)
    store.save("idle", one_frame_state(2), now=0)
    store.open("busy", now=5)
    store.save("busy", one_frame_state(1), now=5)
    store.open("other", now=11)  # "idle" expires here, "busy" does not
    assert len(store) == 1
    assert store.open("busy", now=12) == (store._states["busy"][0], False)
    state, lost = store.open("idle", now=12)
    assert (state.frame, lost) == (0, True)


def test_beyond_max_sequences_the_least_recently_used_is_dropped(tmp_path):
    store = SequenceStore(ttl_s=60, max_sequences=2, markers=tmp_path)
    for now, name in enumerate(["a", "b", "a", "c"]):  # "b" is now the least recently used
        state, _ = store.open(name, now)
        store.save(name, one_frame_state(state.frame + 1), now)
    assert len(store) == 2
    assert store.open("a", 10)[0].frame == 2 and store.open("c", 10)[0].frame == 1
    state, lost = store.open("b", 10)
    assert (state.frame, lost) == (0, True)


def test_a_new_worker_learns_from_the_markers_which_sequences_lost_their_state(tmp_path):
    before = SequenceStore(ttl_s=60, max_sequences=4, markers=tmp_path)
    before.open("video", 0)
    before.save("video", one_frame_state(5), 0)
    after = SequenceStore(ttl_s=60, max_sequences=4, markers=tmp_path)  # the same folder, as a restarted worker sees it
    state, lost = after.open("video", 1)
    assert (state.frame, lost) == (0, True)
    assert after.open("new", 1)[1] is False


def test_markers_unused_for_their_ttl_are_swept_and_any_text_names_a_sequence(tmp_path):
    store = SequenceStore(ttl_s=1, max_sequences=4, markers=tmp_path, marker_ttl_s=100)
    name = "../../etc/passwd \u2603 \udcff"  # a header can hold anything; file names stay hashes
    store.open(name, now=1_000)
    store.save(name, one_frame_state(1), now=1_000)
    assert [len(p.name) for p in tmp_path.iterdir()] == [64]
    store.open("later", now=1_050)
    assert len(list(tmp_path.iterdir())) == 2  # not yet 100 s unused
    store.open("much later", now=1_200)  # the first two were last used over 100 s before
    assert [p.name for p in tmp_path.iterdir()] == [store._marker("much later").name]
